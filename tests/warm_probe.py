"""Run by tests/test_warm.py as `python -m tests.warm_probe CODE [sleep]` from the warm server: prints
what the process sees, then exits with CODE (or sleeps, to be signalled)."""

import os
import sys
import time

import torch

print(f"argv={sys.argv[1:]}")
print(f"cwd={os.getcwd()}")
print(f"probe={os.environ.get('WARM_PROBE')}; home={os.environ.get('HOME')}")
print(f"lightning_loaded_before={'lightning' in sys.modules}")
print(f"session_leader={os.getsid(0) == os.getpid()}")
print(f"threads={torch.get_num_threads()}")
print("to stderr", file=sys.stderr)
if sys.argv[2:] == ["sleep"]:
    print("sleeping")
    time.sleep(60)
sys.exit(int(sys.argv[1]))

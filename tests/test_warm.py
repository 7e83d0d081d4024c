"""launch/jobs/warm.py: `python -m module args` forked from the warm server, as a local search's trials run."""

from __future__ import annotations

import signal
import sys
import time

import pytest

from launch.jobs.processes import signal_group
from launch.jobs.warm import WarmProcess

pytestmark = pytest.mark.skipif(sys.platform == "win32", reason="POSIX process groups")


def _run(tmp_path, *args, env=None):
    process = WarmProcess("tests.warm_probe", list(args), cwd=tmp_path, env=env or {"WARM_PROBE": "yes"})
    out = process.stdout.read()
    return process.wait(timeout=60), out


@pytest.mark.parametrize("code", [0, 2, 143])
def test_a_warm_process_runs_the_module_in_its_folder_and_environment_and_exits_with_its_code(code, tmp_path):
    exit_code, out = _run(tmp_path, str(code), env={"WARM_PROBE": "a b'c", "OMP_NUM_THREADS": "1"})
    assert exit_code == code
    lines = out.splitlines()
    assert f"argv=['{code}']" in lines and f"cwd={tmp_path}" in lines
    # Only the environment it was given: nothing of this process's (HOME) leaks in.
    assert "probe=a b'c; home=None" in lines
    assert "session_leader=True" in lines and "threads=1" in lines and "to stderr" in lines
    # The server imported Lightning before the fork: the module found it loaded.
    assert "lightning_loaded_before=True" in lines


@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGKILL])
def test_a_signal_to_its_group_ends_it_with_minus_the_signal(sig, tmp_path):
    process = WarmProcess("tests.warm_probe", ["0", "sleep"], cwd=tmp_path, env={})
    for line in process.stdout:
        if line.strip() == "sleeping":
            break
    started = time.monotonic()
    signal_group(process, sig)
    assert process.wait(timeout=30) == -sig and time.monotonic() - started < 10
    assert process.poll() == -sig

"""Stopping the processes a launcher started, the way SageMaker stops a job's hosts: SIGTERM to
each process group, SIGKILL to what is still running after a grace period."""

from __future__ import annotations

import os
import signal
import subprocess
import time

STOP_GRACE_S = 10.0


def signal_group(process: subprocess.Popen, sig: int) -> None:
    """Send `sig` to the process group `process` leads; one that has already ended is left alone."""
    try:
        os.killpg(process.pid, sig)
    except ProcessLookupError:
        pass


def stop_groups(processes: list[subprocess.Popen], grace_s: float = STOP_GRACE_S, poll_s: float = 0.1) -> None:
    """SIGTERM each running process's group, then SIGKILL what is left after `grace_s`."""
    running = [p for p in processes if p.poll() is None]
    for sig in (signal.SIGTERM, signal.SIGKILL):
        for process in running:
            signal_group(process, sig)
        deadline = time.monotonic() + grace_s
        while time.monotonic() < deadline and any(p.poll() is None for p in running):
            time.sleep(poll_s)
        running = [p for p in running if p.poll() is None]
        if not running:
            return

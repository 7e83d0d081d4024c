"""The processes a launcher starts: an emulated host run and supervised (its output tagged on
stderr and kept in its log), a stop request from SIGTERM or Ctrl-C, and stopping the way SageMaker
stops a job's hosts: SIGTERM to each process group, SIGKILL to what is still running after a grace
period."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import threading
import time
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path

from titanic_lightning.errors import Terminated, one_line
from titanic_lightning.sagemaker_facts import FAILURE_REASON_LIMIT

STOP_GRACE_S = 10.0
POLL_S = 0.2


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


@dataclass
class Host:
    name: str
    dir: Path
    command: list[str]
    env: dict[str, str]
    log: Path
    process: subprocess.Popen | None = None
    install_seconds: float | None = None
    exit_code: int | None = None
    stopped: bool = False
    threads: list[threading.Thread] = field(default_factory=list)

    @property
    def failure_file(self) -> Path:
        return self.dir / "output" / "failure"

    def failure_reason(self) -> str | None:
        try:
            text = self.failure_file.read_text(errors="replace")
        except OSError:
            return None
        return one_line(text)[:FAILURE_REASON_LIMIT] or None


def _pump(host: Host) -> None:
    """Copy a host's output to its log file and to stderr, each line tagged with the host."""
    with host.log.open("a") as log:  # after the requirements' install, when there is one
        for line in host.process.stdout:
            log.write(line)
            log.flush()
            sys.stderr.write(f"[{host.name}] {line}")
            sys.stderr.flush()


def start(host: Host, cwd: Path) -> None:
    host.process = subprocess.Popen(
        host.command, cwd=cwd, env=host.env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
        errors="replace", start_new_session=True,  # its own process group: torchrun's workers stop with it
    )
    thread = threading.Thread(target=_pump, args=(host,), daemon=True)
    thread.start()
    host.threads.append(thread)


def stop_running(items: list, mark) -> None:
    """Stop the running process of each of `items` (hosts, trials; each with a `process`), `mark(item)`
    first: SIGTERM to its process group, SIGKILL to what is left after the grace period."""
    running = [i for i in items if i.process is not None and i.process.poll() is None]
    for item in running:
        mark(item)
    stop_groups([i.process for i in running], STOP_GRACE_S, POLL_S)


def stop_hosts(hosts: list[Host]) -> None:
    stop_running(hosts, lambda h: setattr(h, "stopped", True))


class StopRequest:
    """SIGTERM and SIGINT ask the supervisor to stop the job, the way StopTrainingJob does."""

    def __init__(self):
        self.signal: int | None = None

    @contextmanager
    def installed(self):
        if threading.current_thread() is not threading.main_thread():
            yield self
            return
        previous = {sig: signal.signal(sig, self._handle) for sig in (signal.SIGTERM, signal.SIGINT)}
        try:
            yield self
        finally:
            for sig, handler in previous.items():
                signal.signal(sig, handler)

    def _handle(self, signum, frame):
        self.signal = signum

    def raise_if_requested(self) -> None:
        """End the command as the signal would, before anything has been started."""
        if self.signal == signal.SIGINT:
            raise KeyboardInterrupt
        if self.signal is not None:
            raise Terminated(f"stopped by {signal.Signals(self.signal).name} before the job started")


def supervise(hosts: list[Host], timeout_s: float, stop: StopRequest | None = None,
               every_poll=None) -> tuple[Host | None, bool]:
    """Wait for every host; stop the rest when one fails. Return (first failed host, timed out).

    A stop request stops every host; `every_poll` runs between polls (the checkpoint sync).
    """
    deadline = time.monotonic() + timeout_s
    while True:
        for h in hosts:
            h.exit_code = h.process.poll()
        failed = [h for h in hosts if h.exit_code not in (None, 0)]
        if failed:
            stop_hosts(hosts)
            return failed[0], False
        if all(h.exit_code == 0 for h in hosts):
            return None, False
        if time.monotonic() > deadline:
            stop_hosts(hosts)
            return None, True
        if stop is not None and stop.signal is not None:
            stop_hosts(hosts)
            return None, False
        if every_poll is not None:
            every_poll()
        time.sleep(POLL_S)

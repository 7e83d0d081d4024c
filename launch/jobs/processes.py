"""The processes a launcher starts and how they are stopped, the way SageMaker stops a job's hosts:
SIGTERM to each process group, SIGKILL to what is left after a grace period. A host's processes
are all it started, torchrun's workers in their own sessions included (`launch.jobs.descendants`)."""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import sys
import threading
import time
import uuid
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path

from launch.console import log
from launch.jobs import descendants
from titanic_lightning.errors import Terminated, one_line
from titanic_lightning.sagemaker_facts import FAILURE_REASON_LIMIT

STOP_GRACE_S = 10.0
KILL_WAIT_S = 5.0  # after SIGKILL, how long to wait for the processes to be gone before giving up on them
POLL_S = 0.2


def signal_group(process, sig: int) -> None:
    """Send `sig` to the process group `process` (a Popen, `launch.jobs.warm.WarmProcess` or
    `descendants.Process`) leads, else to it alone; one that has already ended is left alone."""
    with contextlib.suppress(PermissionError):
        try:
            os.killpg(process.pid, sig)
        except ProcessLookupError:  # no group of its own (yet: a warm trial between its fork and its setsid)
            with contextlib.suppress(ProcessLookupError):
                os.kill(process.pid, sig)


def stop_running(items: list, mark) -> None:
    """Stop the running process of each of `items` (trials; each with a `process`), `mark(item)`
    first: SIGTERM to its process group, SIGKILL to what is left after the grace period."""
    alive = [i for i in items if i.process is not None and i.process.poll() is None]
    for item in alive:
        mark(item)
    running = [i.process for i in alive]
    for sig in (signal.SIGTERM, signal.SIGKILL):
        for process in running:
            signal_group(process, sig)
        deadline = time.monotonic() + STOP_GRACE_S
        while time.monotonic() < deadline and any(p.poll() is None for p in running):
            time.sleep(POLL_S)
        running = [p for p in running if p.poll() is None]


@dataclass
class Host:
    name: str
    dir: Path
    command: list[str]
    env: dict[str, str] | None
    log: Path
    process: subprocess.Popen | None = None
    install_seconds: float | None = None
    exit_code: int | None = None
    stopped: bool = False
    pump: threading.Thread | None = None  # copies its output to its log and stderr
    mark: str = field(default_factory=lambda: uuid.uuid4().hex)  # in the environment of every process it starts

    @property
    def failure_file(self) -> Path:
        return self.dir / "output" / "failure"

    def failure_reason(self) -> str | None:
        try:
            return one_line(self.failure_file.read_text(errors="replace"))[:FAILURE_REASON_LIMIT] or None
        except OSError:
            return None


def _pump(host: Host) -> None:
    """Copy a host's output to its log file and to stderr, each line tagged with the host."""
    with host.log.open("a", buffering=1) as log:  # after the requirements' install, when there is one
        for line in host.process.stdout:
            log.write(line)
            print(f"[{host.name}] {line}", end="", file=sys.stderr, flush=True)


def start(host: Host, cwd: Path) -> None:
    """Start `host` in a session of its own (Ctrl-C at the terminal reaches the launcher only), its output pumped."""
    env = {**(os.environ if host.env is None else host.env), descendants.MARK_VARIABLE: host.mark}
    host.process = subprocess.Popen(host.command, cwd=cwd, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                                    text=True, errors="replace", start_new_session=True)
    host.pump = threading.Thread(target=_pump, args=(host,), daemon=True)
    host.pump.start()


def stop_hosts(hosts: list[Host], grace_s: float = STOP_GRACE_S) -> None:
    """End every process of `hosts`. A running host's group gets SIGTERM, as does each of its processes whose
    parent is not one of them (a worker whose torchrun ended), and SIGKILL after `grace_s`; what is left of a
    host whose own process has ended is killed at once, as with its container. Returns when all are gone."""
    for h in hosts:
        if h.process is not None and h.process.poll() is None:
            h.stopped = True
    termed: set = set()  # the hosts' processes, and the (pid, start) of the others, once sent SIGTERM
    seen: set[descendants.Process] = set()
    deadline = time.monotonic() + grace_s
    while True:
        found = descendants.marked(h.mark for h in hosts)
        left = False
        for h in hosts:
            running = h.process is not None and h.process.poll() is None
            own = [p for p in found[h.mark] if h.process is None or p.pid != h.process.pid]
            seen.update(own)
            left = left or running or bool(own)
            if running and time.monotonic() < deadline:
                if h.process not in termed:
                    signal_group(h.process, signal.SIGTERM)
                    termed.add(h.process)
                inside = {p.pid for p in found[h.mark]}
                for p in own:
                    if p.ppid not in inside and (p.pid, p.start) not in termed:
                        signal_group(p, signal.SIGTERM)
                        termed.add((p.pid, p.start))
            else:
                if running:
                    signal_group(h.process, signal.SIGKILL)
                for p in own:
                    signal_group(p, signal.SIGKILL)
        if not left:
            break
        if time.monotonic() > deadline + KILL_WAIT_S:
            log(f"warning: processes of the job still there {KILL_WAIT_S:g} s after SIGKILL: "
                f"{' '.join(str(p.pid) for ps in found.values() for p in ps)}")
            break
        time.sleep(POLL_S)
    descendants.reap(seen)


@contextmanager
def held(hosts: list[Host]):
    """While the block runs, an orphan of the hosts is this process's child; however it ends, the hosts are stopped."""
    with descendants.adopting_orphans():
        try:
            yield
        finally:
            stop_hosts(hosts)


@dataclass
class StopRequest:
    """SIGTERM and SIGINT ask the supervisor to stop the job, the way StopTrainingJob does."""

    signal: int | None = None

    @contextmanager
    def installed(self):
        main = threading.current_thread() is threading.main_thread()  # only the main thread may set handlers
        previous = {sig: signal.signal(sig, self._handle) for sig in (signal.SIGTERM, signal.SIGINT)} if main else {}
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


def supervise(hosts: list[Host], timeout_s: float, stop: StopRequest | None = None, each_second=None) -> tuple[Host | None, bool]:
    """Wait for every host; stop them all when one fails, at `timeout_s` or on a stop request.
    Return (first failed host, timed out). `each_second` runs once a second meanwhile (the checkpoint sync)."""
    deadline, next_call = time.monotonic() + timeout_s, 0.0
    while True:
        for h in hosts:
            h.exit_code = h.process.poll()
        failed = next((h for h in hosts if h.exit_code not in (None, 0)), None)
        if failed is None and all(h.exit_code == 0 for h in hosts):
            return None, False
        timed_out = failed is None and time.monotonic() > deadline
        if failed is not None or timed_out or (stop is not None and stop.signal is not None):
            stop_hosts(hosts)
            return failed, timed_out
        if each_second is not None and time.monotonic() >= next_call:
            each_second()
            next_call = time.monotonic() + 1.0
        time.sleep(POLL_S)

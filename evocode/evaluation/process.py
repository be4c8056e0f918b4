"""One isolated process: the limits it runs under, how it is started cold, and how it is stopped.

Shared by the cold runner (a fresh `python candidate.py` per candidate) and
the fork server (a fresh fork per candidate): both put the candidate in its
own session and process group, under the same resource limits, dying with
the process that started it, and both kill its whole group when it ends.
"""

from __future__ import annotations

import ctypes
import os
import resource
import signal
import subprocess
import sys
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

from evocode.evaluation.sandbox import Confinement, SandboxError

_PR_SET_PDEATHSIG = 1
_SANDBOX_FAILED = 126


@dataclass(frozen=True)
class Limits:
    """What one candidate process may use. CPU seconds are a backstop; the wall clock is the real limit."""

    timeout_s: float = 600.0
    memory_mb: int = 8192
    max_processes: int = 4096
    file_size_mb: int = 256
    threads: int = 1
    log_tail_bytes: int = 16_384
    # Landlock the candidate (evocode.evaluation.sandbox); where Landlock is missing the record says so.
    sandbox: bool = True

    @property
    def cpu_seconds(self) -> int:
        return int(self.timeout_s * (self.threads + 1)) + 60


class DriverGone(RuntimeError):
    """The driver that asked for this evaluation died; nobody will read its result."""


# Asked about once a second while a candidate runs: True once nobody will read its result.
DriverWatch = Callable[[], bool]
# Asked about once a second while a candidate runs: the seconds it would need, once it cannot finish in time.
Overrun = Callable[[], "float | None"]


def raise_if_gone(driver_gone: DriverWatch) -> None:
    """DriverGone once the driver is: asked before a candidate (or a scorer) starts, since a worker that has not yet
    noticed would otherwise start one that nobody reads and that lives until its next look, and while one runs."""
    if driver_gone():
        raise DriverGone("the driver that asked for this evaluation is gone")


def parent_watch(driver_pid: int | None) -> DriverWatch:
    """The watch of a worker process that its driver started: the worker is re-parented when the driver dies."""
    in_worker = driver_pid is not None and driver_pid != os.getpid()
    return lambda: in_worker and os.getppid() != driver_pid


@dataclass(frozen=True)
class ProcessRun:
    returncode: int
    timed_out: bool
    log_tail: str
    sandbox: str = "off"  # "landlock ABI N", "none: <why Landlock is missing>", or "off" when not asked for
    # The feeder's report (evocode.evaluation.feeder.Ledger.report) for a candidate; None for the scorer.
    served: dict | None = None
    # Set when the candidate was stopped before its limit: the seconds it would have needed at its pace.
    projected_s: float | None = None


def run_isolated(
    argv: list[str], cwd: str, env: dict[str, str], limits: Limits, driver_gone: DriverWatch = lambda: False,
    confinement: Confinement | None = None, fds: dict[str, int] | None = None, overrun: Overrun = lambda: None,
) -> ProcessRun:
    """Run argv in its own process group under limits (and confined, when given one); kill the whole group when it ends or times out.

    fds: descriptors the program inherits, by the environment variable that names each.
    overrun: asked about once a second; a number (the seconds the program would need) stops it as a timeout now.
    """
    fds = fds or {}
    raise_if_gone(driver_gone)
    proc = subprocess.Popen(
        argv,
        cwd=cwd,
        env={**env, **{var: str(fd) for var, fd in fds.items()}},
        pass_fds=tuple(fds.values()),
        stdin=subprocess.DEVNULL,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        start_new_session=True,
        preexec_fn=child_limits(limits, cuda_possible=cuda_possible(env), confinement=confinement),
    )
    tail = _TailReader(proc.stdout, limits.log_tail_bytes)
    try:
        timed_out, projected = _wait(proc, limits.timeout_s, driver_gone, overrun)
    finally:
        # Also reaps what the program left running: children sleeping forever, a hung process.
        kill_group(proc.pid)
        proc.wait()
        tail.join()
    return ProcessRun(proc.returncode, timed_out, tail.text(), confinement.state if confinement else "off", projected_s=projected)


def _wait(proc: subprocess.Popen, timeout_s: float, driver_gone: DriverWatch, overrun: Overrun) -> tuple[bool, float | None]:
    """Wait for the program: (whether it ran out of time, the seconds it would have needed when stopped early);
    DriverGone when the driver died meanwhile."""
    deadline = time.monotonic() + timeout_s
    while (left := deadline - time.monotonic()) > 0:
        raise_if_gone(driver_gone)
        if (projected := overrun()) is not None:
            return True, projected
        try:
            proc.wait(timeout=min(1.0, left))
            return False, None
        except subprocess.TimeoutExpired:
            pass
    return True, None


def cuda_possible(env: dict[str, str]) -> bool:
    device = env.get("EVOCODE_DEVICE", "auto")
    return device.startswith("cuda") or (device == "auto" and Path("/dev/nvidiactl").exists())


def child_limits(limits: Limits, cuda_possible: bool, confinement: Confinement | None = None):
    """Runs in the child between fork and exec; must stay tiny and must not allocate much."""
    memory = limits.memory_mb * 2**20
    file_size = limits.file_size_mb * 2**20
    # Looked up before the fork: loading a library in the child is unsafe when the parent has threads.
    prctl = ctypes.CDLL(None).prctl if sys.platform.startswith("linux") else None

    def apply() -> None:
        if prctl is not None:
            # The candidate dies with the worker that started it, so a killed worker leaves nothing running.
            prctl(_PR_SET_PDEATHSIG, signal.SIGKILL)
        if not cuda_possible:
            # CUDA reserves far more address space than it uses, so the cap applies to CPU runs only.
            resource.setrlimit(resource.RLIMIT_AS, (memory, memory))
        resource.setrlimit(resource.RLIMIT_CPU, (limits.cpu_seconds, limits.cpu_seconds + 5))
        resource.setrlimit(resource.RLIMIT_FSIZE, (file_size, file_size))
        resource.setrlimit(resource.RLIMIT_NPROC, (limits.max_processes, limits.max_processes))
        resource.setrlimit(resource.RLIMIT_CORE, (0, 0))
        if confinement is not None:
            # Last: from here on this process and the program it becomes can reach only what the rules allow.
            try:
                confinement.apply()
            except SandboxError as e:
                # Never run unconfined; say why in the log, where the record's reason is read from.
                os.write(2, f"evocode: the sandbox could not be applied: {e}\n".encode())
                os._exit(_SANDBOX_FAILED)

    return apply


def kill_group(pgid: int) -> None:
    try:
        os.killpg(pgid, signal.SIGKILL)
    except (ProcessLookupError, PermissionError):
        pass


class _TailReader:
    """Drains a pipe on a thread, keeping only the last bytes, so megabytes of output never block the child."""

    def __init__(self, stream, keep: int) -> None:
        self.keep = keep
        self.buffer = bytearray()
        self.thread = threading.Thread(target=self._drain, args=(stream,), daemon=True)
        self.thread.start()

    def _drain(self, stream) -> None:
        with stream:
            while chunk := stream.read1(65536):
                self.buffer += chunk
                if len(self.buffer) > 2 * self.keep:
                    del self.buffer[: -self.keep]

    def join(self) -> None:
        self.thread.join(timeout=10)

    def text(self) -> str:
        return bytes(self.buffer[-self.keep :]).decode("utf-8", errors="replace")



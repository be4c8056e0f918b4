"""Warm workers: each worker process keeps a fork server, so a candidate starts in milliseconds.

The worker (a loky process of the local executor, the CLI's own process
for `eval`, a Dask worker's process) starts one fork server per thread count
(the server's OpenMP settings are fixed when it imports torch) and reuses
it for every candidate. A server that dies mid-candidate (the candidate
killed it, or it ran out of memory) is restarted and the candidate is run
once more on the fresh server; if it dies again the candidate is the
culprit and `WorkerLost` says so.

GPUs are found without initializing CUDA in the driver or the server
(`nvidia-smi`, or `CUDA_VISIBLE_DEVICES` when it is set), since a process
that has touched CUDA cannot fork children that use it.
"""

from __future__ import annotations

import json
import os
import select
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import evocode
from evocode.evaluation.process import DriverGone, DriverWatch, Limits, ProcessRun, kill_group, raise_if_gone

_SERVER_START_S = 120.0


class ServerDied(RuntimeError):
    """The fork server exited while it held a candidate."""


class WorkerLost(RuntimeError):
    """The fork server died twice running the same candidate: the candidate kills its worker."""


class ForkServer:
    """One `python -m evocode.evaluation.forkserver` process and its request pipe."""

    def __init__(self, threads: int) -> None:
        # A file, not a pipe: warnings the server prints over a long run must never fill a pipe and block it.
        self.errors = tempfile.TemporaryFile()
        self.process = subprocess.Popen(
            [sys.executable, "-m", "evocode.evaluation.forkserver"],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=self.errors,
            env=server_env(threads),
        )

    def alive(self) -> bool:
        return self.process.poll() is None

    def run(self, request: dict, limits: Limits, driver_gone: DriverWatch) -> ProcessRun:
        """Run one request (a candidate `script` or a `model` to score) to its end."""
        raise_if_gone(driver_gone)
        request = {**request, "limits": limits.__dict__}
        try:
            self.process.stdin.write(json.dumps(request).encode() + b"\n")
            self.process.stdin.flush()
        except BrokenPipeError:
            self._stop(None)
            raise ServerDied(self._last_words()) from None
        # The server may still be importing torch: the candidate's clock starts at its pid.
        pid = self._reply(_SERVER_START_S, driver_gone, child=None)["pid"]
        done = self._reply(limits.timeout_s + 30.0, driver_gone, child=pid)
        return ProcessRun(done["returncode"], done["timed_out"], done["log_tail"], done["sandbox"], done["served"],
                          done["projected_s"])

    def _reply(self, within_s: float, driver_gone: DriverWatch, child: int | None) -> dict:
        """The server's next message; watches the driver meanwhile, as the cold runner does."""
        waited = 0.0
        while not select.select([self.process.stdout], [], [], 1.0)[0]:
            waited += 1.0
            if driver_gone():
                self._stop(child)
                raise DriverGone("the driver that asked for this evaluation is gone")
            if waited > within_s:
                self._stop(child)
                raise ServerDied("the fork server stopped answering")
        line = self.process.stdout.readline()
        if not line:
            self._stop(child)
            raise ServerDied(self._last_words())
        return json.loads(line)

    def _stop(self, child: int | None) -> None:
        self.process.kill()
        self.process.wait()
        if child is not None:
            kill_group(child)
            _wait_gone(child)

    def _last_words(self) -> str:
        self.errors.seek(0)
        lines = self.errors.read().decode(errors="replace").strip().splitlines()
        return lines[-1] if lines else f"exit status {self.process.returncode}"


def _wait_gone(pid: int, within_s: float = 10.0) -> None:
    """A killed candidate of a dead server is nobody's child to wait for: watch it leave instead."""
    deadline = time.monotonic() + within_s
    while time.monotonic() < deadline:
        try:
            with open(f"/proc/{pid}/stat") as f:
                if f.read().rsplit(")", 1)[1].split()[0] in ("Z", "X"):
                    return
        except OSError:
            return
        time.sleep(0.01)


def server_env(threads: int) -> dict[str, str]:
    """What is fixed when the server starts: the import path, hashing, the thread pools' size, malloc."""
    package_root = str(Path(evocode.__file__).resolve().parent.parent)
    pythonpath = os.pathsep.join(p for p in (package_root, os.environ.get("PYTHONPATH", "")) if p)
    return {
        **os.environ,
        "PYTHONPATH": pythonpath,
        "PYTHONHASHSEED": "0",
        "OMP_NUM_THREADS": str(threads),
        "MKL_NUM_THREADS": str(threads),
        "MALLOC_ARENA_MAX": "2",
    }


# This process's servers by thread count: a cache of live processes, not shared state between workers.
_servers: dict[int, ForkServer] = {}


def run_warm(script: str, cwd: str, result_dir: str, env: dict[str, str], limits: Limits, cuda_possible: bool,
             driver_gone: DriverWatch = lambda: False) -> ProcessRun:
    """Run the script on this process's fork server; a server lost mid-run is replaced and tried once more."""
    request = {"script": script, "cwd": cwd, "result_dir": result_dir, "env": env, "cuda_possible": cuda_possible}
    return _on_server(request, limits, driver_gone)


def score_warm(model: str, cwd: str, env: dict[str, str], limits: Limits, cuda_possible: bool,
               driver_gone: DriverWatch = lambda: False) -> ProcessRun:
    """Score an exported model in a fork of this process's fork server (see evocode.evaluation.scorer)."""
    return _on_server({"model": model, "cwd": cwd, "env": env, "cuda_possible": cuda_possible}, limits, driver_gone)


def _on_server(request: dict, limits: Limits, driver_gone: DriverWatch) -> ProcessRun:
    reason = ""
    for _ in range(2):
        server = _servers.get(limits.threads)
        if server is None or not server.alive():
            server = _servers[limits.threads] = ForkServer(limits.threads)
        try:
            return server.run(request, limits, driver_gone)
        except ServerDied as e:
            reason = str(e)
            del _servers[limits.threads]
    raise WorkerLost(f"killed its evaluation worker (the fork server, twice): {reason}")


def detect_gpus() -> tuple[str, ...]:
    """The GPUs this machine offers, by the ids `CUDA_VISIBLE_DEVICES` takes, without initializing CUDA."""
    visible = os.environ.get("CUDA_VISIBLE_DEVICES")
    if visible is not None:
        return tuple(d.strip() for d in visible.split(",") if d.strip() and d.strip() != "-1")
    if shutil.which("nvidia-smi") is None:
        return ()
    try:
        listed = subprocess.run(["nvidia-smi", "--query-gpu=index", "--format=csv,noheader"],
                                capture_output=True, text=True, timeout=30)
    except (OSError, subprocess.SubprocessError):
        return ()
    return tuple(line.strip() for line in listed.stdout.splitlines() if line.strip()) if listed.returncode == 0 else ()

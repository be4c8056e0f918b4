"""One candidate program in, one result record out, whatever the program does.

`evaluate` is a pure, picklable function so that any executor (joblib
workers here, cluster workers later) can run it. The program runs in its own
process and process group, in a fresh temporary directory, under resource
limits and a wall-clock timeout; a crash, hang, fork or memory blow-up ends
as a status in the record, never as an exception in the driver. The score
comes from the harness inside the candidate (`harness.finish`), which writes
its record to a file only the runner reads; the runner cross-checks it.
"""

from __future__ import annotations

import ctypes
import json
import math
import os
import re
import resource
import signal
import subprocess
import sys
import tempfile
import threading
import time
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path

import evocode
from evocode.data import corpus_of
from evocode.evaluation.sandbox import Confinement, SandboxError, candidate_confinement
from evocode.spec import RESULT_VAR, SEED_VAR, THREADS_VAR, EvalSpec

_HARNESS_STATUSES = ("ok", "nan", "integrity")
_OOM_SIGNS = re.compile(r"MemoryError|can't allocate memory|Cannot allocate memory|out of memory|OutOfMemoryError")
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
    # Landlock the candidate (evocode.evaluation.sandbox): off until the worker of issue #9 uses it by default.
    sandbox: bool = False

    @property
    def cpu_seconds(self) -> int:
        return int(self.timeout_s * (self.threads + 1)) + 60


@dataclass(frozen=True)
class EvalResult:
    status: str
    reason: str = ""
    val_bpb: float | None = None
    tokens: int = 0
    budget: int = 0
    train_seconds: float = 0.0
    eval_seconds: float = 0.0
    wall_seconds: float = 0.0
    peak_memory_mb: float = 0.0
    num_params: int = 0
    seed: int = 0
    corpus: str = ""
    device: str = ""
    violations: tuple[str, ...] = ()
    # "landlock ABI N", "none: <why Landlock is missing>", or "off" when not asked for.
    sandbox: str = ""
    log_tail: str = field(default="", repr=False)

    def as_dict(self) -> dict:
        return {**asdict(self), "violations": list(self.violations)}

    @classmethod
    def from_dict(cls, d: dict) -> "EvalResult":
        return cls(**{**d, "violations": tuple(d.get("violations", ()))})


class DriverGone(RuntimeError):
    """The driver that asked for this evaluation died; nobody will read its result."""


def evaluate(
    source: str, spec: EvalSpec, seed: int, limits: Limits = Limits(), driver_pid: int | None = None,
    env: dict[str, str] | None = None,
) -> EvalResult:
    """Train and score `source` under `spec` with evaluation seed `seed`.

    driver_pid: when this runs in a worker process started by that driver,
    the candidate is stopped (and DriverGone raised) as soon as the driver is
    gone, so a killed driver leaves nothing training for nobody.
    env: variables the candidate sees on top of the runner's own (its GPU).
    """
    started = time.perf_counter()
    corpus = corpus_of(spec.corpus_dir)
    common = {"budget": spec.budget, "seed": seed, "corpus": corpus.fingerprint}
    try:
        compile(source, "candidate.py", "exec")
    except (SyntaxError, ValueError) as e:
        return EvalResult(status="invalid", reason=f"{type(e).__name__}: {e}", **common)
    # The record goes outside the program's working directory, to a path only the harness is told.
    with tempfile.TemporaryDirectory(prefix="evocode-") as workdir, tempfile.TemporaryDirectory(prefix="evocode-result-") as outdir:
        script = Path(workdir) / "candidate.py"
        script.write_text(source)
        result_path = Path(outdir) / "result.json"
        # The candidate is told the prepared corpus, never left to find (or build) one itself.
        told = replace(spec, corpus_dir=str(corpus.directory))
        child_env = {**candidate_env(told, seed, result_path, limits, workdir), **(env or {})}
        confinement = candidate_confinement(workdir, outdir, corpus, _cuda_possible(child_env)) if limits.sandbox else None
        run = run_isolated([sys.executable, str(script)], workdir, child_env, limits, driver_pid, confinement)
        record = _read_record(result_path)
    status, reason = classify(run, record, corpus.fingerprint, spec.budget, limits)
    measured = _measurements(record) if record else {}
    return EvalResult(
        status=status,
        reason=reason,
        wall_seconds=time.perf_counter() - started,
        sandbox=confinement.state if confinement else "off",
        log_tail=run.log_tail,
        **{**common, **measured, "val_bpb": measured.get("val_bpb") if status == "ok" else None},
    )


def candidate_env(spec: EvalSpec, seed: int, result_path: Path, limits: Limits, workdir: str) -> dict[str, str]:
    package_root = str(Path(evocode.__file__).resolve().parent.parent)
    pythonpath = os.pathsep.join(p for p in (package_root, os.environ.get("PYTHONPATH", "")) if p)
    threads = str(limits.threads)
    return {
        **os.environ,
        **spec.to_env(),
        SEED_VAR: str(seed),
        RESULT_VAR: str(result_path),
        THREADS_VAR: threads,
        "OMP_NUM_THREADS": threads,
        "MKL_NUM_THREADS": threads,
        "PYTHONPATH": pythonpath,
        "PYTHONHASHSEED": "0",
        "PYTHONUNBUFFERED": "1",
        # glibc's per-thread malloc arenas reserve address space that the memory cap would count.
        "MALLOC_ARENA_MAX": "2",
        "TMPDIR": workdir,
    }


@dataclass(frozen=True)
class ProcessRun:
    returncode: int
    timed_out: bool
    log_tail: str


def run_isolated(
    argv: list[str], cwd: str, env: dict[str, str], limits: Limits, driver_pid: int | None = None,
    confinement: Confinement | None = None,
) -> ProcessRun:
    """Run argv in its own process group under limits (and confined, when given one); kill the whole group when it ends or times out."""
    proc = subprocess.Popen(
        argv,
        cwd=cwd,
        env=env,
        stdin=subprocess.DEVNULL,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        start_new_session=True,
        preexec_fn=_child_limits(limits, cuda_possible=_cuda_possible(env), confinement=confinement),
    )
    tail = _TailReader(proc.stdout, limits.log_tail_bytes)
    try:
        timed_out = _wait(proc, limits.timeout_s, driver_pid)
    finally:
        # Also reaps what the program left running: children sleeping forever, a hung process.
        _kill_group(proc.pid)
        proc.wait()
        tail.join()
    return ProcessRun(proc.returncode, timed_out, tail.text())


def _wait(proc: subprocess.Popen, timeout_s: float, driver_pid: int | None) -> bool:
    """Wait for the program; True when it ran out of time, DriverGone when the driver died meanwhile."""
    in_worker = driver_pid is not None and driver_pid != os.getpid()
    deadline = time.monotonic() + timeout_s
    while (left := deadline - time.monotonic()) > 0:
        # A worker is the driver's child until the driver dies and the worker is re-parented.
        if in_worker and os.getppid() != driver_pid:
            raise DriverGone(f"the driver (pid {driver_pid}) is gone")
        try:
            proc.wait(timeout=min(1.0, left))
            return False
        except subprocess.TimeoutExpired:
            pass
    return True


def _cuda_possible(env: dict[str, str]) -> bool:
    device = env.get("EVOCODE_DEVICE", "auto")
    return device.startswith("cuda") or (device == "auto" and Path("/dev/nvidiactl").exists())


def _child_limits(limits: Limits, cuda_possible: bool, confinement: Confinement | None = None):
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


def _kill_group(pgid: int) -> None:
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


def _read_record(path: Path) -> dict | None:
    try:
        record = json.loads(path.read_text())
    except (OSError, ValueError):
        return None
    return record if isinstance(record, dict) else None


def classify(run: ProcessRun, record: dict | None, fingerprint: str, budget: int, limits: Limits) -> tuple[str, str]:
    """The status and a one-line reason, from what the process did and what the harness recorded."""
    if record is not None:
        return _judge_record(record, fingerprint, budget)
    if run.timed_out:
        return "timeout", f"killed after the {limits.timeout_s:g} s wall-clock limit"
    if run.returncode == -signal.SIGXCPU:
        return "timeout", f"killed at the {limits.cpu_seconds} s CPU-time limit"
    if _OOM_SIGNS.search(run.log_tail) or run.returncode == -signal.SIGKILL:
        return "oom", f"ran out of memory (limit {limits.memory_mb} MiB): {last_error(run.log_tail) or 'killed'}"
    if run.returncode == 0:
        return "crash", "exited without calling harness.finish(model)"
    if run.returncode < 0:
        return "crash", f"killed by {signal.Signals(-run.returncode).name}"
    return "crash", last_error(run.log_tail) or f"exited with status {run.returncode}"


def _judge_record(record: dict, fingerprint: str, budget: int) -> tuple[str, str]:
    status = record.get("status")
    if status not in _HARNESS_STATUSES:
        return "crash", f"the harness record has no valid status ({status!r})"
    if record.get("corpus") != fingerprint or record.get("budget") != budget:
        return "integrity", "the result record does not match the corpus or budget this run gave the candidate"
    if not isinstance(record.get("tokens"), int) or record["tokens"] > budget:
        return "integrity", f"trained on {record.get('tokens')} tokens, more than the budget of {budget}"
    if status == "integrity":
        return status, "; ".join(record.get("violations") or ["integrity check failed"])
    val_bpb = record.get("val_bpb")
    if status == "nan" or not isinstance(val_bpb, (int, float)) or not math.isfinite(val_bpb):
        return "nan", "the validation loss is not finite (training diverged)"
    return "ok", ""


def _measurements(record: dict) -> dict:
    keys = ("val_bpb", "tokens", "train_seconds", "eval_seconds", "peak_memory_mb", "num_params", "device")
    found = {k: record[k] for k in keys if k in record}
    found["violations"] = tuple(record.get("violations") or ())
    return found


def last_error(log: str) -> str:
    """The exception line of the last traceback in a log, or its last line."""
    lines = log.splitlines()
    if "Traceback (most recent call last):" in lines:
        start = len(lines) - lines[::-1].index("Traceback (most recent call last):")
        lines = lines[start:]
        lines = [line for line in lines if line.strip() and not line.startswith(" ")] or lines
    lines = [line.strip() for line in lines if line.strip()]
    return lines[-1][:300] if lines else ""


def format_result(result: EvalResult) -> str:
    """A summary like autoresearch's, one `key: value` per line."""
    rows = [
        ("status", result.status),
        ("val_bpb", "-" if result.val_bpb is None else f"{result.val_bpb:.6f}"),
        ("training_seconds", f"{result.train_seconds:.1f}"),
        ("total_seconds", f"{result.wall_seconds:.1f}"),
        ("peak_memory_mb", f"{result.peak_memory_mb:.1f}"),
        ("num_tokens", f"{result.tokens}/{result.budget}"),
        ("num_params", str(result.num_params)),
        ("seed", str(result.seed)),
        ("corpus", result.corpus),
        ("sandbox", result.sandbox or "-"),
    ]
    if result.reason:
        rows.append(("reason", result.reason))
    return "\n".join(f"{key + ':':<18}{value}" for key, value in rows)

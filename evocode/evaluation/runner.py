"""One candidate program in, one result record out, whatever the program does.

`evaluate` is a pure, picklable function so that any executor (joblib
workers here, cluster workers later) can run it. The program runs in its own
process and process group, in a fresh temporary directory, under resource
limits and a wall-clock timeout; a crash, hang, fork or memory blow-up ends
as a status in the record, never as an exception in the driver. Warm (the
default), the process is a fresh fork of this worker's fork server, which
has imported torch already; cold, it is a new `python candidate.py`. Both
give the same scores. The candidate's harness (`harness.finish`) exports
the trained model and writes a record next to it, in a directory only the
runner reads; the score comes from a scorer process that loads the export
and runs no candidate code (evocode.evaluation.scorer), forked from the same
fork server warm, started as `python -m evocode.evaluation.scorer` cold.
"""

from __future__ import annotations

import json
import math
import os
import re
import signal
import sys
import tempfile
import time
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path

import evocode
from evocode.data import Corpus, CorpusError, corpus_of
from evocode.evaluation.feeder import FeederThread, ledger_for, open_feed
from evocode.evaluation.process import DriverWatch, Limits, ProcessRun, cuda_possible, run_isolated
from evocode.evaluation.scorer import EXPORT_NAME, read_record
from evocode.evaluation.workers import WorkerLost, run_warm, score_warm
from evocode.evaluation.sandbox import candidate_confinement
from evocode.spec import RESULT_VAR, SEED_VAR, THREADS_VAR, EvalSpec

# What the candidate's harness may report: its model exported, not exportable, or its own rules broken.
_HARNESS_STATUSES = ("exported", "export", "integrity")
_OOM_SIGNS = re.compile(r"MemoryError|can't allocate memory|Cannot allocate memory|out of memory|OutOfMemoryError")


@dataclass(frozen=True)
class EvalResult:
    status: str
    reason: str = ""
    val_bpb: float | None = None
    tokens: int = 0
    budget: int = 0
    train_seconds: float = 0.0
    eval_seconds: float = 0.0
    # Exporting the trained model in the candidate's process, for the scorer (0.0 in records from before it was kept).
    export_seconds: float = 0.0
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

    @property
    def scoring_seconds(self) -> float:
        """What trusted scoring costs this evaluation: the export (made only to be scored) and the scorer process."""
        return self.export_seconds + self.eval_seconds

    def as_dict(self) -> dict:
        return {**asdict(self), "violations": list(self.violations)}

    @classmethod
    def from_dict(cls, d: dict) -> "EvalResult":
        return cls(**{**d, "violations": tuple(d.get("violations", ()))})


def evaluate(
    source: str, spec: EvalSpec, seed: int, limits: Limits = Limits(), driver_gone: DriverWatch = lambda: False,
    env: dict[str, str] | None = None, warm: bool = True,
) -> EvalResult:
    """Train and score `source` under `spec` with evaluation seed `seed`.

    driver_gone: asked about once a second while the candidate runs (e.g.
    `parent_watch(driver_pid)` in a worker process that driver started); once
    it says the driver is gone the candidate is stopped and DriverGone
    raised, so a killed driver leaves nothing training for nobody.
    env: variables the candidate sees on top of the runner's own (its GPU).
    warm: fork the candidate from this process's fork server instead of starting Python.
    """
    started = time.perf_counter()
    corpus = corpus_of(spec.corpus_dir)
    if spec.split == "hidden" and corpus.hidden_path is None:
        raise CorpusError(f"{corpus.source} has no hidden test split to score on")
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
        cuda = cuda_possible(child_env)
        try:
            if warm:
                run = run_warm(str(script), workdir, outdir, child_env, limits, cuda, driver_gone)
            else:
                run = _run_cold(str(script), workdir, outdir, child_env, limits, cuda, driver_gone, corpus)
            record = _read_record(result_path)
            status, reason = classify(run, record, corpus.fingerprint, spec.budget, limits)
            scored = None
            if status == "exported":
                scoring = _score(str(Path(outdir) / EXPORT_NAME), outdir, child_env, limits, cuda, driver_gone, warm)
                scored = read_record(scoring.log_tail)
                status, reason = judge_score(scoring, scored, limits)
        except WorkerLost as lost:
            return EvalResult(status="crash", reason=str(lost), wall_seconds=time.perf_counter() - started, **common)
    parts = (_measurements(record) if record else {}), _served(run), (_scored(scored) if scored else {})
    measured = {**parts[0], **parts[1], **parts[2], "violations": tuple(v for part in parts for v in part.get("violations", ()))}
    return EvalResult(
        status=status,
        reason=reason,
        wall_seconds=time.perf_counter() - started,
        sandbox=run.sandbox,
        log_tail=run.log_tail,
        **{**common, **measured, "val_bpb": measured.get("val_bpb") if status == "ok" else None},
    )


def _run_cold(script: str, workdir: str, outdir: str, env: dict[str, str], limits: Limits, cuda: bool,
              driver_gone: DriverWatch, corpus: Corpus) -> ProcessRun:
    """`python candidate.py`, its batches served by a thread of this process (as the fork server serves them warm)."""
    confinement = candidate_confinement(workdir, outdir, corpus, cuda) if limits.sandbox else None
    feeder, feed = open_feed(ledger_for(env))
    serving = FeederThread(feeder)
    try:
        run = run_isolated([sys.executable, script], workdir, env, limits, driver_gone, confinement, feed,
                           overrun=lambda: feeder.ledger.projected_seconds(limits.timeout_s))
    finally:
        for fd in feed.values():
            os.close(fd)
        served = serving.stop()
    return replace(run, served=served)


def _score(model: str, outdir: str, env: dict[str, str], limits: Limits, cuda: bool, driver_gone: DriverWatch,
           warm: bool) -> ProcessRun:
    """Score the export in a process that never runs candidate code; its record is the last line of its log."""
    if warm:
        return score_warm(model, outdir, env, limits, cuda, driver_gone)
    return run_isolated([sys.executable, "-m", "evocode.evaluation.scorer", model], outdir, env, limits, driver_gone)


def judge_score(run: ProcessRun, scored: dict | None, limits: Limits) -> tuple[str, str]:
    """The status and reason from the scorer's record, or from how the scorer ended when it left none."""
    if scored is None:
        status, reason = classify(run, None, "", 0, limits)
        return status, f"while scoring: {reason}"
    status = scored.get("status")
    if status == "integrity":
        return status, "; ".join(scored.get("violations") or ["integrity check failed"])
    if status == "export":
        return status, scored.get("reason") or "the exported model could not be scored"
    val_bpb = scored.get("val_bpb")
    if status != "ok" or not isinstance(val_bpb, (int, float)) or not math.isfinite(val_bpb):
        return "nan", "the validation loss is not finite (training diverged)"
    return "ok", ""


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


def _read_record(path: Path) -> dict | None:
    try:
        record = json.loads(path.read_text())
    except (OSError, ValueError):
        return None
    return record if isinstance(record, dict) else None


def classify(run: ProcessRun, record: dict | None, fingerprint: str, budget: int, limits: Limits) -> tuple[str, str]:
    """The status and a one-line reason, from what the process did, what its feeder counted and what the harness recorded."""
    if run.served and run.served["violations"]:
        return "integrity", "; ".join(run.served["violations"])
    if record is not None:
        return _judge_record(record, fingerprint, budget)
    if run.timed_out and run.projected_s is not None:
        return "timeout", (f"stopped early: at its pace it would need about {run.projected_s:.0f} s, "
                           f"over the {limits.timeout_s:g} s wall-clock limit")
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
    if record.get("corpus") != fingerprint or record.get("budget") != budget:
        return "integrity", "the result record does not match the corpus or budget this run gave the candidate"
    status = record.get("status")
    if status not in _HARNESS_STATUSES:
        return "crash", f"the harness record has no valid status ({status!r})"
    if status == "integrity" or record.get("violations"):
        return "integrity", "; ".join(record.get("violations") or ["integrity check failed"])
    if status == "export":
        return status, record.get("reason") or "the model cannot be exported with torch.export"
    return "exported", ""


def _measurements(record: dict) -> dict:
    """What the candidate says of its own training: shown, never used to select (the score is the scorer's)."""
    keys = ("train_seconds", "export_seconds", "peak_memory_mb", "num_params", "device")
    found = {k: record[k] for k in keys if k in record}
    found["violations"] = tuple(record.get("violations") or ())
    return found


def _served(run: ProcessRun) -> dict:
    """The tokens the feeder served, counted outside the candidate, and the rules it saw broken."""
    if run.served is None:
        return {}
    return {"tokens": run.served["tokens"], "violations": tuple(run.served["violations"])}


def _scored(scored: dict) -> dict:
    found = {k: scored[k] for k in ("val_bpb", "eval_seconds") if k in scored}
    found["violations"] = tuple(scored.get("violations") or ())
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
        ("scoring_seconds", f"{result.scoring_seconds:.1f}"),
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

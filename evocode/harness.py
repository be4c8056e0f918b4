"""The fixed part of every candidate: data, token accounting and the hand-over of the model.

A training script imports this module and uses only what it offers: the
run's `budget`, `seed`, `device`, `vocab_size` and `context_length`,
`batches()` for training data, and `finish(model)` to be scored. Edits
never touch this file, so nothing a variant changes can change what is
measured.

The score is not computed here. `finish` exports the trained model with
`torch.export` (a graph of aten operators and its weights, no code) and the
runner's scorer (evocode.evaluation.scorer), a process that runs no
candidate code and holds the validation windows this process never gets,
checks it for future-token leaks and cross-row mixing and computes
`val_bpb`. Whatever a script does to this process (replacing torch's
functions, editing this module) changes the graph it hands over at most.
A model `torch.export` cannot capture ends with the status `export`.
"""

from __future__ import annotations

import json
import os
import random
import resource
import subprocess
import sys
import tempfile
import time
from dataclasses import replace
from pathlib import Path
from typing import Iterator

import numpy as np
import torch

from evocode.data import VOCAB_SIZE, corpus_of
from evocode.evaluation.feeder import REFUSED, FeedClient, Ledger
from evocode.evaluation.scorer import EXPORT_NAME, export_shape, first_line, read_record
from evocode.spec import FEED_REPLIES_VAR, FEED_REQUESTS_VAR, RESULT_VAR, SEED_VAR, THREADS_VAR, EvalSpec


class BudgetExhausted(RuntimeError):
    """The script asked for training tokens after its budget was spent."""


def _pick_device(name: str) -> torch.device:
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    return torch.device(name)


_spec = EvalSpec.from_env()
budget: int = _spec.budget
context_length: int = _spec.context_length
vocab_size: int = VOCAB_SIZE
seed: int = int(os.environ.get(SEED_VAR, "0"))
device: torch.device = _pick_device(_spec.device)
_result_path = os.environ.pop(RESULT_VAR, None)

if THREADS_VAR in os.environ:
    torch.set_num_threads(int(os.environ[THREADS_VAR]))
random.seed(seed)
np.random.seed(seed)
torch.manual_seed(seed)

_corpus = corpus_of(_spec.corpus_dir)


def _batch_source() -> FeedClient | Ledger:
    """The runner's feeder, over the pipes it gave this process; run by hand, a ledger of this process's own."""
    requests, replies = os.environ.pop(FEED_REQUESTS_VAR, None), os.environ.pop(FEED_REPLIES_VAR, None)
    if requests is None or replies is None:
        return Ledger(np.memmap(_corpus.train_path, dtype=np.uint8, mode="r"), budget, seed, context_length)
    return FeedClient(int(requests), int(replies))


class _Run:
    """What this process knows of its own run: shown in its summary, never what the runner counts."""

    tokens = 0
    started: float | None = None
    finished = False
    violations: list[str] = []


_source = _batch_source()
_data_dir = os.path.realpath(_corpus.directory) + os.sep


def _guard_data_files(event: str, args: tuple) -> None:
    """Training data comes from batches() only; opening the corpus files is drawing tokens around the ledger."""
    if event == "open" and args and isinstance(args[0], (str, bytes, os.PathLike)):
        path = os.path.abspath(os.fsdecode(args[0]))
        if path.startswith(_data_dir) or os.path.realpath(path).startswith(_data_dir):
            _Run.violations.append(f"opened the harness's data file {path} directly")


# The training split (by hand) is open already; from here on, any open of the corpus is the script's.
sys.addaudithook(_guard_data_files)


def batches(batch_size: int, seq_len: int | None = None) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
    """Random (x, y) windows of the training split, y being x shifted by one, until the budget is spent.

    The last batch may have fewer rows so the budget is used exactly. After
    that the budget is closed: asking for more marks the run as cheating.
    """
    seq_len = context_length if seq_len is None else seq_len
    if batch_size < 1:
        raise ValueError(f"batch_size must be at least 1, got {batch_size}")
    if not 1 <= seq_len <= context_length:
        raise ValueError(f"seq_len must be between 1 and the harness context_length {context_length}, got {seq_len}")
    return _serve(batch_size, seq_len)


def _serve(batch_size: int, seq_len: int) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
    while True:
        rows, windows = _source.draw(batch_size, seq_len)
        if rows == REFUSED:
            raise BudgetExhausted(f"the token budget of {budget} is spent; train with one pass of harness.batches()")
        if rows == 0:
            return
        if _Run.started is None:
            _Run.started = time.perf_counter()
        _Run.tokens += rows * seq_len
        window = np.frombuffer(windows, dtype=np.uint8).reshape(rows, seq_len + 1).astype(np.int64)
        tokens = torch.from_numpy(window).to(device)
        yield tokens[:, :-1], tokens[:, 1:]


def _peak_memory_mb() -> float:
    if device.type == "cuda":
        return torch.cuda.max_memory_allocated(device) / 2**20
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def _record() -> dict:
    """This process's account of its run. The runner takes the token count from its feeder, not from here."""
    return {
        "tokens": _Run.tokens,
        "budget": budget,
        "train_seconds": 0.0 if _Run.started is None else time.perf_counter() - _Run.started,
        "peak_memory_mb": _peak_memory_mb(),
        "seed": seed,
        "device": str(device),
        "context_length": context_length,
        "corpus": _corpus.fingerprint,
        # By hand the ledger is this process's own; under the runner the feeder reports what it saw.
        "violations": _Run.violations + (_source.violations if isinstance(_source, Ledger) else []),
    }


def finish(model: torch.nn.Module) -> dict:
    """Hand the trained model over to be scored: exported as a graph with its weights; call once, after training.

    Under the runner the export goes where only the runner looks and the
    runner's scorer scores it; run by hand, the scorer runs here as a
    separate process and its score is printed.
    """
    if _Run.finished:
        raise RuntimeError("harness.finish() may be called only once")
    _Run.finished = True
    record = _record()
    record["num_params"] = sum(p.numel() for p in model.parameters())
    with tempfile.TemporaryDirectory(prefix="evocode-export-") as scratch:
        path = Path(_result_path).with_name(EXPORT_NAME) if _result_path else Path(scratch) / EXPORT_NAME
        started = time.perf_counter()
        try:
            _export(model, path)
            record.update(status="exported", reason="")
        except Exception as e:
            record.update(status="export", reason=f"the model cannot be exported with torch.export: {type(e).__name__}: {first_line(e)}")
        # The export exists only to be scored: what it costs is counted with scoring, not as training or overhead.
        record["export_seconds"] = time.perf_counter() - started
        if _result_path:
            with open(_result_path, "w") as f:
                json.dump(record, f)
        elif record["violations"]:
            record["status"] = "integrity"
        elif record["status"] == "exported":
            record.update(_score_by_hand(path))
    _print_summary(record)
    return record


def _export(model: torch.nn.Module, path: Path) -> None:
    """The model as an ExportedProgram on the fixed scoring shape, saved to path."""
    rows, length = export_shape(_spec)
    example = torch.randint(0, vocab_size, (rows, length), generator=torch.Generator().manual_seed(0)).to(device)
    model.eval()
    # The scorer drops node metadata unread: recording the source line behind each node costs about 50 ms for nothing.
    torch.fx.config.do_not_emit_stack_traces = True
    torch.export.save(torch.export.export(model, (example,), strict=False), str(path))


def _score_by_hand(path: Path) -> dict:
    """The scorer's record for an export, from `python -m evocode.evaluation.scorer` (never this process)."""
    env = {**os.environ, **replace(_spec, corpus_dir=str(_corpus.directory)).to_env()}
    done = subprocess.run([sys.executable, "-m", "evocode.evaluation.scorer", str(path)],
                          env=env, stdout=subprocess.PIPE, text=True)
    return read_record(done.stdout) or {"status": "crash", "reason": f"the scorer exited with status {done.returncode}"}


def _print_summary(record: dict) -> None:
    # Under the runner the score is not known here: the runner's scorer computes it after this process.
    val_bpb = "-" if record.get("val_bpb") is None else f"{record['val_bpb']:.6f}"
    lines = [
        "---",
        f"status:           {record['status']}",
        f"val_bpb:          {val_bpb}",
        f"training_seconds: {record['train_seconds']:.1f}",
        f"peak_memory_mb:   {record['peak_memory_mb']:.1f}",
        f"num_tokens:       {record['tokens']}",
        f"num_params:       {record['num_params']}",
        f"device:           {record['device']}",
    ]
    lines += [f"reason:           {record['reason']}"] * bool(record.get("reason"))
    lines += [f"integrity:        {v}" for v in record.get("violations", ())]
    print("\n".join(lines), file=sys.stdout, flush=True)

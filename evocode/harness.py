"""The fixed part of every candidate: data, token accounting and the score.

A training script imports this module and uses only what it offers: the
run's `budget`, `seed`, `device`, `vocab_size` and `context_length`,
`batches()` for training data, and `finish(model)` for the score. Edits
never touch this file, so nothing a variant changes can change what is
measured: `finish` scores the trained model with its own cross-entropy on
held-out windows that do not depend on the script, and refuses to score a
model that peeks at future tokens or a script that drew more tokens than
allowed.

What runs in the candidate's process can, in principle, reach into this one;
the checks here close the holes an edited script stumbles into (a flipped
`is_causal`, a duplicated training loop, reading the data files directly).
Scoring an exported model in a process that runs no candidate code is the
planned next step.
"""

from __future__ import annotations

import json
import math
import mmap
import os
import random
import resource
import sys
from pathlib import Path
from typing import Iterator

import numpy as np
import torch

from evocode.data import VOCAB_SIZE, corpus_of
from evocode.spec import RESULT_VAR, SEED_VAR, THREADS_VAR, TRAIN_FD_VAR, VAL_FD_VAR, EvalSpec

from evocode.evaluation.pristine import allclose as _allclose
from evocode.evaluation.pristine import gather as _gather
from evocode.evaluation.pristine import isfinite as _isfinite
from evocode.evaluation.pristine import log_softmax as _log_softmax
from evocode.evaluation.pristine import perf_counter as _perf_counter

EVAL_BATCH = 32
_CAUSALITY_TOLERANCE = 1e-4


class BudgetExhausted(RuntimeError):
    """The script asked for training tokens after its budget was spent."""


class IntegrityError(RuntimeError):
    """The model or the script broke a rule of the measurement."""


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

def _split(fd_var: str, path: Path) -> np.ndarray:
    """A split mapped read-only: from the descriptor the runner opened (the sandbox denies its path), else by path."""
    fd = os.environ.pop(fd_var, None)
    if fd is None:
        return np.memmap(path, dtype=np.uint8, mode="r")
    mapped = mmap.mmap(int(fd), 0, prot=mmap.PROT_READ)
    os.close(int(fd))
    return np.frombuffer(mapped, dtype=np.uint8)


_corpus = corpus_of(_spec.corpus_dir)
_train = _split(TRAIN_FD_VAR, _corpus.train_path)
_val = _split(VAL_FD_VAR, _corpus.val_path if _spec.split == "validation" else _corpus.hidden_path)


class _Ledger:
    """Counts every training token served; the budget closes once it runs out."""

    def __init__(self, budget: int, seed: int) -> None:
        self.budget = budget
        self.served = 0
        self.closed = False
        self.violations: list[str] = []
        self.rng = np.random.default_rng([seed, 0x7EA1])
        self.started: float | None = None
        self.finished = False

    def take(self, rows: int, seq_len: int) -> int:
        """How many rows of the next batch fit; 0 closes the budget."""
        if self.closed:
            self.violations.append(
                f"asked for training tokens after the budget of {self.budget} was spent"
            )
            _write_result(_integrity_record(self))
            raise BudgetExhausted(
                f"the token budget of {self.budget} is spent; train with one pass of harness.batches()"
            )
        rows = min(rows, (self.budget - self.served) // seq_len)
        if rows == 0:
            self.closed = True
        return rows


_ledger = _Ledger(budget, seed)
_data_dir = os.path.realpath(_corpus.directory) + os.sep


def _guard_data_files(event: str, args: tuple) -> None:
    """Training data comes from batches() only; opening the corpus files is drawing tokens around the ledger."""
    if event == "open" and args and isinstance(args[0], (str, bytes, os.PathLike)):
        path = os.path.abspath(os.fsdecode(args[0]))
        if path.startswith(_data_dir) or os.path.realpath(path).startswith(_data_dir):
            _ledger.violations.append(f"opened the harness's data file {path} directly")


# The memmaps above are open already; from here on, any open of the corpus is the script's.
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
    while rows := _ledger.take(batch_size, seq_len):
        if _ledger.started is None:
            _ledger.started = _perf_counter()
        starts = _ledger.rng.integers(0, len(_train) - seq_len - 1, size=rows)
        window = np.stack([_train[s : s + seq_len + 1] for s in starts]).astype(np.int64)
        _ledger.served += rows * seq_len
        tokens = torch.from_numpy(window).to(device)
        yield tokens[:, :-1], tokens[:, 1:]


def _val_windows() -> torch.Tensor:
    """The same evenly spaced validation windows for every candidate and every seed."""
    count = max(1, _spec.eval_tokens // context_length)
    starts = np.linspace(0, len(_val) - context_length - 1, count).astype(np.int64)
    return torch.from_numpy(np.stack([_val[s : s + context_length + 1] for s in starts]).astype(np.int64))


def _logits(model: torch.nn.Module, x: torch.Tensor) -> torch.Tensor:
    out = model(x.to(device))
    if isinstance(out, (tuple, list)) and out:
        out = out[0]
    if not isinstance(out, torch.Tensor):
        raise IntegrityError(f"model(x) must return logits as a tensor, got {type(out).__name__}")
    if tuple(out.shape) != (x.shape[0], x.shape[1], vocab_size):
        raise IntegrityError(
            f"model(x) must return logits of shape {(x.shape[0], x.shape[1], vocab_size)}, got {tuple(out.shape)}"
        )
    return out.float()


def _same(a: torch.Tensor, b: torch.Tensor) -> bool:
    scale = max(1.0, float(a.abs().max()))
    return bool(_allclose(a, b, rtol=_CAUSALITY_TOLERANCE, atol=_CAUSALITY_TOLERANCE * scale))


def check_causality(model: torch.nn.Module, x: torch.Tensor) -> list[str]:
    """Logits at a position may depend only on tokens at or before it, and only on its own row.

    x holds two windows; for each cut point the tokens from the cut on are
    replaced by different ones, and the logits before the cut must not move.
    """
    found = []
    base = _logits(model, x)
    if not bool(_isfinite(base).all()):
        return found  # a diverged model cannot be judged; its validation loss reports it as nan
    length = x.shape[1]
    for cut in sorted({1, length // 2, length - 1}):
        changed = x.clone()
        changed[:, cut:] = (changed[:, cut:] + 1 + torch.arange(length - cut) % 255) % vocab_size
        if not _same(base[:, :cut], _logits(model, changed)[:, :cut]):
            found.append(f"logits before position {cut} change when later tokens change (the model sees the future)")
            break
    alone = torch.cat([_logits(model, x[i : i + 1]) for i in range(x.shape[0])])
    if not _same(base, alone):
        found.append("logits of one sequence depend on other sequences in the batch")
    return found


def _peak_memory_mb() -> float:
    if device.type == "cuda":
        return torch.cuda.max_memory_allocated(device) / 2**20
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def _base_record(ledger: _Ledger) -> dict:
    return {
        "tokens": ledger.served,
        "budget": ledger.budget,
        "train_seconds": 0.0 if ledger.started is None else _perf_counter() - ledger.started,
        "peak_memory_mb": _peak_memory_mb(),
        "seed": seed,
        "device": str(device),
        "context_length": context_length,
        "corpus": _corpus.fingerprint,
    }


def _integrity_record(ledger: _Ledger) -> dict:
    return {**_base_record(ledger), "status": "integrity", "val_bpb": None, "violations": list(ledger.violations)}


def _write_result(record: dict) -> None:
    if _result_path:
        with open(_result_path, "w") as f:
            json.dump(record, f)


def _validation_bpb(model: torch.nn.Module) -> float:
    windows = _val_windows()
    nats, count = 0.0, 0
    for i in range(0, len(windows), EVAL_BATCH):
        chunk = windows[i : i + EVAL_BATCH].to(device)
        logp = _log_softmax(_logits(model, chunk[:, :-1]), dim=-1)
        nats -= float(_gather(logp, -1, chunk[:, 1:, None]).sum())
        count += chunk[:, 1:].numel()
    return nats / count / math.log(2)


def finish(model: torch.nn.Module) -> dict:
    """Score the trained model on held-out bytes, check it, report it; call once, after training."""
    if _ledger.finished:
        raise RuntimeError("harness.finish() may be called only once")
    _ledger.finished = True
    record = _base_record(_ledger)
    record["num_params"] = sum(p.numel() for p in model.parameters())
    eval_started = _perf_counter()
    model.eval()
    with torch.no_grad():
        try:
            violations = _ledger.violations + check_causality(model, _val_windows()[:2, :-1])
            val_bpb = None if violations else _validation_bpb(model)
        except IntegrityError as e:
            violations, val_bpb = [str(e)], None
    if violations:
        record.update(status="integrity", val_bpb=None, violations=violations)
    elif not math.isfinite(val_bpb):
        record.update(status="nan", val_bpb=None, violations=[])
    else:
        record.update(status="ok", val_bpb=val_bpb, violations=[])
    record["eval_seconds"] = _perf_counter() - eval_started
    _write_result(record)
    _print_summary(record)
    return record


def _print_summary(record: dict) -> None:
    val_bpb = "nan" if record["val_bpb"] is None else f"{record['val_bpb']:.6f}"
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
    lines += [f"integrity:        {v}" for v in record["violations"]]
    print("\n".join(lines), file=sys.stdout, flush=True)

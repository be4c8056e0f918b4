"""The command line's values, checked before anything is created or run.

Every option value is checked where argparse reads it (an argparse `type`),
and every combination right after parsing, so bad input ends as one line that
names the option, the value and what to do, with exit status 2, and no run
directory is made for a run that could never start. The types here are meant
for every command, present and future: a command that takes a run directory
uses `existing_run`, one that takes a count uses `positive_int`, and so on.
"""

from __future__ import annotations

import argparse
import math
import re
import shutil
import sqlite3
import tempfile
from pathlib import Path
from typing import Callable

from evocode.data import STDLIB, Corpus

# Python with torch needs about this much address space before a script's first line; less is never a usable limit.
MIN_MEMORY_MB = 1024
# numpy's legacy seeding (np.random.seed, which the harness applies) takes 32-bit seeds.
MAX_SEED = 2**32 - 1
# A text file has no NUL bytes; looking at the first MiB is enough to tell a binary file.
_TEXT_PROBE_BYTES = 2**20
_DEVICE = re.compile(r"auto|cpu|cuda(:\d+)?")
RUNS_ROOT = Path("runs")


class OptionError(ValueError):
    """A value, or a combination of values, that a command cannot use; the message says which and what to do."""


def _integer(low: int, high: int | None, what: str) -> Callable[[str], int]:
    def convert(text: str) -> int:
        try:
            value = int(text)
        except ValueError:
            value = None
        if value is None or value < low or (high is not None and value > high):
            raise argparse.ArgumentTypeError(f"{text!r} is not {what}; pass {_range(low, high)}")
        return value

    return convert


def _range(low: int, high: int | None) -> str:
    return f"a whole number from {low} to {high}" if high is not None else f"a whole number of at least {low}"


positive_int = _integer(1, None, "a positive whole number")
non_negative_int = _integer(0, None, "a whole number of at least 0")
seed_int = _integer(0, MAX_SEED, "a seed")
context_int = _integer(2, None, "a context length")
population_int = _integer(2, None, "a population size")
eta_int = _integer(2, None, "a reduction factor between rungs")
memory_mb = _integer(MIN_MEMORY_MB, None, f"a memory limit in MiB (a candidate needs at least {MIN_MEMORY_MB})")


def _real(accepts: Callable[[float], bool], what: str) -> Callable[[str], float]:
    """A converter to a finite number that `accepts`, whose error names `what` to pass instead."""
    def convert(text: str) -> float:
        try:
            value = float(text)
        except ValueError:
            value = math.nan
        if not (math.isfinite(value) and accepts(value)):
            raise argparse.ArgumentTypeError(f"{text!r} is not {what}")
        return value

    return convert


positive_seconds = _real(lambda v: v > 0, "a number of seconds; pass a positive number such as 600")
time_factor = _real(lambda v: v >= 1, "a multiple of the seed's time; pass a number of at least 1, such as 1.5")
bits_per_byte = _real(lambda v: v >= 0, "a precision in bits per byte; pass 0 or more, such as 0.02")
probability = _real(lambda v: 0.0 <= v <= 1.0, "a probability; pass a number from 0 to 1 such as 0.3")
share = _real(lambda v: v > 0, "a share of the time limit; pass a positive number such as 0.5")


def device(text: str) -> str:
    """auto, cpu, cuda or cuda:N; a CUDA device must exist on this machine (torch is imported only to ask)."""
    if not _DEVICE.fullmatch(text):
        raise argparse.ArgumentTypeError(f"{text!r} is not a device; pass auto, cpu, cuda or cuda:N")
    if text.startswith("cuda"):
        import torch

        count = torch.cuda.device_count() if torch.cuda.is_available() else 0
        index = int(text.partition(":")[2] or 0)
        if index >= count:
            found = f"{count} CUDA device{'s' if count != 1 else ''}"
            raise argparse.ArgumentTypeError(f"{text!r} is not available (this machine has {found}); pass cpu or auto")
    return text


def _readable_file(text: str, what: str) -> Path:
    path = Path(text)
    if not path.exists():
        raise argparse.ArgumentTypeError(f"{text}: no such file; pass the path of {what}")
    if not path.is_file():
        raise argparse.ArgumentTypeError(f"{text} is not a file; pass the path of {what}")
    try:
        with path.open("rb") as f:
            head = f.read(_TEXT_PROBE_BYTES)
    except OSError as e:
        raise argparse.ArgumentTypeError(f"cannot read {text} ({e.strerror}); pass the path of {what}") from None
    if b"\0" in head:
        raise argparse.ArgumentTypeError(f"{text} is not text (it holds binary data); pass the path of {what}")
    return path


def script_file(text: str) -> Path:
    """A readable text file: a training script (whether it parses is the command's question)."""
    path = _readable_file(text, "a training script")
    try:
        path.read_text()
    except (OSError, UnicodeDecodeError) as e:
        raise argparse.ArgumentTypeError(f"{text} is not a UTF-8 Python script ({e}); pass the path of a training script") from None
    return path


def data_file(text: str) -> Path | str:
    """`stdlib`, or a readable text file to train and validate on as an absolute path (a run finds it again from anywhere)."""
    if text == STDLIB:
        return STDLIB
    return _readable_file(text, "a text file (or stdlib)").resolve()


def scheduler_file(text: str) -> Path:
    """The file a Dask scheduler writes its address to, as an absolute path (a resumed run finds it from anywhere)."""
    return _readable_file(text, "the file `dask scheduler --scheduler-file FILE` writes").resolve()


def mutator_item(text: str) -> str:
    """One word of --mutators; a plugin file (`path/file.py:Name`) becomes absolute, so a run finds it from anywhere."""
    where, colon, name = text.rpartition(":")
    if colon and where.endswith(".py"):
        return f"{Path(where).resolve()}:{name}"
    return text


def run_name(text: str) -> str:
    """A plain directory name, so the run lands directly under runs/."""
    if not text or text in (".", "..") or Path(text).name != text or text.startswith("-"):
        raise argparse.ArgumentTypeError(f"{text!r} is not a plain name; pass a name without '/' such as my-run (the run goes to runs/NAME)")
    return text


def new_or_existing_run_dir(text: str) -> Path:
    """A place for a run: a new directory that can be created, an empty one, or one that holds a run to continue."""
    path = Path(text)
    if path.exists() and not path.is_dir():
        raise argparse.ArgumentTypeError(f"{text} is a file, not a directory; pass a new directory or a run directory")
    if path.is_dir():
        if any(path.iterdir()) and not (path / "evocode.db").exists():
            raise argparse.ArgumentTypeError(f"{text} holds other files and no evocode run; pass a new or empty directory")
        return path
    ancestor = next(p for p in path.absolute().parents if p.exists())
    if not ancestor.is_dir():
        raise argparse.ArgumentTypeError(f"{text} lies under the file {ancestor}; pass a directory path")
    try:
        shutil.rmtree(tempfile.mkdtemp(dir=ancestor, prefix=".evocode-probe-"))
    except OSError as e:
        raise argparse.ArgumentTypeError(f"cannot create {text} ({e.strerror} in {ancestor}); pass a writable place") from None
    return path


def existing_run(text: str) -> Path:
    """A directory that holds an evocode run (its store and settings)."""
    path = Path(text)
    if not path.is_dir():
        raise argparse.ArgumentTypeError(f"{text} is not a directory; pass a run directory such as runs/NAME (see `python -m evocode runs`)")
    if not holds_run(path):
        raise argparse.ArgumentTypeError(f"{text} holds no evocode run; pass a run directory such as runs/NAME (see `python -m evocode runs`)")
    return path


def existing_dir(text: str) -> Path:
    path = Path(text)
    if not path.is_dir():
        raise argparse.ArgumentTypeError(f"{text} is not a directory; pass the directory that holds your runs (evolve puts them under runs/)")
    return path


def holds_run(path: Path) -> bool:
    """Whether path/evocode.db is a run store with settings; read-only, so looking never changes it."""
    store = path / "evocode.db"
    if not store.is_file():
        return False
    try:
        with sqlite3.connect(f"{store.absolute().as_uri()}?mode=ro", uri=True) as db:
            return db.execute("SELECT 1 FROM run WHERE key = 'settings'").fetchone() is not None
    except sqlite3.Error:
        return False


def _named(option: str, value, defaults: dict) -> str:
    """`--option value`, marked when the value is the default, since then the user never typed it."""
    return f"--{option} {value}" + (" (the default)" if option in defaults and defaults[option] == value else "")


def check_spec(budget: int, context: int, eval_tokens: int, corpus: Corpus, defaults: dict) -> None:
    """The measurement's options fit each other and the corpus."""
    budget_, context_, eval_ = (_named(o, v, defaults) for o, v in (("budget", budget), ("context", context), ("eval-tokens", eval_tokens)))
    if eval_tokens < context:
        raise OptionError(f"{eval_} is less than one window of {context_}; pass --eval-tokens {context} or more, or a shorter --context")
    if budget < context:
        raise OptionError(f"{budget_} is less than one window of {context_}; pass --budget {context} or more, or a shorter --context")
    shortest = min(corpus.train_bytes, corpus.val_bytes)
    if context >= shortest:
        raise OptionError(f"{context_} is longer than the corpus's {shortest}-byte split ({corpus.source}); pass a shorter --context or a larger --data")


def check_population(population: int, elite: int, tournament: int, defaults: dict) -> None:
    """Elite and tournament fit the population; the message says when a default is the conflicting value."""
    population_, elite_, tournament_ = (_named(o, v, defaults) for o, v in (("population", population), ("elite", elite), ("tournament", tournament)))
    if elite >= population:
        raise OptionError(f"{elite_} must be less than {population_}; pass a smaller --elite or a larger --population")
    if tournament > population:
        raise OptionError(f"{tournament_} is larger than {population_}; pass --tournament {population} or less")


def default_run_dir(name: str) -> Path:
    """runs/NAME, checked like --run-dir: the command line names no option for it, so the message names the path."""
    try:
        return new_or_existing_run_dir(str(RUNS_ROOT / name))
    except argparse.ArgumentTypeError as e:
        raise OptionError(str(e)) from None

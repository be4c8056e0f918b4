"""The bytes every candidate trains and is scored on.

The default corpus is the Python standard library's own sources: every
Python install has them, so the first run needs no download. Text is used as
raw bytes (vocabulary 256) so that no tokenizer choice can move the metric.
The split into train and validation is deterministic and the prepared corpus
is cached by what it was built from; its fingerprint is a hash of its content,
recorded with every result so that scores on different corpora are never
compared.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import sysconfig
import tempfile
from dataclasses import dataclass
from pathlib import Path

VOCAB_SIZE = 256
# One stdlib file in VAL_ONE_IN goes to validation; whole files, so no text
# is half in train and half in validation.
VAL_ONE_IN = 20
# A single data file is split by position instead: its last tenth validates.
VAL_FRACTION = 0.1
_SKIPPED_DIRS = {"site-packages", "dist-packages", "test", "tests", "idle_test", "__pycache__"}


class CorpusError(ValueError):
    """The data the user pointed at cannot be turned into a corpus."""


@dataclass(frozen=True)
class Corpus:
    directory: Path
    fingerprint: str
    source: str
    train_bytes: int
    val_bytes: int

    @property
    def train_path(self) -> Path:
        return self.directory / "train.bin"

    @property
    def val_path(self) -> Path:
        return self.directory / "val.bin"


def cache_root() -> Path:
    return Path(os.environ.get("EVOCODE_CACHE", Path.home() / ".cache" / "evocode"))


def stdlib_sources(root: Path | None = None) -> list[Path]:
    """The standard library's .py files, tests and third-party packages left out, in a stable order."""
    root = Path(root or sysconfig.get_paths()["stdlib"])
    found = []
    for directory, subdirs, files in os.walk(root):
        subdirs[:] = sorted(d for d in subdirs if d not in _SKIPPED_DIRS)
        found += [Path(directory) / f for f in sorted(files) if f.endswith(".py")]
    return found


def _is_validation(relative_name: str) -> bool:
    digest = hashlib.sha256(relative_name.encode()).digest()
    return int.from_bytes(digest[:4], "little") % VAL_ONE_IN == 0


def split_stdlib(root: Path | None = None) -> tuple[bytes, bytes]:
    root = Path(root or sysconfig.get_paths()["stdlib"])
    train, val = [], []
    for path in stdlib_sources(root):
        relative = path.relative_to(root).as_posix()
        (val if _is_validation(relative) else train).append(path.read_bytes())
    return b"\n".join(train), b"\n".join(val)


def split_file(path: Path) -> tuple[bytes, bytes]:
    text = path.read_bytes()
    cut = int(len(text) * (1 - VAL_FRACTION))
    newline = text.rfind(b"\n", 0, cut)
    cut = newline + 1 if newline > 0 else cut
    return text[:cut], text[cut:]


def _source_key(data_file: Path | None) -> tuple[str, str]:
    """A cheap key for what the corpus would be built from (paths, sizes, times), and a label."""
    h = hashlib.sha256()
    if data_file is None:
        root = Path(sysconfig.get_paths()["stdlib"])
        label = f"python-stdlib:{root}"
        for path in stdlib_sources(root):
            st = path.stat()
            h.update(f"{path}\0{st.st_size}\0{st.st_mtime_ns}\n".encode())
    else:
        st = data_file.stat()
        label = f"file:{data_file}"
        h.update(f"{data_file}\0{st.st_size}\0{st.st_mtime_ns}".encode())
    h.update(f"{VAL_ONE_IN}/{VAL_FRACTION}".encode())
    return h.hexdigest()[:16], label


def prepare_corpus(data_file: str | Path | None = None, min_val_bytes: int = 4096) -> Corpus:
    """Build (once) or load the cached corpus for `data_file`, or the stdlib when None."""
    if data_file is not None:
        data_file = Path(data_file).resolve()
        if not data_file.is_file():
            raise CorpusError(f"data file {data_file} does not exist: pass --data a readable text file")
    key, label = _source_key(data_file)
    directory = cache_root() / "corpus" / key
    if not (directory / "meta.json").exists():
        train, val = split_stdlib() if data_file is None else split_file(data_file)
        _write_atomically(directory, train, val, label)
    corpus = load_corpus(directory)
    if corpus.val_bytes < min_val_bytes:
        raise CorpusError(
            f"{label} leaves only {corpus.val_bytes} validation bytes; "
            f"use a text file of at least {int(min_val_bytes / VAL_FRACTION)} bytes"
        )
    return corpus


def _write_atomically(directory: Path, train: bytes, val: bytes, label: str) -> None:
    """Several workers may build the same corpus at once; the first rename wins, the others clean up."""
    directory.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(dir=directory.parent, prefix=".building-"))
    try:
        (staging / "train.bin").write_bytes(train)
        (staging / "val.bin").write_bytes(val)
        fingerprint = hashlib.sha256(train + b"\0" + val).hexdigest()[:16]
        meta = {"fingerprint": fingerprint, "source": label, "train_bytes": len(train), "val_bytes": len(val)}
        (staging / "meta.json").write_text(json.dumps(meta, indent=1))
        try:
            staging.rename(directory)
        except OSError:
            if not (directory / "meta.json").exists():
                raise
    finally:
        shutil.rmtree(staging, ignore_errors=True)


def load_corpus(directory: str | Path) -> Corpus:
    directory = Path(directory)
    try:
        meta = json.loads((directory / "meta.json").read_text())
    except FileNotFoundError:
        raise CorpusError(f"{directory} is not a prepared corpus (no meta.json)") from None
    return Corpus(directory, meta["fingerprint"], meta["source"], meta["train_bytes"], meta["val_bytes"])


def corpus_of(corpus_dir: str | None) -> Corpus:
    """The corpus a measurement names: a prepared directory, or the default one when None."""
    return load_corpus(corpus_dir) if corpus_dir else prepare_corpus()

"""The bytes every candidate trains and is scored on.

The default corpus ships with evocode (`corpora/bible/`: three public-domain
English Bible translations, split by book into train, validation and a hidden
test), so the first run needs no download, and its text is nowhere else on
disk for a candidate to read: the sandbox denies evocode's packaged corpora
and the hidden split. `--data stdlib` is the Python standard library's own
sources (the default before: every Python program can read them, so they
cannot be trusted validation text), `--data FILE` any text file. Text is used
as raw bytes (vocabulary 256) so that no tokenizer choice can move the metric.
The split is deterministic and the prepared corpus is cached by what it was
built from; its fingerprint is a hash of its content, recorded with every
result so that scores on different corpora are never compared.
"""

from __future__ import annotations

import hashlib
import json
import lzma
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
# What --data names instead of a file: the standard library's sources.
STDLIB = "stdlib"
# The packaged default: the xz-compressed splits that corpora/bible/build.py made.
PACKAGED = Path(__file__).resolve().parent / "corpora"
DEFAULT_CORPUS = PACKAGED / "bible"
_DEFAULT_SPLITS = ("train", "validation", "hidden")


class CorpusError(ValueError):
    """The data the user pointed at cannot be turned into a corpus."""


@dataclass(frozen=True)
class Corpus:
    directory: Path
    fingerprint: str
    source: str
    train_bytes: int
    val_bytes: int
    # The hidden test split (the default corpus has one): scored once for the final best, never to select.
    hidden_bytes: int = 0
    hidden_fingerprint: str = ""

    @property
    def train_path(self) -> Path:
        return self.directory / "train.bin"

    @property
    def val_path(self) -> Path:
        return self.directory / "val.bin"

    @property
    def hidden_path(self) -> Path | None:
        """The hidden split's file, which no candidate may read; None when the corpus has none."""
        return self.directory / "hidden.bin" if self.hidden_bytes else None


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


def default_splits(directory: Path = DEFAULT_CORPUS) -> tuple[bytes, bytes, bytes]:
    """The packaged corpus's train, validation and hidden text, decompressed."""
    return tuple(lzma.decompress((directory / f"{name}.txt.xz").read_bytes()) for name in _DEFAULT_SPLITS)


def split_file(path: Path) -> tuple[bytes, bytes]:
    text = path.read_bytes()
    cut = int(len(text) * (1 - VAL_FRACTION))
    newline = text.rfind(b"\n", 0, cut)
    cut = newline + 1 if newline > 0 else cut
    return text[:cut], text[cut:]


def _source_key(source: str | None) -> tuple[str, str]:
    """A cheap key for what the corpus would be built from (paths, sizes, times), and a label."""
    if source is None:
        files, label = [DEFAULT_CORPUS / f"{name}.txt.xz" for name in _DEFAULT_SPLITS], f"evocode-bible:{DEFAULT_CORPUS}"
    elif source == STDLIB:
        root = Path(sysconfig.get_paths()["stdlib"])
        files, label = stdlib_sources(root), f"python-stdlib:{root}"
    else:
        files, label = [Path(source)], f"file:{source}"
    h = hashlib.sha256()
    for path in files:
        st = path.stat()
        h.update(f"{path}\0{st.st_size}\0{st.st_mtime_ns}\n".encode())
    h.update(f"{VAL_ONE_IN}/{VAL_FRACTION}".encode())
    return h.hexdigest()[:16], label


def data_source(data: str | Path | None) -> str | None:
    """What `--data` names, as stored with a run: None (the packaged default), "stdlib", or an absolute file path."""
    if data is None or str(data) == STDLIB:
        return data and STDLIB
    return str(Path(data).resolve())


def prepare_corpus(data: str | Path | None = None, min_val_bytes: int = 4096) -> Corpus:
    """Build (once) or load the cached corpus that `data` names (see `data_source`)."""
    source = data_source(data)
    if source not in (None, STDLIB) and not Path(source).is_file():
        raise CorpusError(f"data file {source} does not exist: pass --data a readable text file")
    key, label = _source_key(source)
    directory = cache_root() / "corpus" / key
    if not (directory / "meta.json").exists():
        _write_atomically(directory, *_splits(source), label=label)
    corpus = load_corpus(directory)
    if corpus.val_bytes < min_val_bytes:
        raise CorpusError(
            f"{label} leaves only {corpus.val_bytes} validation bytes; "
            f"use a text file of at least {int(min_val_bytes / VAL_FRACTION)} bytes"
        )
    return corpus


def _splits(source: str | None) -> tuple[bytes, ...]:
    if source is None:
        return default_splits()
    return split_stdlib() if source == STDLIB else split_file(Path(source))


def _write_atomically(directory: Path, train: bytes, val: bytes, hidden: bytes = b"", *, label: str) -> None:
    """Several workers may build the same corpus at once; the first rename wins, the others clean up."""
    directory.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(dir=directory.parent, prefix=".building-"))
    try:
        (staging / "train.bin").write_bytes(train)
        (staging / "val.bin").write_bytes(val)
        # The hidden split counts in the fingerprint too: results on another hidden text are not comparable.
        fingerprint = hashlib.sha256(train + b"\0" + val + (b"\0" + hidden if hidden else b"")).hexdigest()[:16]
        meta = {"fingerprint": fingerprint, "source": label, "train_bytes": len(train), "val_bytes": len(val)}
        if hidden:
            (staging / "hidden.bin").write_bytes(hidden)
            meta.update(hidden_bytes=len(hidden), hidden_fingerprint=hashlib.sha256(hidden).hexdigest()[:16])
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
    return Corpus(
        directory, meta["fingerprint"], meta["source"], meta["train_bytes"], meta["val_bytes"],
        meta.get("hidden_bytes", 0), meta.get("hidden_fingerprint", ""),
    )


def corpus_of(corpus_dir: str | None) -> Corpus:
    """The corpus a measurement names: a prepared directory, or the default one when None."""
    return load_corpus(corpus_dir) if corpus_dir else prepare_corpus()


def corpus_files(corpus: Corpus) -> dict[str, bytes]:
    """A prepared corpus's files by name: what a machine without this disk needs to rebuild it (`unpack_corpus`)."""
    names = ("meta.json", "train.bin", "val.bin") + (("hidden.bin",) if corpus.hidden_bytes else ())
    return {name: (corpus.directory / name).read_bytes() for name in names}


def shipped_directory(fingerprint: str) -> Path:
    """Where this machine keeps a corpus another machine prepared: named by content, so it is built once."""
    return cache_root() / "corpus" / f"shipped-{fingerprint}"


def unpack_corpus(files: dict[str, bytes], fingerprint: str) -> Corpus:
    """Rebuild (once) a corpus from `corpus_files`, refusing files whose content does not have its fingerprint."""
    directory = shipped_directory(fingerprint)
    if not (directory / "meta.json").exists():
        hidden = files.get("hidden.bin", b"")
        _write_atomically(directory, files["train.bin"], files["val.bin"], hidden, label=json.loads(files["meta.json"])["source"])
    corpus = load_corpus(directory)
    if corpus.fingerprint != fingerprint:
        shutil.rmtree(directory, ignore_errors=True)
        raise CorpusError(f"the corpus received has fingerprint {corpus.fingerprint}, not {fingerprint}: it was damaged on the way")
    return corpus

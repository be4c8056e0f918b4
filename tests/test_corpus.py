"""The default corpus: shipped with evocode, split by book into train, validation and a hidden test."""

from __future__ import annotations

import hashlib
import lzma
import re

from evocode.data import DEFAULT_CORPUS, PACKAGED, prepare_corpus

TITLE = re.compile(rb"(?:^|\n\n)([^\n]+)\n\nChapter 1\n")


def titles(text: bytes) -> set[bytes]:
    """The books in a split: each starts with its title, a blank line and `Chapter 1`."""
    return set(TITLE.findall(text))


def test_the_default_corpus_is_the_packaged_text_in_three_splits():
    corpus = prepare_corpus()
    for name, path in (("train", corpus.train_path), ("validation", corpus.val_path), ("hidden", corpus.hidden_path)):
        assert path.read_bytes() == lzma.decompress((DEFAULT_CORPUS / f"{name}.txt.xz").read_bytes()), name
    assert corpus.train_bytes + corpus.val_bytes + corpus.hidden_bytes >= 8_000_000


def test_no_book_of_the_validation_or_hidden_split_is_in_another_split():
    corpus = prepare_corpus()
    train, val, hidden = (titles(p.read_bytes()) for p in (corpus.train_path, corpus.val_path, corpus.hidden_path))
    assert len(train) >= 50 and len(val) >= 5 and len(hidden) >= 5
    assert not (train & val) and not (train & hidden) and not (val & hidden)


def test_the_hidden_split_has_its_own_fingerprint_and_counts_in_the_corpus_fingerprint():
    corpus = prepare_corpus()
    hidden = corpus.hidden_path.read_bytes()
    assert corpus.hidden_fingerprint == hashlib.sha256(hidden).hexdigest()[:16]
    parts = corpus.train_path.read_bytes() + b"\0" + corpus.val_path.read_bytes() + b"\0" + hidden
    assert corpus.fingerprint == hashlib.sha256(parts).hexdigest()[:16]


def test_data_stdlib_is_the_standard_library_corpus_without_a_hidden_split():
    corpus = prepare_corpus("stdlib")
    assert corpus.source.startswith("python-stdlib:")
    assert corpus.hidden_path is None and corpus.fingerprint != prepare_corpus().fingerprint


def test_the_packaged_corpus_is_small_enough_for_a_git_repository():
    shipped = sum(p.stat().st_size for p in PACKAGED.rglob("*.xz"))
    assert shipped < 4 * 2**20

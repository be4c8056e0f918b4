"""Shortening an edit list without changing the program it makes.

A search leaves edit lists with history in them: an edit later overwritten
at the same site, a pair that undoes itself (GELU → ReLU, then ReLU → GELU),
the same change made twice. Ablating such a list would measure edits that
do nothing. simplify_edits drops edits one at a time, then two at a time,
as long as the program keeps the same code hash, until no drop keeps it.
"""

from __future__ import annotations

from itertools import combinations

from evocode.genome import Edit, EditError, SiteNotFound, apply_edits, code_hash


def _hash(seed_source: str, edits: list[Edit]) -> str | None:
    try:
        return code_hash(apply_edits(seed_source, edits))
    except (SiteNotFound, EditError):
        return None  # without the dropped edit a later one no longer applies: that drop changes the program


def simplify_edits(seed_source: str, edits: tuple[Edit, ...]) -> tuple[tuple[Edit, ...], tuple[Edit, ...]]:
    """(kept, dropped): the shortest list this finds that makes a program with the same code hash, in the original order.

    Earlier edits are tried first, since an edit is overwritten by a later one, never by an earlier one.
    """
    target = _hash(seed_source, list(edits))
    kept = list(edits)
    while True:
        trial = next((t for size in (1, 2) for drop in combinations(range(len(kept)), size)
                      if _hash(seed_source, t := [e for i, e in enumerate(kept) if i not in drop]) == target), None)
        if trial is None:
            break
        kept = trial
    dropped = list(edits)
    for edit in kept:
        dropped.remove(edit)
    return tuple(kept), tuple(dropped)

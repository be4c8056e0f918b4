"""Crossover without a language model: site-homologous recombination of two parents' edits.

Both parents descend from the same seed, so an edit's site address means the
same place in both: edits at the same site are alternatives for one gene. The
child takes, site by site, one parent's edits there (uniformly), and keeps a
site only one parent touched with probability ``keep_unshared``. Its edits
are applied in the parents' relative order.

A recombination can lose a site (one parent's edit deleted a statement the
other's edit rewrites): such edits are dropped and counted. When the child's
code does not compile, the draw is repeated; after ``attempts`` failed draws
the child is a copy of ``parent_a`` (callers pass the fitter parent first) and
``fallback`` says so.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from evocode.genome import Edit, Genome, apply_applicable_edits


@dataclass(frozen=True)
class CrossoverInfo:
    """What one crossover did: which parent gave each site, what was dropped, whether it fell back."""

    sites_from_a: tuple[str, ...]
    sites_from_b: tuple[str, ...]
    dropped: tuple[Edit, ...]
    failed_draws: int
    fallback: bool


def _genes(edits: tuple[Edit, ...]) -> dict[str, list[tuple[float, Edit]]]:
    """A parent's edits grouped by site, each with its relative position in the parent (0 to 1)."""
    genes: dict[str, list[tuple[float, Edit]]] = {}
    for index, edit in enumerate(edits):
        genes.setdefault(edit.site, []).append((index / len(edits), edit))
    return genes


def _draw(a: dict, b: dict, rng: np.random.Generator, keep_unshared: float) -> tuple[list, list, list]:
    """One recombination: the chosen (position, parent, edit) triples and the sites taken from each parent."""
    chosen, from_a, from_b = [], [], []
    for site in [*a, *(s for s in b if s not in a)]:
        if site in a and site in b:
            take_a = bool(rng.random() < 0.5)
        elif rng.random() < keep_unshared:
            take_a = site in a
        else:
            continue
        (from_a if take_a else from_b).append(site)
        chosen += [(position, 0 if take_a else 1, edit) for position, edit in (a if take_a else b)[site]]
    return sorted(chosen, key=lambda c: (c[0], c[1])), from_a, from_b


def crossover(
    parent_a: Genome, parent_b: Genome, rng: np.random.Generator, keep_unshared: float = 0.5, attempts: int = 3
) -> tuple[Genome, CrossoverInfo]:
    """A child whose edits are a site-by-site recombination of the parents' edits, and what happened."""
    if parent_a.seed_source != parent_b.seed_source:
        raise ValueError("crossover needs two parents of the same seed")
    a, b = _genes(parent_a.edits), _genes(parent_b.edits)
    for failed in range(attempts):
        chosen, from_a, from_b = _draw(a, b, rng, keep_unshared)
        edits = tuple(edit for _, _, edit in chosen)
        code, kept, dropped = apply_applicable_edits(parent_a.seed_source, edits)
        try:
            compile(code, "<crossover child>", "exec")
        except SyntaxError:
            continue
        info = CrossoverInfo(tuple(from_a), tuple(from_b), dropped, failed, fallback=False)
        return Genome(parent_a.seed_source).with_edits(*kept, code=code), info
    return parent_a, CrossoverInfo((), (), (), attempts, fallback=True)

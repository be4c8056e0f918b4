"""Stacking: a parent takes on a change that helped another program.

Improvements to a training script are mostly additive (autoresearch kept
about twenty, one on top of the other): a larger init std and a better
schedule each help, and both together help more. Mutation finds such a
change once; crossover carries it into another program only by chance (an
unshared site survives with probability one half). Stacking uses the
evidence directly: every change whose pair showed it helped (a child better
than its parent on the same evaluation seed, Δ > 0) is a candidate to add,
whole, to a tournament winner that does not touch its sites yet, drawn with
probability proportional to its Δ. The stacked child's own pair then says
whether the change still helps in its new company, and a change that does
becomes evidence in turn.

Like credit, the changes are derived from the stored evaluations and
lineage, so a resumed run stacks exactly as the uninterrupted run would.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Sequence

import numpy as np

from evocode.genome import Edit, Genome, compiled_code
from evocode.search.credit import new_edits, paired_delta
from evocode.store import Evaluated

# Children whose new edits are one change: a mutant's fresh edits, or the change a stacked child took on. A model
# child's (evocode.search.parzen) is not: it sets most constants at once, so it fits almost no parent's free sites,
# and what made it good is already in the model, which proposes near it again.
CHANGE_ORIGINS = ("mutation", "stacking")


@dataclass(frozen=True)
class Change:
    """The edits one child added to its parent, and by how much they beat the parent on their shared seeds."""

    donor: str  # the child that showed it
    edits: tuple[Edit, ...]
    delta: float

    @property
    def sites(self) -> frozenset[str]:
        return frozenset(e.site for e in self.edits)


def helpful_changes(evaluated: Sequence[Evaluated]) -> list[Change]:
    """Every change that made its child better than its parent (Δ > 0), best first; a change shown by several
    children appears once, with its best Δ."""
    by_id = {e.candidate.id: e for e in evaluated}
    best: dict[tuple[Edit, ...], Change] = {}
    for child in evaluated:
        if child.candidate.origin not in CHANGE_ORIGINS:
            continue
        parent = by_id.get(child.candidate.parents[0])
        if parent is None or parent.result.status != "ok":
            continue
        delta = paired_delta(parent, child)
        edits = new_edits(parent, child)
        if delta is None or delta <= 0 or not edits:
            continue
        if edits not in best or delta > best[edits].delta:
            best[edits] = Change(child.candidate.id, edits, delta)
    return sorted(best.values(), key=lambda c: (-c.delta, c.donor))


def stack(parent: Genome, changes: Sequence[Change], rng: np.random.Generator) -> tuple[Genome, Change] | None:
    """The parent with one helpful change added (drawn ∝ Δ among those at sites it leaves alone), and the change;
    None when no change fits (all touch its sites, or the one drawn does not apply or compile)."""
    taken = {e.site for e in parent.edits}
    options = [c for c in changes if not c.sites & taken]
    if not options:
        return None
    weights = np.array([c.delta for c in options])
    change = options[int(rng.choice(len(options), p=weights / weights.sum()))]
    code = compiled_code(parent.seed_source, parent.edits + change.edits, "stacked child")
    return None if code is None else (parent.with_edits(*change.edits, code=code), change)

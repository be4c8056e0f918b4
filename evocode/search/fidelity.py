"""Multi-fidelity: successive halving over token budgets, so many children are screened cheaply and few trained fully.

With K rungs (`--rungs`) and reduction factor η (`--eta`), every child of a
generation is first trained on budget / η^(K−1) tokens; the best 1/η of each
rung (by val_bpb at that rung, on the run's evaluation seed; a failed child
never goes on) are trained on η times as many tokens at the next rung; the
last rung is the full budget. Only full-budget results are scores: selection,
fitness, re-evaluation, credit and best.py see nothing else, so a child that
stopped below the full budget never enters selection. Its rung results are
kept in the store (`rungs` table) and shown in results.tsv and `status`.

Compute stays what it was without rungs, in training tokens. A generation of
C children costs C × budget without rungs. With K rungs, F = ⌊C/K + ½⌋ (at
least 1) children reach the full budget and F × η^(K−1) are bred: each rung
then costs F × budget (η times the children at 1/η of the tokens), so the
generation costs K × F × budget ≈ C × budget, spread over η^(K−1)/K times as
many children.

η defaults to 3 (Hyperband's choice): with η = 2 and two rungs the brood is
no larger than without rungs (η^(K−1)/K = 1), half of it merely cut short;
with η = 3 two rungs screen 1.5 × and three rungs 3 × as many children.

Credit learns from full-budget pairs only: a low-rung score is comparable
with its parent's only at the same budget, and the seed has no low-rung
score. So a child screened out is no evidence about its edit, which biases
credit towards what survives screening (see the README's multi-fidelity note).

Rungs run one after another (synchronous successive halving): a rung's
promotions depend on all its results, never on which finished first, so a
run replays from its seed; the price is slots idle at the end of each rung.
Each rung's entrants are recorded before it runs and promotion is a pure
function of stored results, so a killed run resumes the rung it was in and
redoes no evaluation.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Mapping, Sequence

from evocode.evaluation.runner import EvalResult
from evocode.store import Candidate, Evaluated, RungEvaluation

DEFAULT_ETA = 3


def rung_budgets(budget: int, rungs: int, eta: int) -> list[int]:
    """Training tokens at each rung, lowest first; the last is the full budget."""
    return [max(1, budget // eta ** (rungs - 1 - r)) for r in range(rungs)]


def finalists(children: int, rungs: int) -> int:
    """How many of a generation's children reach the full budget: ⌊children / rungs + ½⌋, at least one."""
    return max(1, (2 * children + rungs) // (2 * rungs))


def brood_size(children: int, rungs: int, eta: int) -> int:
    """Children to breed so that K rungs cost about the training tokens `children` full evaluations cost."""
    return children if rungs == 1 else finalists(children, rungs) * eta ** (rungs - 1)


def full_evaluations(children: int, rungs: int) -> int:
    """Of `children` wanted without rungs, how many get a full-budget score with `rungs`."""
    return children if rungs == 1 else finalists(children, rungs)


def promoted(entrants: Sequence[str], results: Mapping[str, EvalResult], eta: int) -> list[str]:
    """The best ⌈n/η⌉ of a rung's n entrants by val_bpb (ties by id), in the entrants' order; a failure never goes on."""
    ok = sorted((cid for cid in entrants if results[cid].status == "ok"), key=lambda cid: (results[cid].val_bpb, cid))
    best = set(ok[: math.ceil(len(entrants) / eta)])
    return [cid for cid in entrants if cid in best]


@dataclass(frozen=True)
class Spent:
    """Compute a run has used, in training tokens and seconds; and what went on screening below the full budget."""

    tokens: int
    seconds: float
    screening_tokens: int
    screenings: int
    screened_out: int  # children that stopped below the full budget


def spent(evaluated: Sequence[Evaluated], rungs: Sequence[RungEvaluation]) -> Spent:
    """Every finished evaluation counts: first results, re-evaluations and rung results below the full budget."""
    screened = [r.result for r in rungs if r.result is not None]
    results = [r for e in evaluated for r in (e.result, *e.reevaluations)] + screened
    return Spent(sum(r.tokens for r in results), sum(r.train_seconds for r in results),
                 sum(r.tokens for r in screened), len(screened), len(_stopped(evaluated, rungs)))


def screened_out(candidates: Sequence[Candidate], evaluated: Sequence[Evaluated], rungs: Sequence[RungEvaluation]) -> list[Evaluated]:
    """Children that stopped below the full budget, each with its highest finished rung's result, in creation order."""
    last = _stopped(evaluated, rungs)
    return [Evaluated(c, last[c.id].result) for c in candidates if c.id in last]


def _stopped(evaluated: Sequence[Evaluated], rungs: Sequence[RungEvaluation]) -> dict[str, RungEvaluation]:
    """By candidate: the highest finished rung of each child that has no full-budget result (yet)."""
    full = {e.candidate.id for e in evaluated}
    last: dict[str, RungEvaluation] = {}
    for r in rungs:
        if r.result is not None and r.candidate_id not in full and r.rung >= last.get(r.candidate_id, r).rung:
            last[r.candidate_id] = r
    return last

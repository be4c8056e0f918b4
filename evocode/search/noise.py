"""Noise-aware fitness: the elite are re-evaluated on further seeds, and fitness is the mean over them.

A score on one evaluation seed moves with the seed (σ ≈ 0.16 bits per byte
for the seed script at 400k tokens), so a lucky draw would stay elite for the
rest of a run. Every candidate that ranks among the elite is re-evaluated on
further evaluation seeds, derived from the run seed so runs replay, until it
has `--seeds` evaluations or its mean is known to `--precision` (standard
error); its fitness is the mean over the seeds it has, with their count and σ.
Selection ranks by that mean, and ranking again after each round of
re-evaluations lets a candidate whose luck ran out drop from the elite and the
next one be checked, until the elite are all settled. Between generations
one round runs beside the next generation's children (evocode.evolve.elite_round),
so settling spreads over the generations; the last generation's rounds go on
until the best of every program the run evaluated are settled (not only of
the last population: one that left it kept its one lucky score), so the
run's best is, and since they run alone,
a slot they would leave idle re-evaluates a runner-up instead. With
`--finalists N` those last rounds are a final check over every program the
run evaluated: the N best by mean get a second seed at least, so that a run
that re-evaluates nothing while it searches (`--seeds 1`) still does not
name the luckiest single score its winner.

A round is planned from the stored results alone and recorded before it runs
(evocode.store.Reevaluation), so a killed run resumes the same round and ends
as the uninterrupted run would have.
"""

from __future__ import annotations

import math
import statistics
from dataclasses import dataclass
from typing import Sequence

import numpy as np

from evocode.store import Evaluated, Reevaluation

# Tags the generator of re-evaluation seeds so they never coincide with other streams drawn from the run seed.
_SEED_STREAM = 0x5EED5


@dataclass(frozen=True)
class Fitness:
    """Mean val_bpb over a candidate's successful evaluations, their count and σ (None below two)."""

    mean: float
    n: int
    sigma: float | None

    @property
    def standard_error(self) -> float:
        return math.inf if self.sigma is None else self.sigma / math.sqrt(self.n)

    def describe(self) -> str:
        """``3.1386 ± 0.0221 (n=5)``: a claim with its evidence."""
        if self.n == 0:
            return "failed"
        return f"{self.mean:.6f}" + (f" ± {self.sigma:.4f}" if self.sigma is not None else "") + f" (n={self.n})"


FAILED = Fitness(math.inf, 0, None)


def scores_by_seed(e: Evaluated) -> dict[int, float]:
    """The candidate's val_bpb on each evaluation seed it trained successfully with."""
    return {r.seed: r.val_bpb for r in (e.result, *e.reevaluations) if r.status == "ok"}


def fitness(e: Evaluated) -> Fitness:
    """The mean over the candidate's seeds; a candidate that failed on the run's own seed has failed."""
    if e.result.status != "ok":
        return FAILED
    scores = list(scores_by_seed(e).values())
    return Fitness(statistics.mean(scores), len(scores), statistics.stdev(scores) if len(scores) > 1 else None)


def extra_seed(run_seed: int, index: int) -> int:
    """The evaluation seed of a candidate's index-th re-evaluation (index ≥ 1), a pure function of the run seed."""
    return int(np.random.default_rng([run_seed, _SEED_STREAM, index]).integers(2**31))


def settled(e: Evaluated, seeds: int, precision: float) -> bool:
    """Enough evidence: as many evaluations as allowed (failed ones count), or a mean known to `precision`."""
    f = fitness(e)
    return 1 + len(e.reevaluations) >= seeds or f.n >= 2 and f.standard_error <= precision


def next_round(
    pool: Sequence[Evaluated], elite: int, seeds: int, precision: float, run_seed: int, budget: int, width: int = 1,
    runners_up: bool = False,
) -> list[Reevaluation]:
    """One more seed for each of the `elite` best of the pool (by mean) that is not settled; empty when all are.

    When that leaves some of the `width` slots that evaluate at once idle, the
    best of them also get their following seeds in the same round (each up to
    its cap): they would get them in the next rounds unless their luck ran
    out, and an idle slot is wall time lost for certain. A round that runs
    alone (runners_up) fills its last wave of slots further with one seed for
    each of the best unsettled programs below the elite: the programs that a
    member's luck running out would let in.
    """
    ranked = sorted((e for e in pool if e.result.status == "ok"), key=lambda e: (fitness(e).mean, e.candidate.id))
    unsettled = [e for e in ranked[: max(1, elite)] if not settled(e, seeds, precision)]
    planned: list[Reevaluation] = []
    for depth in range(seeds):
        if depth and len(planned) >= width:
            break
        for e in unsettled:
            index = 1 + len(e.reevaluations) + depth
            if index < seeds and (depth == 0 or len(planned) < width):
                planned.append(Reevaluation(e.candidate.id, extra_seed(run_seed, index), budget))
    below = [e for e in ranked[max(1, elite):] if not settled(e, seeds, precision)] if runners_up and planned else []
    for e in below[: -len(planned) % width]:
        planned.append(Reevaluation(e.candidate.id, extra_seed(run_seed, 1 + len(e.reevaluations)), budget))
    return planned


def baseline_seeds(run_seed: int, seeds: int, slots: int, mutants: int = 0) -> tuple[list[int], list[int]]:
    """The further seeds the seed script is evaluated on: those beside its first, as many as leave no slot idle
    while the baseline, which every later claim is measured against, runs alone; then those beside the first
    generation's `mutants`, as many as round that phase up to a multiple of the slots (up to `--seeds` in all)."""
    alone = min(seeds, slots) - 1
    beside = min(seeds - 1 - alone, -mutants % slots)
    indexes = [extra_seed(run_seed, index) for index in range(1, 1 + alone + beside)]
    return indexes[:alone], indexes[alone:]


def run_sigma(evaluated: Sequence[Evaluated]) -> float | None:
    """The measurement's noise in this run: σ pooled over the candidates with several seeds (None before any)."""
    spreads = [(f.n - 1, f.sigma**2) for f in map(fitness, evaluated) if f.sigma is not None]
    dof = sum(d for d, _ in spreads)
    return math.sqrt(sum(d * v for d, v in spreads) / dof) if dof else None


def beats(challenger: Fitness, incumbent: Fitness, sigma: float | None) -> bool:
    """Better by more than the noise: a lower mean by more than one standard error of the difference of the means."""
    if challenger.n == 0 or incumbent.n == 0:
        return challenger.n > 0
    margin = 0.0 if sigma is None else sigma * math.sqrt(1 / challenger.n + 1 / incumbent.n)
    return challenger.mean < incumbent.mean - margin

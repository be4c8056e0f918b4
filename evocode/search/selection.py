"""Selection: who becomes a parent, who survives, and the best ever seen (DEAP's tools on our records).

DEAP's selection functions and hall of fame are plain functions over lists
of individuals with a `fitness`; we use them as they are. Failed candidates
get an infinite loss, so they lose every tournament and never enter the
hall of fame. DEAP draws from Python's global `random`, which is seeded from
the generation's own generator for each draw and restored afterwards, so
selection replays exactly from the run's seed.
"""

from __future__ import annotations

import random
from contextlib import contextmanager
from typing import Iterator

import numpy as np
from deap import base, tools

from evocode.search.noise import fitness
from evocode.store import Evaluated


class Fitness(base.Fitness):
    weights = (-1.0,)  # lower val_bpb is better


class Individual:
    """An evaluated candidate as DEAP's selection tools see it: its mean over its seeds; failures have the worst fitness."""

    def __init__(self, evaluated: Evaluated) -> None:
        self.evaluated = evaluated
        self.fitness = Fitness((fitness(evaluated).mean,))

    @property
    def id(self) -> str:
        return self.evaluated.candidate.id

    @property
    def ok(self) -> bool:
        return self.evaluated.result.status == "ok"


def tournament(population: list[Individual], k: int, size: int, rng: np.random.Generator) -> list[Individual]:
    with _python_random_seeded(int(rng.integers(2**63))):
        return tools.selTournament(population, k, min(size, len(population)))


@contextmanager
def _python_random_seeded(seed: int) -> Iterator[None]:
    """DEAP draws from Python's global `random`; seed it from our generator and leave it as it was."""
    state = random.getstate()
    random.seed(seed)
    try:
        yield
    finally:
        random.setstate(state)


def next_population(population: list[Individual], children: list[Individual], elite: int) -> list[Individual]:
    """The best `elite` successful programs of the last population, then all the children.

    A generation that found no new program keeps the last population whole, so selection never runs dry.
    """
    if not children:
        return population
    kept = [ind for ind in tools.selBest(population, len(population)) if ind.ok][:elite]
    return kept + children


def hall_of_fame(evaluated: list[Evaluated], size: int) -> list[Evaluated]:
    """The best distinct successful programs ever evaluated, best first."""
    fame = tools.HallOfFame(size, similar=lambda a, b: a.evaluated.candidate.code_hash == b.evaluated.candidate.code_hash)
    fame.update([Individual(e) for e in evaluated if e.result.status == "ok"])
    return [ind.evaluated for ind in fame]

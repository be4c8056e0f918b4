"""The main job: evolve a population of programs from one seed script.

Generation 0 is the seed (the baseline) and mutants of it. Every later
generation selects parents by tournament, makes children by crossover or
mutation, drops children whose program was already evaluated, evaluates the
rest in parallel and keeps an elite. All randomness of generation g comes
from (run seed, g), and a generation's children are recorded before any of
them is evaluated, so a resumed run makes exactly the decisions the
uninterrupted run would have made.
"""

from __future__ import annotations

import json
import math
import os
import random
from contextlib import contextmanager
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Callable, Iterator, Sequence

import numpy as np
from deap import base, tools

import evocode
from evocode.crossover import crossover
from evocode.evaluate import EvalResult, Limits
from evocode.executor import evaluate_many
from evocode.genome import Edit, Genome
from evocode.mutation import Mutator, load_mutators, mutate
from evocode.outputs import write_candidate, write_summary
from evocode.store import Candidate, Evaluated, RunStore
from evocode.data import load_corpus
from evocode.spec import EvalSpec

# A child that duplicates a known program is redrawn; this bounds the redraws per child wanted.
_ATTEMPTS_PER_CHILD = 10
# Most mutants take one step; a few take several, up to this many, to cross valleys single edits cannot.
_MAX_EDITS_PER_MUTATION = 4


@dataclass(frozen=True)
class EvolveConfig:
    population: int = 8
    generations: int = 5
    tournament: int = 3
    elite: int = 2
    cx: float = 0.3
    workers: int = field(default_factory=lambda: os.cpu_count() or 1)
    backend: str = "loky"
    seed: int = 0
    mutators: tuple[str, ...] = ()

    def __post_init__(self) -> None:
        if self.population < 2:
            raise ValueError(f"--population must be at least 2, got {self.population}")
        if not 0 <= self.elite < self.population:
            raise ValueError(f"--elite must be between 0 and population - 1 ({self.population - 1}), got {self.elite}")
        if self.tournament < 1 or self.generations < 0 or self.workers < 1:
            raise ValueError("--tournament and --workers must be at least 1, --generations at least 0")
        if not 0.0 <= self.cx <= 1.0:
            raise ValueError(f"--cx is a probability between 0 and 1, got {self.cx}")

    @property
    def planned_evaluations(self) -> int:
        return self.population + self.generations * (self.population - self.elite)


class Fitness(base.Fitness):
    weights = (-1.0,)  # lower val_bpb is better


class Individual:
    """An evaluated candidate as DEAP's selection tools see it: failures have the worst fitness."""

    def __init__(self, evaluated: Evaluated) -> None:
        self.evaluated = evaluated
        ok = evaluated.result.status == "ok"
        self.fitness = Fitness((evaluated.result.val_bpb if ok else math.inf,))

    @property
    def id(self) -> str:
        return self.evaluated.candidate.id

    @property
    def ok(self) -> bool:
        return self.evaluated.result.status == "ok"


@dataclass(frozen=True)
class RunSettings:
    """Everything that determines a run's results; a resumed run must use the same."""

    seed_source: str
    seed_name: str
    config: EvolveConfig
    spec: EvalSpec
    limits: Limits

    def to_json(self) -> dict:
        return {**asdict(self), "config": {**asdict(self.config), "mutators": list(self.config.mutators)}}

    @classmethod
    def from_json(cls, d: dict) -> "RunSettings":
        config = EvolveConfig(**{**d["config"], "mutators": tuple(d["config"]["mutators"])})
        return cls(d["seed_source"], d["seed_name"], config, EvalSpec(**d["spec"]), Limits(**d["limits"]))


def evolve(
    settings: RunSettings,
    run_dir: Path,
    on_result: Callable[[Candidate, EvalResult, list[Evaluated]], None] = lambda *_: None,
) -> list[Evaluated]:
    """Run (or continue) the evolution stored in run_dir; returns every evaluated candidate."""
    with RunStore(run_dir) as store:
        settings = start_or_continue(store, settings)
        config = settings.config
        mutators = load_mutators(list(config.mutators) or None)
        populations = store.populations()
        population = individuals(store, populations[max(populations)]) if populations else []
        for generation in range(len(populations), config.generations + 1):
            brood = store.candidates(generation) or breed(store, settings, mutators, population, generation)
            if generation == 0:
                evaluate_brood(store, settings, brood[:1], run_dir, on_result)
                check_seed(store, settings)
            evaluate_brood(store, settings, brood, run_dir, on_result)
            population = next_population(population, individuals(store, [c.id for c in brood]), config.elite)
            store.finish_generation(generation, [ind.id for ind in population])
        return store.evaluated()


class SeedFailed(RuntimeError):
    """The seed script itself does not train and score: there is no baseline to improve on."""


def check_seed(store: RunStore, settings: RunSettings) -> None:
    seed = store.evaluated()[0].result
    if seed.status != "ok":
        raise SeedFailed(
            f"the seed script {settings.seed_name} does not evaluate ({seed.status}: {seed.reason}); "
            f"fix it until `python -m evocode eval {settings.seed_name}` prints status: ok"
        )


def start_or_continue(store: RunStore, settings: RunSettings) -> RunSettings:
    """A new run records its settings; a stored run keeps its own, and may only be given more generations."""
    stored = store.get("settings")
    if stored is None:
        store.put("settings", settings.to_json())
        store.put("evocode_version", evocode.__version__)
        store.put("corpus", load_corpus(settings.spec.corpus_dir).fingerprint if settings.spec.corpus_dir else None)
        return settings
    previous = RunSettings.from_json(stored)
    wanted = {**settings.to_json(), "config": {**settings.to_json()["config"], "generations": previous.config.generations}}
    if wanted != previous.to_json():
        differing = sorted(k for k in wanted if wanted[k] != previous.to_json()[k])
        raise ValueError(
            f"{store.directory} holds a run with other settings ({', '.join(differing)}); "
            f"use `python -m evocode resume {store.directory}` or another --name"
        )
    generations = max(previous.config.generations, settings.config.generations)
    previous = RunSettings(**{**previous.__dict__, "config": EvolveConfig(**{**asdict(previous.config), "generations": generations})})
    store.put("settings", previous.to_json())
    return previous


def individuals(store: RunStore, ids: Sequence[str]) -> list[Individual]:
    by_id = {e.candidate.id: e for e in store.evaluated()}
    return [Individual(by_id[i]) for i in ids if i in by_id]


def breed(store: RunStore, settings: RunSettings, mutators: list[Mutator], population: list[Individual], generation: int) -> list[Candidate]:
    """The generation's children, recorded all at once before any is evaluated."""
    config = settings.config
    rng = np.random.default_rng([config.seed, generation])
    known = store.code_hashes()
    seed = Genome(settings.seed_source)
    brood: list[Candidate] = []
    if generation == 0:
        brood.append(_candidate(seed, "g000-000", 0, "seed", (), "seed"))
        known.add(brood[0].code_hash)
    target = config.population if generation == 0 else config.population - config.elite
    for _ in range(target * _ATTEMPTS_PER_CHILD):
        if len(brood) == target:
            break
        if generation == 0:
            genome, origin, parents = _mutant(store, seed, mutators, rng, generation), "mutation", ("g000-000",)
        else:
            genome, origin, parents = vary(store, seed, population, mutators, config, rng, generation)
        if genome.code_hash in known:
            continue
        known.add(genome.code_hash)
        brood.append(_candidate(genome, f"g{generation:03d}-{len(brood):03d}", generation, origin, parents, None))
    store.add_candidates(brood)
    return brood


def vary(
    store: RunStore, seed: Genome, population: list[Individual], mutators: list[Mutator],
    config: EvolveConfig, rng: np.random.Generator, generation: int,
) -> tuple[Genome, str, tuple[str, ...]]:
    """One child: crossover of two tournament winners with probability cx, else a mutant of one."""
    if rng.random() < config.cx and len(population) >= 2:
        a, b = tournament(population, 2, config.tournament, rng)
        child, info = crossover(_genome(seed, a), _genome(seed, b), rng)
        if info.fallback or info.dropped:
            store.log_event(generation, "crossover-fallback", f"{a.id} x {b.id}: {len(info.dropped)} edits dropped, fallback={info.fallback}")
        return child, "crossover", (a.id, b.id)
    (parent,) = tournament(population, 1, config.tournament, rng)
    return _mutant(store, _genome(seed, parent), mutators, rng, generation), "mutation", (parent.id,)


def _mutant(store: RunStore, genome: Genome, mutators: list[Mutator], rng: np.random.Generator, generation: int) -> Genome:
    """One or more new edits: half the children take one step, a quarter two, and so on (geometric, capped)."""
    outcome = mutate(genome, mutators, rng, n_edits=min(int(rng.geometric(0.5)), _MAX_EDITS_PER_MUTATION))
    for failure in outcome.failures:
        store.log_event(generation, "mutator-failed", f"{failure.mutator}: {failure.error}")
    return outcome.genome


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
    """The best `elite` successful programs of the last population, then all the children."""
    kept = [ind for ind in tools.selBest(population, len(population)) if ind.ok][:elite]
    return kept + children


def evaluate_brood(store: RunStore, settings: RunSettings, brood: list[Candidate], run_dir: Path, on_result) -> None:
    """Evaluate the brood's candidates that have no result yet; each result is committed as it arrives."""
    done = store.results()
    pending = {c.id: c for c in brood if c.id not in done}
    config = settings.config
    jobs = [(c.id, c.code) for c in pending.values()]
    for candidate_id, result in evaluate_many(jobs, settings.spec, config.seed, settings.limits, config.workers, config.backend):
        store.add_evaluation(candidate_id, result)
        evaluated = store.evaluated()
        write_candidate(run_dir, Evaluated(pending[candidate_id], result))
        write_summary(run_dir, settings.seed_source, settings.seed_name, evaluated)
        on_result(pending[candidate_id], result, evaluated)


def _genome(seed: Genome, ind: Individual) -> Genome:
    return seed.with_edits(*(Edit.from_dict(d) for d in json.loads(ind.evaluated.candidate.genome)))


def _candidate(genome: Genome, cid: str, generation: int, origin: str, parents: tuple[str, ...], description: str | None) -> Candidate:
    return Candidate(
        id=cid,
        generation=generation,
        origin=origin,
        parents=parents,
        genome=json.dumps([e.to_dict() for e in genome.edits]),
        description=description or "; ".join(e.description for e in genome.edits),
        code_hash=genome.code_hash,
        code=genome.code,
    )

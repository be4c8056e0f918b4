"""What determines a run's results, and the rule that a resumed run keeps it.

A run is replayed from its settings and seed, so everything that can change
which programs are made or how they score is recorded when the run starts:
the seed program, the search options, the measurement, the limits, the
mutators that were installed, the corpus's content, and the Python and
evocode versions (the program hash depends on Python's `ast`). Continuing a
run under anything else would silently make another run; it is refused with
a line that says what differs.
"""

from __future__ import annotations

import os
import platform
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path

import evocode
from evocode.data import CorpusError, corpus_of, load_corpus, prepare_corpus
from evocode.evaluation.runner import Limits
from evocode.executors.local import Slots
from evocode.spec import EvalSpec
from evocode.store import RunStore


@dataclass(frozen=True)
class EvolveConfig:
    population: int = 8
    generations: int = 4
    tournament: int = 3
    elite: int = 2
    cx: float = 0.3
    workers: int = field(default_factory=lambda: os.cpu_count() or 1)
    gpus: tuple[str, ...] = ()
    per_gpu: int = 1
    seed: int = 0
    mutators: tuple[str, ...] = ()
    credit: bool = True  # draw mutators by what helped so far (evocode.search.credit), not uniformly
    seeds: int = 3  # evaluation seeds an elite candidate gets at most (evocode.search.noise); 1: no re-evaluation
    precision: float = 0.0  # stop re-evaluating a candidate once its mean's standard error is this small

    def __post_init__(self) -> None:
        if self.population < 2:
            raise ValueError(f"--population must be at least 2, got {self.population}")
        if not 0 <= self.elite < self.population:
            raise ValueError(f"--elite must be between 0 and population - 1 ({self.population - 1}), got {self.elite}")
        if self.tournament < 1 or self.generations < 0 or self.workers < 1:
            raise ValueError("--tournament and --workers must be at least 1, --generations at least 0")
        if self.seeds < 1 or not self.precision >= 0:
            raise ValueError(f"--seeds must be at least 1 and --precision at least 0, got {self.seeds} and {self.precision}")
        if not 0.0 <= self.cx <= 1.0:
            raise ValueError(f"--cx is a probability between 0 and 1, got {self.cx}")

    @property
    def slots(self) -> Slots:
        return Slots(self.workers, self.gpus, self.per_gpu)

    @property
    def planned_evaluations(self) -> int:
        return self.population + self.generations * (self.population - self.elite)


@dataclass(frozen=True)
class RunSettings:
    """Everything that determines a run's results.

    auto_timeout: after the seed is evaluated, candidates get
    max(60 s, TIMEOUT_FACTOR × the seed's time), capped by limits.timeout_s,
    so a hung or bloated candidate costs minutes, not the whole cap.
    data: the text file the corpus was built from (None: the stdlib), to
    rebuild the corpus if its cache is gone.
    """

    seed_source: str
    seed_name: str
    config: EvolveConfig
    spec: EvalSpec
    limits: Limits
    auto_timeout: bool = True
    data: str | None = None

    def to_json(self) -> dict:
        config = {**asdict(self.config), "mutators": list(self.config.mutators), "gpus": list(self.config.gpus)}
        return {**asdict(self), "config": config}

    @classmethod
    def from_json(cls, d: dict) -> "RunSettings":
        config = EvolveConfig(**{**d["config"], "mutators": tuple(d["config"]["mutators"]), "gpus": tuple(d["config"]["gpus"])})
        return cls(**{**d, "config": config, "spec": EvalSpec(**d["spec"]), "limits": Limits(**d["limits"])})


TIMEOUT_FACTOR = 5.0
MIN_TIMEOUT_S = 60.0


class SettingsMismatch(ValueError):
    """The run directory holds a run that these settings would not continue faithfully."""


def start_or_continue(store: RunStore, settings: RunSettings, mutator_names: list[str]) -> RunSettings:
    """A new run records its settings; a stored run keeps its own, and may only be given more generations."""
    facts = {
        "mutators": mutator_names,
        "python": ".".join(platform.python_version_tuple()[:2]),
        "evocode": evocode.__version__,
        "corpus": corpus_of(settings.spec.corpus_dir).fingerprint,
    }
    stored = store.get("settings")
    if stored is None:
        store.put_all({"settings": settings.to_json(), **facts})
        return settings
    previous = RunSettings.from_json(stored)
    differing = _differences(_comparable(previous), _comparable(settings))
    differing += [key for key, value in facts.items() if store.get(key) != value]
    if differing:
        raise SettingsMismatch(
            f"{store.directory} holds a run with other settings ({', '.join(differing)}); continue it with "
            f"`python -m evocode resume {store.directory}` on the installation and data it started with, or start a new run with another --name"
        )
    generations = max(previous.config.generations, settings.config.generations)
    continued = replace(previous, config=replace(previous.config, generations=generations), spec=settings.spec)
    store.put("settings", continued.to_json())
    return continued


def stored_settings(run_dir: Path) -> RunSettings | None:
    """The settings a run directory holds (None when it holds no run), its corpus rebuilt if the cache was cleared."""
    if not (run_dir / "evocode.db").exists():
        return None
    with RunStore.reader(run_dir) as store:
        stored = store.get("settings")
    if stored is None:
        return None
    settings = RunSettings.from_json(stored)
    try:
        load_corpus(settings.spec.corpus_dir)
    except CorpusError:
        settings = replace(settings, spec=replace(settings.spec, corpus_dir=str(prepare_corpus(settings.data).directory)))
    return settings


def with_timeout(settings: RunSettings, timeout_s: float | None) -> RunSettings:
    if timeout_s is None:
        return settings
    return replace(settings, limits=replace(settings.limits, timeout_s=timeout_s))


def derived_timeout(settings: RunSettings, seed_seconds: float) -> float | None:
    if not settings.auto_timeout:
        return None
    return min(settings.limits.timeout_s, max(MIN_TIMEOUT_S, TIMEOUT_FACTOR * seed_seconds))


def _comparable(settings: RunSettings) -> dict:
    """The settings less what may change on resume: the corpus cache's path (its content is compared) and generations."""
    d = settings.to_json()
    d["spec"] = {k: v for k, v in d["spec"].items() if k != "corpus_dir"}
    d["config"] = {k: v for k, v in d["config"].items() if k != "generations"}
    return d


def _differences(a: dict, b: dict, prefix: str = "") -> list[str]:
    found = []
    for key in sorted(set(a) | set(b)):
        x, y = a.get(key), b.get(key)
        if isinstance(x, dict) and isinstance(y, dict):
            found += _differences(x, y, f"{prefix}{key}.")
        elif x != y:
            found.append(prefix + key)
    return found

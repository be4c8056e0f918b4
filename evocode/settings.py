"""What determines a run's results, and the rule that a resumed run keeps it.

A run is replayed from its settings and seed, so everything that can change
which programs are made or how they score is recorded when the run starts:
the seed program, the search options, the measurement, the limits, and, by
content rather than by name, the installation: a hash of each mutator's
module source (a plugin edited in place is another plugin), the corpus's
content, and the versions of Python (the program hash depends on its `ast`),
evocode, torch, numpy, libcst and deap. Continuing a run under anything else
would silently make another run; it is refused with a line that says what
differs, unless forced, and a forced continuation is recorded in the store.
"""

from __future__ import annotations

import hashlib
import importlib.metadata
import os
import platform
import sys
import time
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Sequence

import evocode
from evocode.data import CorpusError, corpus_of, load_corpus, prepare_corpus
from evocode.evaluation.runner import Limits
from evocode.executors import EXECUTORS
from evocode.executors.local import Slots
from evocode.mutation import Mutator
from evocode.search.fidelity import DEFAULT_ETA, full_evaluations, rung_budgets
from evocode.search.parzen import COST_SHARE
from evocode.spec import EvalSpec
from evocode.store import RunStore


@dataclass(frozen=True)
class EvolveConfig:
    population: int = 8
    generations: int = 4
    tournament: int = 3
    elite: int = 2
    cx: float = 0.3
    model: float = 0.3  # of the children not from crossover, the share the model proposes (evocode.search.parzen); of the seed's, a quota
    reach: float = 0.5  # until costs are known, model draws keep to this share of the box's reach from the seed's values
    cost_share: float = COST_SHARE  # model draws predicted to take more than this share of the time limit are passed over
    stack: float = 0.5  # of the children not from crossover, the share that take on a change that helped (evocode.search.stacking)
    workers: int = field(default_factory=lambda: os.cpu_count() or 1)
    gpus: tuple[str, ...] = ()
    per_gpu: int = 1
    cold: bool = False
    seed: int = 0
    mutators: tuple[str, ...] = ()
    credit: bool = True  # draw mutators by what helped so far (evocode.search.credit), not uniformly
    adaptive_steps: bool = True  # with credit: size numeric steps per constant by what helped (evocode.search.steps)
    seeds: int = 3  # evaluation seeds an elite candidate gets at most (evocode.search.noise); 1: no re-evaluation
    precision: float = 0.0  # stop re-evaluating a candidate once its mean's standard error is this small
    finalists: int = 0  # at the run's end, the best this many programs ever evaluated get a second seed at least; 0: off
    rungs: int = 1  # token budgets a child climbs (evocode.search.fidelity: successive halving); 1: every child gets the full budget
    eta: int = DEFAULT_ETA  # each rung trains η times the tokens of the one below, on the best 1/η of its children
    # Of each next generation's children, how many are bred a generation early (see early); None: one fewer than the
    # slots (0 with rungs), fixed when the config is made, so a run resumed on other slots breeds as it did.
    lag: int | None = None
    # Where evaluations run (evocode.executors): "local", or "dask" on the cluster that scheduler (file) names.
    executor: str = "local"
    scheduler: str | None = None
    scheduler_file: str | None = None

    def __post_init__(self) -> None:
        if self.population < 2:
            raise ValueError(f"--population must be at least 2, got {self.population}")
        if not 0 <= self.elite < self.population:
            raise ValueError(f"--elite must be between 0 and population - 1 ({self.population - 1}), got {self.elite}")
        if self.tournament < 1 or self.generations < 0 or self.workers < 1:
            raise ValueError("--tournament and --workers must be at least 1, --generations at least 0")
        if self.seeds < 1 or not self.precision >= 0:
            raise ValueError(f"--seeds must be at least 1 and --precision at least 0, got {self.seeds} and {self.precision}")
        if self.finalists < 0:
            raise ValueError(f"--finalists must be 0 (off) or more, got {self.finalists}")
        if not 0.0 <= self.cx <= 1.0:
            raise ValueError(f"--cx is a probability between 0 and 1, got {self.cx}")
        if not self.cost_share > 0:
            raise ValueError(f"--cost-share is a positive share of the time limit, got {self.cost_share}")
        if not 0.0 <= self.model <= 1.0:
            raise ValueError(f"--model is a probability between 0 and 1, got {self.model}")
        if not 0.0 <= self.stack <= 1.0:
            raise ValueError(f"--stack is a probability between 0 and 1, got {self.stack}")
        if self.rungs < 1 or self.eta < 2:
            raise ValueError(f"--rungs must be at least 1 and --eta at least 2, got {self.rungs} and {self.eta}")
        if self.lag is None:
            object.__setattr__(self, "lag", 0 if self.rungs > 1 else self.slots.count - 1)
        if self.lag < 0 or (self.lag and self.rungs > 1):
            raise ValueError(f"--lag must be at least 0, and 0 with --rungs above 1 (a rung's children are screened "
                             f"together), got {self.lag}")
        if self.executor not in EXECUTORS:
            raise ValueError(f"--executor is one of {', '.join(EXECUTORS)}, got {self.executor!r}")
        if (self.executor == "dask") != (self.scheduler is not None or self.scheduler_file is not None):
            raise ValueError("--scheduler and --scheduler-file name a Dask cluster, and --executor dask needs one of them")

    @property
    def slots(self) -> Slots:
        return Slots(self.workers, self.gpus, self.per_gpu, self.cold)

    @property
    def early(self) -> int:
        """How many of each next generation's children are bred a generation early, from the population its parents
        come from, so they are queued while this generation's slowest evaluations run (evocode.evolve.brood).

        One fewer than the slots by default: the slots a generation's last evaluation leaves idle, each then has a
        job while it runs, and only those few children are bred from a population one generation old. None with
        rungs, whose children are screened together.
        """
        return min(self.lag, self.population - self.elite)

    @property
    def planned_evaluations(self) -> int:
        """Full-budget evaluations on the run's seed: the seed, then each generation's children that reach the full budget."""
        first = full_evaluations(self.population - 1, self.rungs)
        return 1 + first + self.generations * full_evaluations(self.population - self.elite, self.rungs)


@dataclass(frozen=True)
class RunSettings:
    """Everything that determines a run's results.

    auto_timeout: after the seed is evaluated, candidates get
    max(60 s, TIMEOUT_FACTOR × the seed's time), capped by limits.timeout_s,
    so a hung or bloated candidate costs minutes, not the whole cap.
    time_factor: instead, exactly this many times the seed's time (still
    capped): a time-fair search, where a candidate that buys its gain with
    more compute per token than the seed allows is a timeout.
    data: what the corpus was built from (None: evocode's packaged corpus,
    "stdlib", or a text file), to rebuild the corpus if its cache is gone.
    """

    seed_source: str
    seed_name: str
    config: EvolveConfig
    spec: EvalSpec
    limits: Limits
    auto_timeout: bool = True
    data: str | None = None
    time_factor: float | None = None

    def __post_init__(self) -> None:
        lowest = rung_budgets(self.spec.budget, self.config.rungs, self.config.eta)[0]
        if lowest < self.spec.context_length:
            raise ValueError(
                f"the lowest of {self.config.rungs} rungs would train on {lowest} tokens (--budget {self.spec.budget} / "
                f"{self.config.eta}^{self.config.rungs - 1}), less than one window of --context {self.spec.context_length}; "
                f"pass fewer --rungs, a smaller --eta or a larger --budget"
            )

    def to_json(self) -> dict:
        config = {**asdict(self.config), "mutators": list(self.config.mutators), "gpus": list(self.config.gpus)}
        return {**asdict(self), "config": config}

    @classmethod
    def from_json(cls, d: dict) -> "RunSettings":
        # A run stored before stacking (or model proposals) existed never stacked (or proposed): it resumes as it was made.
        config = EvolveConfig(**{"stack": 0.0, "model": 0.0, **d["config"], "mutators": tuple(d["config"]["mutators"]),
                                 "gpus": tuple(d["config"]["gpus"])})
        return cls(**{**d, "config": config, "spec": EvalSpec(**d["spec"]), "limits": Limits(**d["limits"])})


TIMEOUT_FACTOR = 5.0
MIN_TIMEOUT_S = 60.0


class SettingsMismatch(ValueError):
    """The run directory holds a run that these settings would not continue faithfully."""


# Packages whose version can change a candidate's score or the code the mutators write.
PINNED_PACKAGES = ("torch", "numpy", "libcst", "deap")


def installation(settings: RunSettings, mutators: Sequence[Mutator]) -> dict:
    """What a run's results depend on besides its settings, by content: each mutator's module source, the corpus, versions."""
    return {
        "mutators": {m.name: mutator_fingerprint(m) for m in mutators},
        "mutator_files": {m.name: _module_file(m) for m in mutators},
        "python": ".".join(platform.python_version_tuple()[:2]),
        "evocode": evocode.__version__,
        "packages": {name: _version(name) for name in PINNED_PACKAGES},
        "corpus": corpus_of(settings.spec.corpus_dir).fingerprint,
    }


def mutator_fingerprint(mutator: Mutator) -> str:
    """A hash of the source of the module that defines the mutator's class: an edit anywhere in a plugin changes it."""
    path = _module_file(mutator)
    return hashlib.sha256(Path(path).read_bytes()).hexdigest()[:16] if path else "no source file"


def _module_file(mutator: Mutator) -> str | None:
    module = sys.modules.get(type(mutator).__module__)
    return getattr(module, "__file__", None)


def _version(package: str) -> str | None:
    try:
        return importlib.metadata.version(package)
    except importlib.metadata.PackageNotFoundError:
        return None


def start_or_continue(store: RunStore, settings: RunSettings, mutators: Sequence[Mutator]) -> RunSettings:
    """A new run records its settings and installation; a stored run keeps its own, and may only be given more generations."""
    stored = store.get("settings")
    if stored is None:
        store.put_all({"settings": settings.to_json(), **installation(settings, mutators)})
        return settings
    previous = RunSettings.from_json(stored)
    differing = _differences(_comparable(previous), _comparable(settings))
    if differing:
        raise SettingsMismatch(
            f"{store.directory} holds a run with other settings ({', '.join(differing)}); continue it with "
            f"`python -m evocode resume {store.directory}`, or start a new run with another --name"
        )
    pin(store, settings, mutators, force=False)
    generations = max(previous.config.generations, settings.config.generations)
    where = {key: getattr(settings.config, key) for key in _WHERE}
    continued = replace(previous, config=replace(previous.config, generations=generations, **where), spec=settings.spec)
    store.put("settings", continued.to_json())
    return continued


def pin(store: RunStore, settings: RunSettings, mutators: Sequence[Mutator], force: bool) -> None:
    """Refuse to continue a run under another installation, naming what differs; forced, record that it was."""
    now = installation(settings, mutators)
    stored = {key: store.get(key) for key in now}
    compared = [key for key in now if key != "mutator_files"]  # where a mutator lives is for the message, not the pin
    differing = [_explain(key, stored, now) for key in _differences({k: stored[k] for k in compared}, {k: now[k] for k in compared})]
    if not differing:
        return
    if not force:
        raise SettingsMismatch(
            f"{store.directory} was started under another installation ({'; '.join(differing)}); resume it where it "
            f"started, or pass --force to continue knowingly (the run records it)"
        )
    forced = (store.get("forced") or []) + [{"at": time.time(), "differences": differing}]
    store.put_all({**now, "forced": forced})


def _explain(key: str, stored: dict, now: dict) -> str:
    """One difference in words: which mutator's code, which package's version."""
    group, _, name = key.partition(".")
    if group == "mutators" and name:
        old, new = stored["mutators"] or {}, now["mutators"]
        if name not in old:
            return f"mutator {name} was not in the run"
        if name not in new:
            return f"mutator {name} is missing"
        return f"mutator {name}'s code changed ({now['mutator_files'].get(name) or 'no source file'})"
    old = stored.get(group) if not name else (stored.get(group) or {}).get(name)
    new = now.get(group) if not name else now[group].get(name)
    return f"{key} {old} → {new}"


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
    if settings.time_factor is not None:
        return min(settings.limits.timeout_s, settings.time_factor * seed_seconds)
    return min(settings.limits.timeout_s, max(MIN_TIMEOUT_S, TIMEOUT_FACTOR * seed_seconds))


def rung_timeout(timeout_s: float | None, budget: int, full: int) -> float | None:
    """The derived timeout scaled to a rung's share of the full budget, never below MIN_TIMEOUT_S (a process's start and
    its scoring do not shrink with the budget) nor above the full one."""
    if timeout_s is None:
        return None
    return min(timeout_s, max(MIN_TIMEOUT_S, timeout_s * budget / full))


# Where a run's evaluations run: the same scores anywhere, and a cluster may come back at another address.
_WHERE = ("executor", "scheduler", "scheduler_file")


def _comparable(settings: RunSettings) -> dict:
    """The settings less what may change on resume: the corpus cache's path (its content is compared), generations,
    and where evaluations run."""
    d = settings.to_json()
    d["spec"] = {k: v for k, v in d["spec"].items() if k != "corpus_dir"}
    d["config"] = {k: v for k, v in d["config"].items() if k != "generations" and k not in _WHERE}
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

"""The baseline a careful user would write: Optuna's TPE tuning the seed script's module-level numeric constants.

The search space is evocode's own (evocode.search.space: each constant's
range follows its nature, as a person would set it up), the box evocode's
model proposals search too. Optuna is a benchmark extra
(`pip install -e '.[bench]'`), never a dependency of evocode.
"""

from __future__ import annotations

import math
from typing import Callable

from evocode.executors.local import Job, Slots, evaluate_many
from evocode.evaluation.runner import EvalResult, Limits
from evocode.genome import Edit, Genome
from evocode.mutation import format_number
from evocode.search.space import Param, constant_space
from evocode.spec import EvalSpec


def suggest(trial, p: Param) -> float | int:
    """The value an Optuna trial picks for the constant, in the constant's own units."""
    if p.kind == "power_of_two":
        return 2 ** trial.suggest_int(p.name + " (log2)", int(p.low), int(p.high))
    if p.kind == "integer":
        return trial.suggest_int(p.name, int(p.low), int(p.high), log=True)
    if p.kind == "zero_fraction":
        return trial.suggest_float(p.name, p.low, p.high)
    if p.kind == "near_one":
        return 1 - trial.suggest_float("1 - " + p.name, p.low, p.high, log=True)
    return trial.suggest_float(p.name, p.low, p.high, log=True)


def seed_trial(space: list[Param]) -> dict[str, float]:
    """The seed's own values in the study's coordinates: enqueued first, as a user starts from the script they have."""
    coordinates = {"power_of_two": lambda p: (p.name + " (log2)", int(math.log2(p.value))),
                   "near_one": lambda p: ("1 - " + p.name, 1 - p.value)}
    return dict(coordinates.get(p.kind, lambda p: (p.name, p.value))(p) for p in space)


def program_with(seed_source: str, values: dict[str, float | int]) -> Genome:
    """The seed with these constants written in, as evocode edits (so it reads like any other candidate)."""
    edits = [Edit("tpe", name, format_number(v), f"{name} → {format_number(v)}") for name, v in values.items()]
    return Genome(seed_source).with_edits(*edits)


def tpe_search(seed_source: str, trials: int, spec: EvalSpec, limits: Limits, workers: int, seed: int,
               on_result: Callable[[str, EvalResult], None] = lambda *_: None) -> list[tuple[str, EvalResult]]:
    """`trials` TPE trials, `workers` at a time, each trained on evaluation seed `seed`; (code, result) in the order told."""
    import optuna

    optuna.logging.set_verbosity(optuna.logging.WARNING)
    study = optuna.create_study(sampler=optuna.samplers.TPESampler(seed=seed))
    space = constant_space(seed_source, spec.context_length)
    study.enqueue_trial(seed_trial(space))
    told: list[tuple[str, EvalResult]] = []
    while len(told) < trials:
        batch = [study.ask() for _ in range(min(workers, trials - len(told)))]
        codes = [program_with(seed_source, {p.name: suggest(t, p) for p in space}).code for t in batch]
        results = dict(evaluate_many([Job(str(i), c, seed, spec) for i, c in enumerate(codes)], limits, Slots(workers)))
        for i, trial in enumerate(batch):
            result = results[str(i)]
            ok = result.status == "ok"
            study.tell(trial, result.val_bpb if ok else None, state=None if ok else optuna.trial.TrialState.FAIL)
            told.append((codes[i], result))
            on_result(codes[i], result)
    return told

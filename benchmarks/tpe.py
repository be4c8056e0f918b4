"""The baseline a careful user would write: Optuna's TPE tuning the seed script's module-level numeric constants.

The search space follows each constant's nature, as a person would set it
up: a power of two stays a power of two (its exponent within ±2), a fraction
in (0, 1) stays one (on a log scale of itself, or of 1 − it when it is near
1, like Adam's betas), and other positive numbers move on a log scale within
a factor of 4. A training window's length (SEQ_LEN and its usual synonyms)
may not exceed the harness's context length, since longer windows do not exist. Booleans and constants named
LOG_* (logging only) are left alone. Optuna is a benchmark extra
(`pip install -e '.[bench]'`), never a dependency of evocode.
"""

from __future__ import annotations

import ast
import math
from dataclasses import dataclass
from typing import Callable

from evocode.executors.local import Job, Slots, evaluate_many
from evocode.evaluation.runner import EvalResult, Limits
from evocode.genome import Edit, Genome
from evocode.mutation import format_number
from evocode.spec import EvalSpec

_SPREAD = 4.0  # how far (a factor) a log-scale constant may move either way
_EXPONENT_SPREAD = 2  # powers of two move by up to this many doublings or halvings
_WINDOW_NAMES = ("SEQ_LEN", "BLOCK_SIZE", "CONTEXT_LENGTH")


@dataclass(frozen=True)
class Param:
    """One tunable constant: its name, its value in the seed, and the kind of range it moves in."""

    name: str
    value: float
    kind: str  # "power_of_two", "integer", "fraction", "near_one", "positive", "zero_fraction"
    low: float
    high: float


def _is_power_of_two(v: object) -> bool:
    return isinstance(v, int) and v > 1 and v & (v - 1) == 0


def _param(name: str, v: float, context_length: int) -> Param | None:
    if _is_power_of_two(v):
        e = int(math.log2(v))
        top = e + _EXPONENT_SPREAD
        if name in _WINDOW_NAMES:
            top = min(top, int(math.log2(context_length)))
        return Param(name, v, "power_of_two", max(0, e - _EXPONENT_SPREAD), top)
    if isinstance(v, int):
        return Param(name, v, "integer", max(1, round(v / _SPREAD)), round(v * _SPREAD)) if v > 0 else None
    if v == 0.0:
        return Param(name, v, "zero_fraction", 0.0, 0.3)
    if 0.5 <= v < 1.0:
        return Param(name, v, "near_one", (1 - v) / _SPREAD, min(0.5, (1 - v) * _SPREAD))
    if 0.0 < v < 0.5:
        return Param(name, v, "fraction", v / _SPREAD, min(0.9, v * _SPREAD))
    return Param(name, v, "positive", v / _SPREAD, v * _SPREAD) if v > 0 else None


def constant_space(seed_source: str, context_length: int) -> list[Param]:
    """The seed's module-level numeric constants (`NAME = number`), each with the range its nature allows."""
    params = []
    for node in ast.parse(seed_source).body:
        if not (isinstance(node, ast.Assign) and len(node.targets) == 1 and isinstance(node.targets[0], ast.Name)):
            continue
        name, value = node.targets[0].id, node.value
        if name.startswith("LOG_") or not isinstance(value, ast.Constant) or isinstance(value.value, bool):
            continue
        if isinstance(value.value, (int, float)):
            param = _param(name, value.value, context_length)
            if param is not None:
                params.append(param)
    return params


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

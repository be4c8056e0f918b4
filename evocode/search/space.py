"""The space of a seed's module-level numeric constants: each constant's range, and the coordinates it moves in.

The ranges follow each constant's nature, as a person would set up a
search: a power of two stays a power of two (its exponent within ±2), a
fraction in (0, 1) stays one (on a log scale of itself, or of 1 − it when
it is near 1, like Adam's betas), and other positive numbers move on a log
scale within a factor of 4. A training window's length (SEQ_LEN and its
usual synonyms) may not exceed the harness's context length, since longer
windows do not exist. Booleans and constants named LOG_* (logging only) are
left alone. One definition serves evocode's model proposals
(evocode.search.parzen) and the benchmark's TPE baseline (benchmarks/tpe.py),
so both search the same box.

A constant's coordinate is where distances mean something: the exponent
for powers of two, integers and other positives (doubling is one step
wherever it starts), the log for fractions and of 1 − v for near-one
values, and the value itself for a fraction that starts at zero.
"""

from __future__ import annotations

import ast
import math
from dataclasses import dataclass

_SPREAD = 4.0  # how far (a factor) a log-scale constant may move either way
_EXPONENT_SPREAD = 2  # powers of two move by up to this many doublings or halvings
_WINDOW_NAMES = ("SEQ_LEN", "BLOCK_SIZE", "CONTEXT_LENGTH")


@dataclass(frozen=True)
class Param:
    """One tunable constant: its name, its value in the seed, and the kind of range it moves in.

    low and high are in the kind's own units: the exponent for a power of two, 1 − v for near_one, else the value."""

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


def bounds(p: Param) -> tuple[float, float]:
    """The constant's range in its coordinate; a whole number's reaches half a step past its ends, so that each
    whole value gets an equal share of the range once rounded (as Optuna does for integers)."""
    if p.kind == "power_of_two":
        return p.low - 0.5, p.high + 0.5
    if p.kind == "integer":
        return math.log2(p.low - 0.5), math.log2(p.high + 0.5)
    if p.kind == "zero_fraction":
        return p.low, p.high
    if p.kind == "positive":
        return math.log2(p.low), math.log2(p.high)
    return math.log(p.low), math.log(p.high)  # fraction, near_one (of 1 − v)


def coordinate(p: Param, v: float) -> float | None:
    """Where the value v of the constant lies in its coordinate (not clipped to the range); None where it has none
    (a log of a number a mutation made zero or negative)."""
    if p.kind == "zero_fraction":
        return float(v)
    x = 1 - v if p.kind == "near_one" else v
    if x <= 0:
        return None
    return math.log2(x) if p.kind in ("power_of_two", "integer", "positive") else math.log(x)


def value(p: Param, x: float) -> float | int:
    """The constant's value at coordinate x, as a script would write it: powers of two and integers stay whole."""
    if p.kind == "power_of_two":
        return 2 ** int(min(p.high, max(p.low, round(x))))
    if p.kind == "integer":
        return int(min(p.high, max(p.low, round(2.0**x))))
    if p.kind == "positive":
        return 2.0**x
    if p.kind == "near_one":
        return 1 - math.exp(x)
    return math.exp(x) if p.kind == "fraction" else float(x)

"""Mutators of the named constants at the top of a training script: its hyperparameters."""

from __future__ import annotations

import math
import re
from typing import ClassVar, Sequence

import libcst as cst
import libcst.matchers as m
import numpy as np

from evocode.genome import Edit
from evocode.mutation import FOLLOW, Mutator, Step, format_number, pick
from evocode.program import Program


def matching_constants(program: Program, pattern: str, kind: type | tuple[type, ...] = (int, float)) -> list[tuple[str, float]]:
    """Module-level constants whose name matches the pattern and whose value has the kind (bools count only as bool)."""
    return [
        (name, value)
        for name, value in program.constants().items()
        if re.search(pattern, name) and isinstance(value, kind) and isinstance(value, bool) == (kind is bool)
    ]


def divisibility_constraints(program: Program) -> list[tuple[str, str]]:
    """The (A, B) pairs of every module-level ``assert A % B == 0``: constraints the program states."""
    divisible = m.Assert(
        test=m.Comparison(
            left=m.BinaryOperation(left=m.Name(), operator=m.Modulo(), right=m.Name()),
            comparisons=[m.ComparisonTarget(operator=m.Equal(), comparator=m.Integer("0"))],
        )
    )
    pairs = []
    for statement in program.module.body:
        for small in statement.body if isinstance(statement, cst.SimpleStatementLine) else ():
            if m.matches(small, divisible):
                pairs.append((small.test.left.left.value, small.test.left.right.value))
    return pairs


def satisfies(program: Program, name: str, value: int) -> bool:
    """Whether setting constant ``name`` to ``value`` keeps every divisibility constraint of the program."""
    values = {**program.constants(), name: value}
    return all(
        a not in values or b not in values or (values[b] and values[a] % values[b] == 0)
        for a, b in divisibility_constraints(program)
    )


class ScaleConstant(Mutator):
    """Scale-like hyperparameters (learning rate, weight decay, eps, init std) are mis-set by factors, not by amounts:
    multiplying one by a log-normal factor tests whether the script trains better with it larger or smaller.
    The factor grows where large moves kept helping and shrinks where they stopped (its ``steps`` advice)."""

    name = "scale_constant"
    category = "hyperparameter"
    pattern = r"(^|_)(LR|LEARNING_RATE|WEIGHT_DECAY|WD|EPS|STD)$"

    def propose(self, program: Program, rng: np.random.Generator) -> Edit | None:
        sites = [(n, v) for n, v in matching_constants(program, self.pattern, float) if v > 0]
        if not sites:
            return None
        name, value = pick(rng, sites)
        step = self.steps.get(name, Step())
        exponent = step.sign(rng) * rng.uniform(0.3, 1.5) * step.scale
        new = float(f"{value * 2**exponent:.2g}")
        return self.edit(name, format_number(new), f"{name} {format_number(value)} → {format_number(new)}")


class CountConstant(Mutator):
    """Model shape (layers, heads, width, MLP ratio) trades capacity against steps at a fixed token budget:
    a step up or down in one count tests which side of that trade the script is on. Keeps the divisibility
    constraints the script asserts (e.g. N_EMBD % N_HEAD == 0). Where a direction helped before (its ``steps``
    advice), it usually steps that way again."""

    name = "count_constant"
    category = "architecture"
    pattern = r"^(N|NUM)_|_RATIO$|^(WIDTH|DEPTH|D_MODEL)$"

    def propose(self, program: Program, rng: np.random.Generator) -> Edit | None:
        options = [
            (name, value, new)
            for name, value in matching_constants(program, self.pattern, int)
            for new in self.neighbours(value)
            if satisfies(program, name, new)
        ]
        if not options:
            return None
        name, value, new = pick(rng, options)
        direction = self.steps.get(name, Step()).direction
        onward = [o for o in options if o[0] == name and (o[2] - value) * direction > 0]
        if onward and rng.random() < FOLLOW:
            name, value, new = pick(rng, onward)
        return self.edit(name, str(new), f"{name} {value} → {new}")

    @staticmethod
    def neighbours(value: int) -> list[int]:
        """Nearby counts: ±1, ×2 and ÷2 for small counts, ±a quarter (rounded to a power of two) for widths."""
        if value <= 16:
            candidates = {value - 1, value + 1, value * 2, value // 2}
        else:
            step = 2 ** (int(math.log2(value)) - 2)
            candidates = {value - step, value + step}
        return sorted(c for c in candidates if c >= 1 and c != value)


class AdamBetas(Mutator):
    """Adam's betas set the averaging horizons 1/(1-β) of its moment estimates; halving or doubling a horizon
    tests whether the optimizer should react faster or average longer for this budget."""

    name = "adam_betas"
    category = "optimization"
    pattern = r"^(ADAM_)?BETA_?[12]$"

    def propose(self, program: Program, rng: np.random.Generator) -> Edit | None:
        sites = [(n, v) for n, v in matching_constants(program, self.pattern, float) if 0 < v < 1]
        if not sites:
            return None
        name, value = pick(rng, sites)
        new = round(1 - (1 - value) * pick(rng, (0.5, 2.0)), 4)
        if not 0 < new < 1:
            return None
        return self.edit(name, format_number(new, 4), f"{name} {format_number(value, 4)} → {format_number(new, 4)}")


class ChoiceConstant(Mutator):
    """Base of mutators that set a matching constant to another value from a grid of sensible values."""

    pattern: ClassVar[str]
    grid: ClassVar[Sequence[float]]

    def propose(self, program: Program, rng: np.random.Generator) -> Edit | None:
        sites = matching_constants(program, self.pattern)
        if not sites:
            return None
        name, value = pick(rng, sites)
        options = [v for v in self.grid if not math.isclose(v, value)]
        new = pick(rng, options)
        return self.edit(name, format_number(new), f"{name} {format_number(value)} → {format_number(new)}")


class Dropout(ChoiceConstant):
    """Dropout trades fitting speed for generalization; under a small token budget the model rarely overfits,
    so switching dropout off (or on, when the budget grows) tests which regime the run is in."""

    name = "dropout"
    category = "hyperparameter"
    pattern = r"DROPOUT$"
    grid = (0.0, 0.05, 0.1, 0.2)


class GradClip(ChoiceConstant):
    """Gradient clipping guards against loss spikes but also slows learning when it bites; turning it off
    (0.0) or moving the threshold tests whether the spikes or the clipping cost more."""

    name = "grad_clip"
    category = "optimization"
    pattern = r"^GRAD_CLIP$|^CLIP_GRAD(_NORM)?$"
    grid = (0.0, 0.5, 1.0, 2.0, 5.0)


class ScheduleFraction(ChoiceConstant):
    """How long the learning rate warms up and how far it decays decide how much of a short budget is spent at
    a useful rate; moving the warmup or final-LR fraction tests both ends of the schedule."""

    name = "schedule_fraction"
    category = "optimization"
    pattern = r"^(WARMUP|FINAL_LR|MIN_LR|COOLDOWN)\w*_FRACTION$"
    grid = (0.0, 0.02, 0.05, 0.1, 0.2, 0.3)


class ToggleFlag(Mutator):
    """A boolean switch the author exposed (bias terms, weight tying) may be set the wrong way for this budget:
    flipping it tests the other setting."""

    name = "toggle_flag"
    category = "architecture"

    def propose(self, program: Program, rng: np.random.Generator) -> Edit | None:
        sites = matching_constants(program, r"^[A-Z][A-Z0-9_]*$", bool)
        if not sites:
            return None
        name, value = pick(rng, sites)
        return self.edit(name, repr(not value), f"{name} {value} → {not value}")


class CoupledScale(Mutator):
    """Some constants only make sense together, and moving one alone tests a worse version of the change: Adam's
    learning rate scales with the square root of the batch, and a layer's init std with one over the square root
    of its width. Doubling or halving the first while the second follows its rule tests the change itself."""

    name = "coupled_scale"
    category = "hyperparameter"
    # (leading count, following scale, exponent): the follower is multiplied by factor ** exponent when the lead is.
    couplings: ClassVar[tuple[tuple[str, str, float], ...]] = (
        (r"^BATCH_SIZE$", r"(^|_)(LR|LEARNING_RATE)$", 0.5),
        (r"^(N_EMBD|D_MODEL|WIDTH|HIDDEN_SIZE)$", r"(^|_)STD$", -0.5),
    )

    def propose(self, program: Program, rng: np.random.Generator) -> Edit | None:
        options = [
            (lead, value, int(value * factor), follower, scale, scale * factor**exponent)
            for lead_pattern, follow_pattern, exponent in self.couplings
            for lead, value in matching_constants(program, lead_pattern, int)
            for follower, scale in matching_constants(program, follow_pattern, float)
            for factor in (0.5, 2)
            if scale > 0 and value * factor >= 1 and satisfies(program, lead, int(value * factor))
        ]
        if not options:
            return None
        lead, value, new, follower, scale, new_scale = pick(rng, options)
        new_scale = format_number(new_scale, 2)
        return self.edit(
            f"({lead}, {follower})", f"{new}, {new_scale}",
            f"{lead}×{follower} {value}×{format_number(scale)} → {new}×{new_scale} ({follower} follows {lead})",
        )

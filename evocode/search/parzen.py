"""Model proposals: several module-level constants moved at once, where good programs have them.

The largest gains on a training script often need several constants moved
far together (a smaller batch for more optimizer steps, a shallower and
wider model, a larger init std), which a mutant's one to four single-site
steps rarely make. A model proposal does what TPE does (Bergstra et al.
2011; Optuna's default TPESampler), inside the evolution: every evaluated
program is an observation of the seed's constants (evocode.search.space,
read with `ast`) and its fitness; the best ⌈γ·n⌉ are good, the rest bad;
per constant, a Parzen density l over the good programs' values and g over
the bad ones' (a Gaussian at each value, plus a uniform prior over the
range, truncated to it). A proposal draws CANDIDATES vectors from l, one
constant at a time, and keeps the one where Σ log l − log g, the ratio
that orders candidates by expected improvement, is highest. With fewer
than STARTUP observations the densities say nothing yet, and a proposal is
a uniform draw from the box, as TPE's startup trials are (random joint
moves already beat single steps on the benchmark).

The proposed values that differ from the parent's are written onto the
parent's genome as edits, replacing any edit the parent has at the same
constant, so the child keeps its parent's code changes and takes the
model's constants. Like credit, the model is fitted from the stored
evaluations only, so a resumed or replayed run proposes the same children.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Sequence

import numpy as np

from evocode.genome import Edit, Genome, compiled_code
from evocode.mutation import format_number
from evocode.search.noise import fitness
from evocode.search.space import Param, bounds, coordinate, value
from evocode.search.steps import module_numbers
from evocode.store import Evaluated

# The share of observations that are good. Optuna's default, 0.1·n, leaves one to three good programs at the
# 10 to 30 evaluations of a run, so l is one noisy winner's neighbourhood (the failure the model is meant to cure);
# hyperopt's 0.25 keeps three to eight, enough to average a constant over several good programs.
GAMMA = 0.25
MAX_GOOD = 25  # Optuna's cap: beyond it, more good observations only blur l
STARTUP = 10  # observations before the densities are used (Optuna's n_startup_trials)
CANDIDATES = 24  # vectors drawn from l per proposal (Optuna's n_ei_candidates)
ORIGIN = "model"


@dataclass(frozen=True)
class Density:
    """A Parzen density on [low, high]: a truncated Gaussian at each observation (weight 1) and a uniform prior (weight 1)."""

    low: float
    high: float
    mus: np.ndarray
    sigmas: np.ndarray
    masses: np.ndarray  # each Gaussian's mass inside [low, high]: its truncation's normalizer

    def sample(self, rng: np.random.Generator, n: int) -> np.ndarray:
        """n draws: a component each (the prior as likely as any observation), then a point of it inside the range."""
        picks = rng.integers(len(self.mus) + 1, size=n)
        out = rng.uniform(self.low, self.high, size=n)
        for i in np.flatnonzero(picks < len(self.mus)):
            mu, sigma = self.mus[picks[i]], self.sigmas[picks[i]]
            x = rng.normal(mu, sigma)
            while not self.low <= x <= self.high:  # each draw lands inside with probability ≥ 1/4 (μ inside, σ ≤ range)
                x = rng.normal(mu, sigma)
            out[i] = x
        return out

    def log_pdf(self, x: np.ndarray) -> np.ndarray:
        z = (x[:, None] - self.mus[None, :]) / self.sigmas[None, :]
        gaussians = np.exp(-0.5 * z**2) / (self.sigmas * math.sqrt(2 * math.pi) * self.masses)
        return np.log((gaussians.sum(axis=1) + 1 / (self.high - self.low)) / (len(self.mus) + 1))


def parzen(xs: Sequence[float], low: float, high: float) -> Density:
    """The density of observations xs on [low, high], with Optuna's univariate bandwidths: each Gaussian as wide as
    the larger gap to its neighbours (the range's ends and its middle, where Optuna's prior sits, count as
    neighbours; the outermost take their inner gap), clipped to [range / min(100, n + 2), range]."""
    mus = np.clip(np.asarray(xs, dtype=float), low, high)
    span = high - low
    points = np.append(mus, (low + high) / 2)
    order = np.argsort(points, kind="stable")
    padded = np.concatenate([[low], points[order], [high]])
    gaps = np.maximum(padded[1:-1] - padded[:-2], padded[2:] - padded[1:-1])
    if len(points) >= 2:
        gaps[0], gaps[-1] = padded[2] - padded[1], padded[-2] - padded[-3]
    sigmas = np.empty_like(points)
    sigmas[order] = gaps
    sigmas = np.clip(sigmas[: len(mus)], span / min(100, len(mus) + 2), span)
    masses = np.array([_normal_cdf((high - m) / s) - _normal_cdf((low - m) / s) for m, s in zip(mus, sigmas)])
    return Density(low, high, mus, sigmas, masses)


def _normal_cdf(z: float) -> float:
    return 0.5 * (1 + math.erf(z / math.sqrt(2)))


@dataclass(frozen=True)
class Model:
    """Per constant, the densities of good (l) and bad (g) programs' values; None before STARTUP observations."""

    space: tuple[Param, ...]
    good: tuple[Density, ...] | None
    bad: tuple[Density, ...] | None


def observations(space: Sequence[Param], evaluated: Sequence[Evaluated]) -> list[dict[str, float]]:
    """Each evaluated program's constants in the space's coordinates (clipped to the ranges), best first (a failure
    is worst); a constant a program lacks, or that has no coordinate there, is missing from its entry."""
    ranked = sorted(evaluated, key=lambda e: (fitness(e).mean, e.candidate.id))
    found = []
    for e in ranked:
        numbers, point = module_numbers(e.candidate.code), {}
        for p in space:
            x = coordinate(p, numbers[p.name]) if p.name in numbers else None
            if x is not None:
                low, high = bounds(p)
                point[p.name] = min(high, max(low, x))
        found.append(point)
    return found


def fit(space: Sequence[Param], evaluated: Sequence[Evaluated]) -> Model:
    """The model of the evaluated programs (at the full budget, each by its fitness over its seeds)."""
    space = tuple(p for p in space if bounds(p)[0] < bounds(p)[1])
    points = observations(space, evaluated)
    if len(points) < STARTUP:
        return Model(space, None, None)
    n_good = min(math.ceil(GAMMA * len(points)), MAX_GOOD)

    def densities(group: list[dict[str, float]]) -> tuple[Density, ...]:
        return tuple(parzen([pt[p.name] for pt in group if p.name in pt], *bounds(p)) for p in space)

    return Model(space, densities(points[:n_good]), densities(points[n_good:]))


def propose(model: Model, rng: np.random.Generator) -> dict[str, float | int]:
    """Values for every constant of the space: the best of CANDIDATES draws from l by l / g, or a uniform draw."""
    if model.good is None or model.bad is None:
        return {p.name: value(p, rng.uniform(*bounds(p))) for p in model.space}
    drawn = [good.sample(rng, CANDIDATES) for good in model.good]
    # Scored where they will be written: a power of two's exponent once rounded.
    written = [np.array([coordinate(p, value(p, x)) for x in xs]) for p, xs in zip(model.space, drawn)]
    score = sum(good.log_pdf(xs) - bad.log_pdf(xs) for good, bad, xs in zip(model.good, model.bad, written))
    best = int(np.argmax(score))
    return {p.name: value(p, xs[best]) for p, xs in zip(model.space, drawn)}


def model_child(parent: Genome, proposal: dict[str, float | int]) -> Genome | None:
    """The parent with the proposed constants written in where they differ from its own, each edit replacing the
    parent's at that constant; None when none differs, or the edits do not apply or compile."""
    numbers = module_numbers(parent.code)
    edits = tuple(Edit(ORIGIN, name, format_number(v), f"{name} → {format_number(v)}") for name, v in proposal.items()
                  if name in numbers and float(format_number(v)) != numbers[name])
    if not edits:
        return None
    sites = {e.site for e in edits}
    kept = Genome(parent.seed_source, tuple(e for e in parent.edits if e.site not in sites))
    code = compiled_code(parent.seed_source, kept.edits + edits, "model child")
    return None if code is None else kept.with_edits(*edits, code=code)

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

Proposals also know what they cost. The box lets width, depth and the MLP
ratio each grow fourfold, so a draw can ask for 50× the seed's compute per
token, which at a fixed token budget is a timeout: a slot spent for
nothing. Beside the densities the model fits the log of each evaluation's
seconds as a linear function of the coordinates (ridge regression: compute
is close to a product of powers of the sizes, and a coordinate is a log),
a timed-out one counted at the limit it hit; a draw predicted to need more
than a share of the time limit (`cost_share`, default COST_SHARE) is not proposed while a cheaper one is.
The fit also says how little it knows: a move in a direction no timed
program took may cost far more than predicted (`Cost.upper_ratio`), and the
run starts such children first (evocode.evolve), so that a generation does
not wait on one that turned out slow.
Until programs with different constants have been timed, what a draw costs
is unknown, so startup draws stay within a share of the box's reach from
the seed's values (`reach`; the default half keeps a power of two within one
doubling, other positives within a factor of 2): at the default limit, five
times the seed's time, the full box's corners time out in two draws out of
five, and the rest of the first generation waits for the slowest draws. Where
the limit leaves more room (the search benchmark's 60 s is about ten times
the seed's time at 50k tokens), the whole box finds the far corners that the
best programs sit in, and a draw that cannot finish is stopped early for its
pace (evocode.evaluation.feeder), not at the limit.
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
# By default a draw is proposed only if its predicted seconds are at most this share of the time limit: the prediction
# comes from a handful of programs and a log time's error is easily a factor of 1.5, so half the limit leaves the margin.
COST_SHARE = 0.5
RIDGE = 1.0  # the cost model's penalty on slopes: with few programs, an unseen constant is assumed not to cost
# ...but it may: what the cost model does not know is spread as if each slope were drawn with this σ (log seconds per
# coordinate step, a doubling of a size), so a move no timed program made is uncertain in proportion to its length.
PRIOR_SLOPE = math.log(2)
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
class Cost:
    """log seconds = intercept + slopes · (coordinates − center), and the limit a proposal must keep clear of."""

    space: tuple[Param, ...]
    center: np.ndarray  # the seed's coordinates
    intercept: float
    slopes: np.ndarray
    limit_s: float | None
    spread: np.ndarray  # the slopes' covariance: how little the timed programs say about each direction

    def affordable(self, points: np.ndarray, share: float) -> np.ndarray:
        """Which rows (coordinate vectors) are predicted to take at most that share of the limit."""
        if self.limit_s is None:
            return np.ones(len(points), dtype=bool)
        return self.log_seconds(points) <= math.log(share * self.limit_s)

    def log_seconds(self, points: np.ndarray) -> np.ndarray:
        return self.intercept + (points - self.center) @ self.slopes

    def point(self, code: str) -> np.ndarray:
        """The program's coordinates; a constant it lacks (or has no coordinate for) sits at the seed's value."""
        numbers = module_numbers(code)
        xs = [coordinate(p, numbers[p.name]) if p.name in numbers else None for p in self.space]
        return np.array([c if x is None else x for x, c in zip(xs, self.center)])

    def ratio(self, code: str, than: str) -> float:
        """How many times as long the program code is predicted to take as the program than."""
        return math.exp(float(self._move(code, than) @ self.slopes))

    def upper_ratio(self, code: str, than: str) -> float:
        """The ratio one standard deviation of the slopes' uncertainty above the prediction: the predicted ratio for
        moves like those of the timed programs, far more for a long move in a direction none of them took."""
        move = self._move(code, than)
        return math.exp(float(move @ self.slopes) + math.sqrt(max(0.0, float(move @ self.spread @ move))))

    def _move(self, code: str, than: str) -> np.ndarray:
        """From the program than to the program code, in coordinates: log seconds differ by its product with the slopes."""
        return self.point(code) - self.point(than)


@dataclass(frozen=True)
class Model:
    """Per constant, the densities of good (l) and bad (g) programs' values (None before STARTUP observations), and
    what a program costs."""

    space: tuple[Param, ...]
    good: tuple[Density, ...] | None
    bad: tuple[Density, ...] | None
    cost: Cost | None
    reach: float  # how far from the seed's values a startup draw goes while costs are unknown: a share of the box's reach
    cost_share: float  # the share of the time limit a proposal is predicted to take at most


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


def fit(space: Sequence[Param], evaluated: Sequence[Evaluated], limit_s: float | None = None, reach: float = 0.5,
        cost_share: float = COST_SHARE) -> Model:
    """The model of the evaluated programs (at the full budget, each by its fitness over its seeds), and of their
    cost under the per-candidate time limit limit_s (None: no limit, any cost will do); reach: the share of the
    box's reach from the seed that startup draws keep to until what a program costs is known; cost_share: the
    share of the limit a proposal may be predicted to take while a cheaper one is at hand."""
    space = tuple(p for p in space if bounds(p)[0] < bounds(p)[1])
    cost = fit_cost(space, evaluated, limit_s)
    points = observations(space, evaluated)
    if len(points) < STARTUP:
        return Model(space, None, None, cost, reach, cost_share)
    n_good = min(math.ceil(GAMMA * len(points)), MAX_GOOD)

    def densities(group: list[dict[str, float]]) -> tuple[Density, ...]:
        return tuple(parzen([pt[p.name] for pt in group if p.name in pt], *bounds(p)) for p in space)

    return Model(space, densities(points[:n_good]), densities(points[n_good:]), cost, reach, cost_share)


def fit_cost(space: Sequence[Param], evaluated: Sequence[Evaluated], limit_s: float | None) -> Cost | None:
    """Ridge regression of log wall seconds on the coordinates, over the programs that finished or timed out (a
    timeout at the limit it was killed at: at least that long); None until two timed programs differ in a constant."""
    space = tuple(space)
    timed = [e for e in evaluated if e.result.status in ("ok", "timeout") and e.result.wall_seconds > 0]
    if not space:
        return None
    center = np.array([coordinate(p, p.value) for p in space], dtype=float)
    unfitted = Cost(space, center, 0.0, np.zeros(len(space)), limit_s, np.zeros((len(space), len(space))))
    x = np.array([unfitted.point(e.candidate.code) for e in timed]).reshape(len(timed), len(space)) - center
    if len(timed) < 2 or not np.ptp(x, axis=0).any():
        return None  # no program moved a constant (or none has a time): nothing says what one costs
    y = np.array([math.log(e.result.wall_seconds if e.result.status == "ok" else max(e.result.wall_seconds, limit_s or 0.0))
                  for e in timed])
    mean_x, mean_y = x.mean(axis=0), y.mean()
    xc = x - mean_x
    slopes = np.linalg.solve(xc.T @ xc + RIDGE * np.eye(len(space)), xc.T @ (y - mean_y))
    # The slopes' posterior under a Gaussian prior of σ PRIOR_SLOPE each, the residuals' spread as the noise.
    noise = max(float(np.sum((y - mean_y - xc @ slopes) ** 2)) / max(1, len(y) - 1), 0.01)
    spread = np.linalg.inv(xc.T @ xc / noise + np.eye(len(space)) / PRIOR_SLOPE**2)
    return Cost(space, center, float(mean_y - mean_x @ slopes), slopes, limit_s, spread)


def propose(model: Model, rng: np.random.Generator) -> dict[str, float | int]:
    """Values for every constant of the space: of CANDIDATES draws, from l (or, before the densities, uniform in the
    box), the affordable ones compete by l / g (or the first is taken); when none is affordable, the cheapest."""
    startup = model.good is None or model.bad is None
    box = bounds if model.cost is not None else (lambda p: within(p, model.reach))
    drawn = [rng.uniform(*box(p), size=CANDIDATES) for p in model.space] if startup else \
        [good.sample(rng, CANDIDATES) for good in model.good]
    # Scored and costed where they will be written: a power of two's exponent once rounded.
    written = [np.array([coordinate(p, value(p, x)) for x in xs]) for p, xs in zip(model.space, drawn)]
    score = np.zeros(CANDIDATES) if startup else \
        sum(good.log_pdf(xs) - bad.log_pdf(xs) for good, bad, xs in zip(model.good, model.bad, written))
    if model.cost is not None:
        points = np.stack(written, axis=1)
        affordable = model.cost.affordable(points, model.cost_share)
        score = np.where(affordable, score, -np.inf) if affordable.any() else -model.cost.log_seconds(points)
    best = int(np.argmax(score))
    return {p.name: value(p, xs[best]) for p, xs in zip(model.space, drawn)}


def within(p: Param, reach: float) -> tuple[float, float]:
    """The constant's range shrunk toward the seed's value to the share reach: where a draw of unknown cost stays."""
    low, high = bounds(p)
    x = min(high, max(low, coordinate(p, p.value)))
    return x - (x - low) * reach, x + (high - x) * reach


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

"""Credit: which mutators and sites helped, learned from paired differences, and drawing mutators by it.

The unit of evidence is a pair: a mutant and its parent trained on the same
evaluation seed. Its Δ = parent's val_bpb − child's (positive: the change
helped) is far less noisy than either score, because both programs share
batches and initialization. A pair is evidence about an edit only when that
edit is the child's one new edit: with several, the pair cannot say which
one made the difference (a useless edit riding along with a good one would
be credited with its gain). A child that failed (crash, timeout, ...) is a
try that did not improve. Crossover children are not credited: what changed
is a recombination, not a mutator's edit; nor are stacked children
(evocode.search.stacking): their change was chosen for having helped
already, so counting it again would inflate its mutator's share; nor are
model children (evocode.search.parzen): their edits are many constants set
at once by the model, not one mutator's edit.

Credit is derived from the stored evaluations and lineage, never stored
beside them, so a resumed run computes exactly the credit the uninterrupted
run had, and `status` and `what-helped` read it from any run directory.

Drawing is Thompson sampling on the share of tries that improved
(Beta(1 + improved, 1 + not improved) per arm), at two levels: the mutator
with the highest draw is tried first, and a mutator that can act at several
sites proposes a few edits, of which the one whose mutator × site has the
highest draw is taken. With an exploration floor, a share of the picks at
each level stays uniform, so no operator or site dies for good. The draws
come from the generation's generator only, so runs replay.
"""

from __future__ import annotations

import statistics
from dataclasses import dataclass
from typing import Callable, Sequence

import numpy as np

from evocode.genome import Edit, edits_from_json
from evocode.mutation import Mutator, pick
from evocode.program import Program
from evocode.search.noise import scores_by_seed
from evocode.search.steps import log_step, step_sizes
from evocode.store import Evaluated

# Share of picks (of mutators, and of sites) made uniformly, whatever the credit says.
EXPLORATION_FLOOR = 0.2
# How many edits a mutator proposes for credit to choose a site from.
PROPOSALS = 3


@dataclass(frozen=True)
class Trial:
    """One new edit of a mutant and what its pair showed: Δ, or None when the child failed; for an edit of a
    module-level number, its step log2(new / old)."""

    mutator: str
    site: str
    delta: float | None
    step: float | None = None

    @property
    def improved(self) -> bool:
        return self.delta is not None and self.delta > 0


@dataclass(frozen=True)
class Credit:
    """What the tries of one mutator (or mutator × site) showed."""

    label: str
    tries: int
    improved: int
    mean_delta: float | None  # over the tries whose child trained; None when none did

    @property
    def share_improved(self) -> float:
        return self.improved / self.tries if self.tries else 0.0


def paired_delta(parent: Evaluated, child: Evaluated) -> float | None:
    """Parent's val_bpb − child's, averaged over the evaluation seeds both were trained with; None when the child failed."""
    ours, theirs = scores_by_seed(child), scores_by_seed(parent)
    common = sorted(set(ours) & set(theirs))
    if child.result.status != "ok" or not common:
        return None
    return statistics.mean(theirs[s] - ours[s] for s in common)


def new_edits(parent: Evaluated, child: Evaluated) -> tuple[Edit, ...]:
    """The edits the child added to its parent's (a mutant is its parent's edits, then its own)."""
    inherited = edits_from_json(parent.candidate.genome)
    edits = edits_from_json(child.candidate.genome)
    if edits[: len(inherited)] == inherited:
        return edits[len(inherited):]
    return tuple(e for e in edits if e not in inherited)


def trials(evaluated: Sequence[Evaluated]) -> list[Trial]:
    """The new edit of every evaluated one-edit mutant whose parent trained, with its pair's Δ."""
    by_id = {e.candidate.id: e for e in evaluated}
    found = []
    for child in evaluated:
        if child.candidate.origin != "mutation":
            continue
        parent = by_id.get(child.candidate.parents[0])
        if parent is None or parent.result.status != "ok":
            continue
        edits = new_edits(parent, child)
        if len(edits) == 1:
            (edit,) = edits
            step = log_step(parent.candidate.code, child.candidate.code, edit.site) if edit.site.isidentifier() else None
            found.append(Trial(edit.mutator, edit.site, paired_delta(parent, child), step))
    return found


def credit_by(found: Sequence[Trial], key: Callable[[Trial], str]) -> dict[str, Credit]:
    """The trials grouped by key (a mutator's name, or mutator and site), each group summed up."""
    groups: dict[str, list[Trial]] = {}
    for trial in found:
        groups.setdefault(key(trial), []).append(trial)
    return {label: _credit(label, group) for label, group in groups.items()}


def _credit(label: str, group: list[Trial]) -> Credit:
    deltas = [t.delta for t in group if t.delta is not None]
    return Credit(label, len(group), sum(t.improved for t in group), statistics.mean(deltas) if deltas else None)


def by_mutator(trial: Trial) -> str:
    return trial.mutator


def by_site(trial: Trial) -> str:
    return f"{trial.mutator} @ {trial.site}"


def mutator_weights(names: Sequence[str], found: Sequence[Trial], rng: np.random.Generator,
                    floor: float = EXPLORATION_FLOOR) -> np.ndarray:
    """Probabilities that each mutator goes first in a mutation step: one Thompson draw, with an exploration floor.

    The mutator with the highest draw from its Beta posterior gets 1 − floor
    on top of the floor / M that every mutator gets. mutate() tries the rest
    in a weighted order, so when the favourite has no site another one acts.
    """
    credit = credit_by(found, by_mutator)
    weights = np.full(len(names), floor / len(names))
    weights[int(np.argmax(_thompson(credit, names, rng)))] += 1.0 - floor
    return weights


def _thompson(credit: dict[str, Credit], labels: Sequence[str], rng: np.random.Generator) -> list[float]:
    """One draw per arm from its Beta posterior on the share of tries that improve; an untried arm draws from Beta(1, 1)."""
    stats = [credit.get(label, Credit(label, 0, 0, None)) for label in labels]
    return [rng.beta(1 + c.improved, 1 + c.tries - c.improved) for c in stats]


class SiteByCredit(Mutator):
    """A mutator whose site is chosen by credit: it proposes up to PROPOSALS edits, and of the distinct sites
    among them the one whose mutator × site has the highest Thompson draw is taken (a uniform one with the
    exploration floor's probability). It keeps the wrapped mutator's name, category and hypothesis."""

    def __init__(self, inner: Mutator, site_credit: dict[str, Credit], floor: float = EXPLORATION_FLOOR) -> None:
        self.inner, self.site_credit, self.floor = inner, site_credit, floor
        self.name, self.category = inner.name, inner.category

    @property
    def hypothesis(self) -> str:
        return self.inner.hypothesis

    def propose(self, program: Program, rng: np.random.Generator) -> Edit | None:
        edits: dict[str, Edit] = {}
        for _ in range(PROPOSALS):
            edit = self.inner.propose(program, rng)
            if not isinstance(edit, Edit):
                break  # no site now, or a misbehaving plugin: mutate() reports what it returned
            edits.setdefault(edit.site, edit)
        if not edits:
            return edit
        options = list(edits.values())
        if len(options) == 1 or rng.random() < self.floor:
            return pick(rng, options)
        labels = [by_site(Trial(e.mutator, e.site, None)) for e in options]
        return options[int(np.argmax(_thompson(self.site_credit, labels, rng)))]


def credited(mutators: Sequence[Mutator], found: Sequence[Trial], adaptive_steps: bool = True) -> list[Mutator]:
    """The mutators, each choosing among the sites it proposes by the credit of mutator × site, and (with
    adaptive_steps) sizing its numeric steps by what the steps at each constant showed (evocode.search.steps)."""
    sites = credit_by(found, by_site)
    if adaptive_steps:
        steps = step_sizes([(t.site, t.step, t.improved) for t in found if t.step is not None])
        mutators = [m.advised(steps) for m in mutators]
    return [SiteByCredit(m, sites) for m in mutators]


def what_helped_rows(evaluated: Sequence[Evaluated], per_site: bool = False) -> list[Credit]:
    """The what-helped table: per mutator (or mutator × site), best mean paired Δ first; mutators never tried are absent."""
    credit = credit_by(trials(evaluated), by_site if per_site else by_mutator)
    return sorted(credit.values(), key=lambda c: (c.mean_delta is None, -(c.mean_delta or 0.0), c.label))


def format_what_helped(rows: Sequence[Credit]) -> str:
    """The table as `status` and `what-helped` print it; Δ is in bits per byte, positive means the edit helped."""
    if not rows:
        return "what helped:      no mutant has been compared with its parent yet"
    width = max(len("mutator"), *(len(r.label) for r in rows))
    lines = ["what helped (paired with the parent on the same evaluation seed):",
             f"  {'mutator':<{width}}  tries  mean Δ bpb  improved"]
    for r in rows:
        delta = "-" if r.mean_delta is None else f"{r.mean_delta:+.4f}"
        lines.append(f"  {r.label:<{width}}  {r.tries:>5}  {delta:>10}  {100 * r.share_improved:>7.0f}%")
    return "\n".join(lines)

"""Distill a winner: which of its edits carry the gain, the fewest that keep it, and whether they transfer.

The steps, each measured on evaluation seeds the run never used, and each
comparison paired by seed (the same batches and initialization for both
programs), so the noise of a seed cancels:

1. simplify the edit list without changing the program (evocode.insight.simplify);
2. ablate: the full set less each edit, and (for at most MAX_ALONE edits)
   each edit alone on the seed;
3. find a minimal set greedily: starting from the full set, drop the edits in
   order of how little their removal cost, keeping a drop when the smaller
   set's val_bpb is within noise of the full set's; then measure what each
   remaining edit contributes (the minimal set less that edit);
4. transfer: the seed, the minimal set and the minimal set less each edit
   under each transfer condition (a larger budget, another corpus).

"Within noise" means the mean paired loss is at most NOISE_SE standard
errors of the mean. Every evaluation goes through evocode.insight.measurements,
which stores it and never trains the same (program, seed, budget, corpus)
twice, so each step's decisions, all pure functions of stored results,
replay exactly when a killed distill is run again.
"""

from __future__ import annotations

import math
import statistics
from dataclasses import dataclass
from typing import Callable

from evocode.genome import Edit, apply_applicable_edits
from evocode.insight.measurements import Condition, Measurements
from evocode.insight.simplify import simplify_edits

MAX_ALONE = 8  # each-alone ablation costs one program per edit: beyond this many, leave-one-out only
NOISE_SE = 2.0
HEADER = ["edit", "alone", "removed", "in minimal set", "transfers"]


@dataclass(frozen=True)
class Paired:
    """A difference of val_bpb paired by evaluation seed: its mean, sample σ and seed count."""

    mean: float
    sd: float
    n: int

    @property
    def se(self) -> float:
        return self.sd / math.sqrt(self.n)

    def within_noise(self) -> bool:
        """Whether a loss this size is indistinguishable from none (or is a gain)."""
        return self.mean <= NOISE_SE * self.se

    def holds(self) -> bool:
        """Whether a gain this size is real: above zero by more than the noise."""
        return self.mean > NOISE_SE * self.se

    def __str__(self) -> str:
        return f"{self.mean:+.4f} ± {self.sd:.4f}"


def paired(worse: list[float | None], better: list[float | None]) -> Paired | None:
    """How much lower `better` is than `worse`, seed by seed; None when either failed on some seed."""
    if any(v is None for v in worse + better):
        return None
    diffs = [w - b for w, b in zip(worse, better)]
    return Paired(statistics.fmean(diffs), statistics.stdev(diffs) if len(diffs) > 1 else 0.0, len(diffs))


@dataclass(frozen=True)
class Transfer:
    label: str
    condition: Condition


@dataclass(frozen=True)
class EditFinding:
    edit: Edit
    alone: Paired | None | str  # gain of the seed with only this edit; a string says why it was not measured
    removed: Paired | None  # how much gain the full set loses without this edit
    contribution: Paired | None  # in the minimal set: how much gain it loses without this edit; None when not in it
    in_minimal: bool
    transfers: dict[str, Paired | None]  # per transfer label, the contribution there (edits of the minimal set)


@dataclass(frozen=True)
class Distillation:
    edits: tuple[Edit, ...]  # the simplified edit list
    dropped: tuple[Edit, ...]  # edits simplification removed (the program stayed the same)
    seeds: tuple[int, ...]
    full_gain: Paired | None
    minimal: tuple[int, ...]  # indices into edits
    minimal_code: str
    minimal_gain: Paired | None
    minimal_loss: Paired | None  # the minimal set's val_bpb less the full set's
    transfer_gains: dict[str, Paired | None]
    findings: tuple[EditFinding, ...]


class _Subsets:
    """Programs made of subsets of the edit list, and their val_bpb per seed under a condition."""

    def __init__(self, seed_source: str, edits: tuple[Edit, ...], measurements: Measurements, seeds: tuple[int, ...]) -> None:
        self.seed_source, self.edits, self.measurements, self.seeds = seed_source, edits, measurements, seeds
        self._codes: dict[frozenset[int], str] = {}  # applying edits costs a parse per edit; each subset is asked for often

    def code(self, subset: frozenset[int]) -> str:
        if subset not in self._codes:
            # An edit whose site only an edit left out creates is skipped: the program is what the rest make.
            self._codes[subset] = apply_applicable_edits(self.seed_source, [self.edits[i] for i in sorted(subset)])[0]
        return self._codes[subset]

    def measure(self, subsets: list[frozenset[int]], condition: Condition) -> None:
        self.measurements.measure([self.code(s) for s in subsets], self.seeds, condition)

    def bpb(self, subset: frozenset[int], condition: Condition) -> list[float | None]:
        code = self.code(subset)
        results = [self.measurements.get(code, seed, condition) for seed in self.seeds]
        return [r.val_bpb if r is not None and r.status == "ok" else None for r in results]

    def gain(self, worse: frozenset[int], better: frozenset[int], condition: Condition) -> Paired | None:
        return paired(self.bpb(worse, condition), self.bpb(better, condition))


def _removal_order(subsets: _Subsets, full: frozenset[int], condition: Condition) -> list[int]:
    """Edits by how little the full set loses without them (a removal that fails goes last), ties by position."""
    def cost(i: int) -> float:
        loss = subsets.gain(full - {i}, full, condition)
        return math.inf if loss is None else loss.mean

    return sorted(full, key=lambda i: (cost(i), i))


def minimal_subset(subsets: _Subsets, full: frozenset[int], condition: Condition, log: Callable[[str], None]) -> frozenset[int]:
    """Greedy backward elimination: drop each edit whose removal keeps val_bpb within noise of the full set's."""
    kept = full
    for i in _removal_order(subsets, full, condition):
        trial = kept - {i}
        subsets.measure([trial], condition)
        loss = subsets.gain(trial, full, condition)
        if loss is not None and loss.within_noise():
            kept = trial
        log(f"without {subsets.edits[i].description!r}: loss against the full set {loss or 'fails'} -> "
            f"{'dropped' if kept == trial else 'kept'}")
    return kept


def distill(
    seed_source: str, edits: tuple[Edit, ...], measurements: Measurements, seeds: tuple[int, ...],
    base: Condition, transfers: tuple[Transfer, ...], log: Callable[[str], None] = lambda _: None,
) -> Distillation:
    """Ablate, minimize and transfer-check an edit list; see the module's docstring for the steps."""
    simplified, dropped = simplify_edits(seed_source, edits)
    subsets = _Subsets(seed_source, simplified, measurements, seeds)
    n, none = len(simplified), frozenset()
    full = frozenset(range(n))
    alone = [frozenset({i}) for i in range(n)] if n <= MAX_ALONE else []
    log(f"ablation: {n} edits ({len(dropped)} dropped by simplification), {len(seeds)} seeds")
    subsets.measure([none, full, *(full - {i} for i in range(n)), *alone], base)
    minimal = minimal_subset(subsets, full, base, log)
    subsets.measure([minimal - {i} for i in minimal], base)
    transfer_gains, transfer_contributions = {}, {}
    for transfer in transfers if minimal else ():  # an empty minimal set is the seed: nothing to transfer
        log(f"transfer: {transfer.label}")
        subsets.measure([none, minimal, *(minimal - {i} for i in minimal)], transfer.condition)
        transfer_gains[transfer.label] = subsets.gain(none, minimal, transfer.condition)
        transfer_contributions[transfer.label] = {i: subsets.gain(minimal - {i}, minimal, transfer.condition) for i in minimal}
    findings = tuple(
        EditFinding(
            edit=edit,
            alone=subsets.gain(none, frozenset({i}), base) if n <= MAX_ALONE else f"not measured (over {MAX_ALONE} edits)",
            removed=subsets.gain(full - {i}, full, base),
            contribution=subsets.gain(minimal - {i}, minimal, base) if i in minimal else None,
            in_minimal=i in minimal,
            transfers={label: by_edit[i] for label, by_edit in transfer_contributions.items() if i in by_edit},
        )
        for i, edit in enumerate(simplified)
    )
    return Distillation(
        edits=simplified, dropped=dropped, seeds=seeds, full_gain=subsets.gain(none, full, base),
        minimal=tuple(sorted(minimal)), minimal_code=subsets.code(minimal), minimal_gain=subsets.gain(none, minimal, base),
        minimal_loss=subsets.gain(minimal, full, base), transfer_gains=transfer_gains, findings=findings,
    )


def _cell(value: Paired | None | str) -> str:
    return "fails" if value is None else str(value)


def table_rows(d: Distillation) -> list[list[str]]:
    """One row per edit of the simplified list: edit | alone | removed | in minimal set | transfers."""
    return [
        [f.edit.description, _cell(f.alone), _cell(f.removed),
         f"yes: {_cell(f.contribution)}" if f.in_minimal else "no",
         "; ".join(f"{_cell(v)} at {label}" for label, v in f.transfers.items()) or "-"]
        for f in d.findings
    ]


def summary(d: Distillation, budget: int, run_seed: int) -> str:
    """What the table's numbers are, and the verdicts, in a few sentences."""
    parts = [
        f"Gains in bits per byte: the worse program's val_bpb less the better one's, paired by evaluation seed "
        f"(seeds {', '.join(map(str, d.seeds))}; the run used {run_seed}), mean ± σ over seeds, at {budget} tokens. "
        "alone: the seed with only this edit against the seed; removed: what the full set loses without the edit; "
        "in minimal set: what the minimal set loses without it; transfers: the same under each transfer condition.",
        f"The full set ({len(d.edits)} edits) gains {_cell(d.full_gain)} over the seed; the minimal set "
        f"({len(d.minimal)} edits) gains {_cell(d.minimal_gain)}, {_cell(d.minimal_loss)} less than the full set "
        f"({'within noise' if d.minimal_loss is not None and d.minimal_loss.within_noise() else 'not within noise'}).",
    ]
    if d.dropped:
        parts.append(f"Simplification dropped {len(d.dropped)} edits that did not change the program: "
                     + "; ".join(e.description for e in d.dropped) + ".")
    for label, gain in d.transfer_gains.items():
        verdict = "holds" if gain is not None and gain.holds() else "does not hold beyond noise"
        parts.append(f"At {label} the minimal set gains {_cell(gain)} over the seed: the gain {verdict}.")
    return " ".join(parts)


def _markdown_table(rows: list[list[str]]) -> str:
    lines = ["| " + " | ".join(HEADER) + " |", "|" + " --- |" * len(HEADER)]
    return "\n".join(lines + ["| " + " | ".join(cell.replace("|", "\\|") for cell in row) + " |" for row in rows]) + "\n"


def distill_markdown(d: Distillation, title: str, text: str, command: str) -> str:
    """distill.md: what was distilled and how, the verdicts, the table, and the minimal set's edits."""
    minimal = "\n".join(f"{k}. {d.edits[i].description}" for k, i in enumerate(d.minimal, 1)) or "(none: no edit carries a gain beyond noise)"
    return (f"# {title}\n\n`{command}`\n\n{text}\n\n{_markdown_table(table_rows(d))}\n"
            f"Minimal set (minimal.py, minimal.diff):\n\n{minimal}\n")

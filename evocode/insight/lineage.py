"""Where a candidate came from: its ancestry back to the seed, and the path of edits from the seed to it.

Two views of the same history. The ancestry is the tree of parents the search
actually took (mutations and crossovers, with each ancestor's score); the edit
path is the candidate's own edit list applied one edit at a time, which is
what a person reviews and what `export` turns into commits. A prefix of the
edit path was measured in the run when some evaluated candidate has exactly
its program (by code hash), which is how a commit earns a measured Δ.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Mapping

import libcst as cst

from evocode.genome import Edit, apply_edit, code_hash, edits_from_json
from evocode.store import Evaluated


@dataclass(frozen=True)
class Ancestor:
    """One candidate in an ancestry tree: what it added over its parents, and its parents' trees.

    ``repeated`` marks a candidate already shown elsewhere in the tree (crossover
    joins lines), whose parents are not shown again.
    """

    evaluated: Evaluated
    new_edits: tuple[Edit, ...]
    parents: tuple["Ancestor", ...]
    repeated: bool = False


def ancestry(by_id: Mapping[str, Evaluated], candidate_id: str) -> Ancestor:
    """The tree of parents of candidate_id; by_id maps candidate ids to evaluated candidates."""
    shown: set[str] = set()

    def node(cid: str) -> Ancestor:
        e = by_id[cid]
        if cid in shown:
            return Ancestor(e, (), (), repeated=True)
        shown.add(cid)
        return Ancestor(e, new_edits(by_id, e), tuple(node(p) for p in e.candidate.parents if p in by_id))

    return node(candidate_id)


def new_edits(by_id: Mapping[str, Evaluated], e: Evaluated) -> tuple[Edit, ...]:
    """The edits of e that none of its parents had: what this step of the search tried."""
    inherited = {edit for p in e.candidate.parents if p in by_id for edit in edits_from_json(by_id[p].candidate.genome)}
    return tuple(edit for edit in edits_from_json(e.candidate.genome) if edit not in inherited)


@dataclass(frozen=True)
class Step:
    """The edit path's k-th program: the seed with the first k edits; ``measured`` is the run's evaluation of it, if any."""

    edit: Edit
    code: str
    measured: Evaluated | None


def edit_path(seed_source: str, edits: tuple[Edit, ...], evaluated: tuple[Evaluated, ...]) -> list[Step]:
    """The programs the edits make one at a time, each with the run's measurement of it when the run had it."""
    by_hash = {e.candidate.code_hash: e for e in evaluated if e.result.status == "ok"}
    module = cst.parse_module(seed_source)
    steps = []
    for edit in edits:
        module = apply_edit(module, edit)
        steps.append(Step(edit, module.code, by_hash.get(code_hash(module.code))))
    return steps

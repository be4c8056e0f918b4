"""A candidate as the seed plus an ordered list of edits, and how edits become code.

The seed is the only hand-written program; every other program is derived by
applying edits to it with LibCST, so code the edits do not touch keeps its
formatting and comments. Edits name their site by address (see
evocode.program), which is what makes crossover, lineage and ablation work on
edit lists rather than on text.

An edit whose site does not exist in the program it is applied to is an
error (SiteNotFound): a genome's edits always apply, because mutation only
proposes edits on the program at hand and crossover drops, and counts, the
edits whose site a recombination lost (apply_applicable_edits).
"""

from __future__ import annotations

import ast
import hashlib
import json
import re
from dataclasses import asdict, dataclass, field
from functools import cached_property
from typing import Iterable, Mapping

import libcst as cst

from evocode.program import EXPRESSION, Site, SiteNotFound, index_sites, resolve

__all__ = [
    "Edit", "EditError", "Genome", "PROGRAM_SITE", "SiteNotFound", "apply_applicable_edits", "apply_edits", "code_hash",
    "edits_from_json", "edits_to_json",
]


class EditError(ValueError):
    """An edit's code does not fit its site (does not parse, or has the wrong shape)."""


@dataclass(frozen=True)
class Edit:
    """One change: which mutator made it, where (an address), what it writes there, and why, in one line.

    ``code`` replaces the site: an expression for an expression site, zero or
    more statements for a statement site ("" deletes it), a tuple of
    expressions for a compound address.
    """

    mutator: str
    site: str
    code: str
    description: str

    def to_dict(self) -> dict[str, str]:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, str]) -> Edit:
        return cls(data["mutator"], data["site"], data["code"], data["description"])


def code_hash(source: str) -> str:
    """The program's identity: a hash of its syntax tree, so formatting and comments do not count.

    Docstrings do count: they are string constants of the program (and reach
    ``__doc__``), whereas comments are not part of the program at all.
    """
    return hashlib.sha256(ast.dump(ast.parse(source)).encode()).hexdigest()


class _Replace(cst.CSTTransformer):
    def __init__(self, replacements: dict[cst.CSTNode, object]) -> None:
        self.replacements = replacements

    def on_leave(self, original_node, updated_node):
        return self.replacements.get(original_node, updated_node)


_OPERATORS = (cst.BinaryOperation, cst.BooleanOperation, cst.Comparison, cst.IfExp, cst.Lambda, cst.UnaryOperation)


def _expression(code: str, site: Site) -> cst.BaseExpression:
    try:
        new = cst.parse_expression(code)
    except cst.ParserSyntaxError as e:
        raise EditError(f"code for {site.address!r} is not an expression: {code!r}") from e
    # A call can sit inside a larger expression; an operator written there must stay one operand.
    if site.locator.endswith("()") and isinstance(new, _OPERATORS) and not new.lpar:
        new = new.with_changes(lpar=[cst.LeftParen()], rpar=[cst.RightParen()])
    return new


def _statements(code: str, site: Site) -> object:
    try:
        body = cst.parse_module(code).body
    except cst.ParserSyntaxError as e:
        raise EditError(f"code for {site.address!r} is not statements: {code!r}") from e
    if not body:
        return cst.RemovalSentinel.REMOVE
    # Comments above the replaced statement stay above what replaces it.
    first = body[0].with_changes(leading_lines=site.node.leading_lines)
    return cst.FlattenSentinel([first, *body[1:]])


def _replacements(sites: list[Site], code: str) -> dict[cst.CSTNode, object]:
    if len(sites) == 1:
        site = sites[0]
        new = _expression(code, site) if site.kind == EXPRESSION else _statements(code, site)
        return {site.node: new}
    try:
        values = cst.parse_expression(code)
    except cst.ParserSyntaxError as e:
        raise EditError(f"code for {sites[0].address!r}... is not a tuple: {code!r}") from e
    if not isinstance(values, cst.Tuple) or len(values.elements) != len(sites):
        raise EditError(f"a compound site of {len(sites)} needs a tuple of {len(sites)} values, got {code!r}")
    return {site.node: element.value for site, element in zip(sites, values.elements)}


# The site of a whole program: a hand-written variant is one edit that rewrites it (no mutator proposes this site).
PROGRAM_SITE = "<program>"


def apply_edit(module: cst.Module, edit: Edit, sites: Mapping[str, Site] | None = None) -> cst.Module:
    """The module with one edit applied; SiteNotFound or EditError when it does not apply.

    ``sites`` is the module's site index when the caller has it already.
    """
    if edit.site == PROGRAM_SITE:
        try:
            return cst.parse_module(edit.code)
        except cst.ParserSyntaxError as e:
            raise EditError(f"code for {PROGRAM_SITE} is not a program: {e.message}") from e
    sites = resolve(index_sites(module) if sites is None else sites, edit.site)
    return module.visit(_Replace(_replacements(sites, edit.code)))


# A module-level constant's address: writing an expression there moves no other such address, so a run of them at
# distinct addresses can be written in one pass (a pass over the tree per edit costs ~60 ms, and programs from the
# model carry a dozen or more).
_CONSTANT = re.compile(r"^[A-Za-z_]\w*(?: #\d+)?$")


def _runs(edits: Iterable[Edit]) -> list[list[Edit]]:
    """The edits in order, consecutive edits of distinct module-level constants grouped into one run each."""
    def batchable(edit: Edit) -> bool:
        return bool(_CONSTANT.match(edit.site)) and ":=" not in edit.code  # a walrus would bind a name

    runs: list[list[Edit]] = []
    for edit in edits:
        if runs and batchable(edit) and batchable(runs[-1][0]) and edit.site not in {e.site for e in runs[-1]}:
            runs[-1].append(edit)
        else:
            runs.append([edit])
    return runs


def apply_disjoint_edits(module: cst.Module, edits: Iterable[Edit]) -> cst.Module:
    """The module with edits at distinct module-level constants applied in one pass: what applying them one after
    another gives. SiteNotFound or EditError when one does not apply."""
    index = index_sites(module)
    replacements: dict[cst.CSTNode, object] = {}
    for edit in edits:
        replacements |= _replacements(resolve(index, edit.site), edit.code)
    return module.visit(_Replace(replacements))


def apply_edits(seed_source: str, edits: Iterable[Edit]) -> str:
    """The program the edits make of the seed, applied in order; raises if any edit does not apply."""
    module = cst.parse_module(seed_source)
    for run in _runs(edits):
        module = apply_disjoint_edits(module, run) if len(run) > 1 else apply_edit(module, run[0])
    return module.code


def apply_applicable_edits(seed_source: str, edits: Iterable[Edit]) -> tuple[str, tuple[Edit, ...], tuple[Edit, ...]]:
    """Like apply_edits, but an edit whose site is missing is skipped: returns the code, the applied and the skipped edits."""
    module = cst.parse_module(seed_source)
    applied, skipped = [], []
    for run in _runs(edits):
        if len(run) > 1:
            try:
                module = apply_disjoint_edits(module, run)
            except SiteNotFound:
                pass  # one of them is missing: apply them one by one to skip just that one
            else:
                applied += run
                continue
        for edit in run:
            try:
                module = apply_edit(module, edit)
            except SiteNotFound:
                skipped.append(edit)
            else:
                applied.append(edit)
    return module.code, tuple(applied), tuple(skipped)


def compiled_code(seed_source: str, edits: tuple[Edit, ...], label: str) -> str | None:
    """The program the edits make of the seed when every one of them applies and the result compiles; None
    otherwise. For children built from edits already checked elsewhere (a helpful change, a model's constants),
    where an edit that no longer fits means no child, not an error."""
    try:
        code, _, dropped = apply_applicable_edits(seed_source, edits)
        compile(code, f"<{label}>", "exec")
    except (EditError, SyntaxError):
        return None
    return None if dropped else code


@dataclass(frozen=True)
class Genome:
    """A candidate: the seed's source and the edits that turn it into this program."""

    seed_source: str
    edits: tuple[Edit, ...] = field(default=())

    @cached_property
    def code(self) -> str:
        return apply_edits(self.seed_source, self.edits)

    @property
    def code_hash(self) -> str:
        return code_hash(self.code)

    def with_edits(self, *edits: Edit, code: str | None = None) -> Genome:
        """This genome with more edits; ``code``, when the caller just made it from these edits, saves re-applying them."""
        child = Genome(self.seed_source, self.edits + edits)
        if code is not None:
            child.__dict__["code"] = code
        return child

    def to_dict(self) -> dict:
        return {"seed_source": self.seed_source, "edits": [edit.to_dict() for edit in self.edits]}

    @classmethod
    def from_dict(cls, data: dict) -> Genome:
        return cls(data["seed_source"], tuple(Edit.from_dict(e) for e in data["edits"]))

    def to_json(self) -> str:
        return json.dumps(self.to_dict(), ensure_ascii=False)

    @classmethod
    def from_json(cls, text: str) -> Genome:
        return cls.from_dict(json.loads(text))


def edits_to_json(edits: Iterable[Edit]) -> str:
    """A candidate's edit list as the run store keeps it (the seed is stored once per run)."""
    return json.dumps([edit.to_dict() for edit in edits], ensure_ascii=False)


def edits_from_json(text: str) -> tuple[Edit, ...]:
    return tuple(Edit.from_dict(d) for d in json.loads(text))

"""The classic genetic-programming operators, deleting or duplicating a statement, restricted to safe kinds."""

from __future__ import annotations

import libcst as cst
import libcst.matchers as m
import numpy as np

from evocode.genome import Edit
from evocode.mutation import Mutator, pick
from evocode.program import STATEMENT, Program, Site

REBINDING = m.SimpleStatementLine(body=[m.Assign(targets=[m.AssignTarget(target=m.Name())])])
RESIDUAL = m.SimpleStatementLine(
    body=[
        m.Assign(targets=[m.AssignTarget(target=m.Name())], value=m.BinaryOperation(left=m.Name(), operator=m.Add()))
        | m.AugAssign(target=m.Name(), operator=m.AddAssign())
    ]
)


def _removable(statement: cst.SimpleStatementLine) -> bool:
    """``x = f(x)`` or a residual update: the name stays defined without it, and no reshaping chain
    (``x = x.view(...)``) is removed, whose absence would only break shapes."""
    assign = statement.body[0]
    name = assign.targets[0].target.value
    single_call = m.Call(args=[m.Arg(value=m.Name(name), keyword=None)])
    return m.matches(assign.value, single_call) or (m.matches(statement, RESIDUAL) and _is_residual(statement))


def _is_residual(statement: cst.SimpleStatementLine) -> bool:
    """``x = x + f(x)`` or ``x += f(x)``: applying it twice keeps shapes and adds one more residual update."""
    small = statement.body[0]
    return isinstance(small, cst.AugAssign) or small.value.left.value == small.targets[0].target.value


def _statement_sites(program: Program, shape: m.BaseMatcherNode) -> list[Site]:
    """Statement sites of the given shape that do not use the harness and are not alone in their block."""
    return [
        site
        for site in program.sites.values()
        if site.kind == STATEMENT
        and m.matches(site.node, shape)
        and "harness" not in site.locator
        and len(program.parent(site.node).body) > 1
    ]


def _line(program: Program, site: Site) -> str:
    return program.code(site.node.with_changes(leading_lines=())).rstrip("\n")


class DeleteStatement(Mutator):
    """Some steps of a model may be useless or harmful at this scale (a sublayer, a nonlinearity, a norm);
    deleting one ``x = f(x)`` or residual update tests whether the program is better without it."""

    name = "delete_statement"
    category = "architecture"

    def propose(self, program: Program, rng: np.random.Generator) -> Edit | None:
        sites = [s for s in _statement_sites(program, REBINDING) if _removable(s.node)]
        if not sites:
            return None
        site = pick(rng, sites)
        return self.edit(site.address, "", f"delete `{_line(program, site)}` in {site.scope}")


class DuplicateStatement(Mutator):
    """Applying a residual update twice (x = x + f(x)) adds depth with shared weights at no parameter cost;
    it tests whether the model is short of depth rather than of parameters."""

    name = "duplicate_statement"
    category = "architecture"

    def propose(self, program: Program, rng: np.random.Generator) -> Edit | None:
        sites = [s for s in _statement_sites(program, RESIDUAL) if _is_residual(s.node)]
        if not sites:
            return None
        site = pick(rng, sites)
        line = _line(program, site)
        return self.edit(site.address, f"{line}\n{line}\n", f"duplicate `{line}` in {site.scope}")

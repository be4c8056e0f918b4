"""A parsed program and the addresses of the sites an edit may rewrite.

An address names a place in a program so that it stays meaningful in related
programs (a parent, a sibling, a crossover child): it is built from names,
never from line numbers, so an edit elsewhere does not move it.

    ADDRESS := [SCOPE ": "] LOCATOR [" #" N]

SCOPE is the dotted name of the enclosing classes and functions
(``GPT.__init__``); it is absent at module level. LOCATOR is one of

    TARGET              the value assigned to TARGET       ``LEARNING_RATE``, ``self.ln_1``
    CALLEE "()"         the call of CALLEE                  ``F.gelu()``
    CALLEE "(" KW "=)"  the value passed as keyword KW      ``torch.optim.AdamW(eps=)``
    "{" STATEMENT "}"   a simple statement of a function    ``{x = F.gelu(x)}``
                        body, by its code (formatting and
                        comments ignored)
    "(" TARGET ", " TARGET ... ")"
                        several values of one scope edited
                        together; the edit's code is a tuple ``(BATCH_SIZE, SEQ_LEN)``

" #N" picks the N-th match of the same scope and locator in source order; the
first match has no suffix, so the common case reads plainly.
"""

from __future__ import annotations

import ast
import re
from collections import Counter
from dataclasses import dataclass
from typing import Any, Mapping

import libcst as cst
from libcst.metadata import MetadataWrapper, ParentNodeProvider, ProviderT

EXPRESSION = "expression"
STATEMENT = "statement"

_ADDRESS = re.compile(r"^(?:(?P<scope>[\w.]+): )?(?P<locator>.+?)(?: #(?P<nth>\d+))?$")


class SiteNotFound(LookupError):
    """The program has no site at this address (an edit elsewhere removed or renamed it)."""


@dataclass(frozen=True, eq=False)
class Site:
    """One addressable place: an expression to replace, or a statement to replace by zero or more statements."""

    address: str
    scope: str
    locator: str
    kind: str
    node: cst.CSTNode


def dotted_name(node: cst.CSTNode) -> str | None:
    """``torch.optim.AdamW`` for a chain of attributes on a name; None for anything else (``super().x``)."""
    if isinstance(node, cst.Name):
        return node.value
    if isinstance(node, cst.Attribute):
        base = dotted_name(node.value)
        return None if base is None else f"{base}.{node.attr.value}"
    return None


def statement_key(code: str) -> str:
    """A statement's code with formatting and comments normalized away, on one line."""
    return "; ".join(ast.unparse(ast.parse(code)).splitlines())


class _SiteCollector(cst.CSTVisitor):
    def __init__(self, module: cst.Module) -> None:
        self.module = module
        self.scopes: list[str] = []
        self.functions = 0
        self.sites: dict[str, Site] = {}
        self.counts: Counter[str] = Counter()

    def add(self, locator: str, node: cst.CSTNode, kind: str) -> None:
        scope = ".".join(self.scopes)
        key = f"{scope}: {locator}" if scope else locator
        self.counts[key] += 1
        n = self.counts[key]
        address = key if n == 1 else f"{key} #{n}"
        self.sites[address] = Site(address, scope, locator, kind, node)

    def visit_ClassDef(self, node: cst.ClassDef) -> None:
        self.scopes.append(node.name.value)

    def leave_ClassDef(self, original_node: cst.ClassDef) -> None:
        self.scopes.pop()

    def visit_FunctionDef(self, node: cst.FunctionDef) -> None:
        self.scopes.append(node.name.value)
        self.functions += 1

    def leave_FunctionDef(self, original_node: cst.FunctionDef) -> None:
        self.scopes.pop()
        self.functions -= 1

    def visit_IndentedBlock(self, node: cst.IndentedBlock) -> None:
        if not self.functions:
            return
        for statement in node.body:
            if isinstance(statement, cst.SimpleStatementLine):
                code = self.module.code_for_node(statement.with_changes(leading_lines=()))
                self.add("{" + statement_key(code) + "}", statement, STATEMENT)

    def visit_Assign(self, node: cst.Assign) -> None:
        for target in node.targets:
            name = dotted_name(target.target)
            if name:
                self.add(name, node.value, EXPRESSION)

    def visit_AnnAssign(self, node: cst.AnnAssign) -> None:
        name = dotted_name(node.target)
        if name and node.value is not None:
            self.add(name, node.value, EXPRESSION)

    def visit_Call(self, node: cst.Call) -> None:
        callee = dotted_name(node.func)
        if not callee:
            return
        self.add(f"{callee}()", node, EXPRESSION)
        for arg in node.args:
            if arg.keyword is not None:
                self.add(f"{callee}({arg.keyword.value}=)", arg.value, EXPRESSION)


def index_sites(module: cst.Module) -> dict[str, Site]:
    """Every addressable site of the module, by address, in source order."""
    collector = _SiteCollector(module)
    module.visit(collector)
    return collector.sites


def split_address(address: str) -> list[str]:
    """The plain addresses a (possibly compound) address is made of."""
    match = _ADDRESS.match(address)
    if match is None:
        raise SiteNotFound(f"malformed address {address!r}")
    locator = match["locator"]
    if not (locator.startswith("(") and locator.endswith(")") and match["nth"] is None):
        return [address]
    prefix = f"{match['scope']}: " if match["scope"] else ""
    return [prefix + target for target in locator[1:-1].split(", ")]


def resolve(sites: Mapping[str, Site], address: str) -> list[Site]:
    """The sites an address names, in the order it names them; SiteNotFound if any is missing."""
    found = []
    for part in split_address(address):
        if part not in sites:
            raise SiteNotFound(f"no site {part!r}")
        found.append(sites[part])
    if len(found) > 1 and any(site.kind != EXPRESSION for site in found):
        raise SiteNotFound(f"a compound address names expressions only: {address!r}")
    return found


def import_aliases(module: cst.Module) -> dict[str, str]:
    """What each name bound by a module-level import stands for: ``{"F": "torch.nn.functional", "torch": "torch"}``."""
    aliases = {}
    for statement in module.body:
        for small in statement.body if isinstance(statement, cst.SimpleStatementLine) else ():
            if isinstance(small, cst.Import):
                for alias in small.names:
                    full = dotted_name(alias.name)
                    if alias.asname is not None:
                        aliases[alias.asname.name.value] = full
                    else:
                        aliases[full.split(".")[0]] = full.split(".")[0]
            elif isinstance(small, cst.ImportFrom) and small.module is not None and not small.relative:
                base = dotted_name(small.module)
                for alias in small.names if isinstance(small.names, (list, tuple)) else ():
                    bound = alias.asname.name.value if alias.asname is not None else alias.name.value
                    aliases[bound] = f"{base}.{dotted_name(alias.name)}"
    return aliases


class Program:
    """One candidate program, parsed once: its LibCST module, metadata and sites, shared by every mutator.

    Metadata providers are resolved at most once per program (the wrapper
    caches them), and the sites and imports are indexed once, so a mutation
    step costs one parse however many mutators look at the program.
    """

    def __init__(self, source: str) -> None:
        self.source = source
        # The module was just parsed and is never shared, so the wrapper need not copy it.
        self.wrapper = MetadataWrapper(cst.parse_module(source), unsafe_skip_copy=True)
        self.module = self.wrapper.module
        self.sites = index_sites(self.module)
        self.aliases = import_aliases(self.module)

    def metadata(self, provider: ProviderT) -> Mapping[cst.CSTNode, Any]:
        """The mapping a LibCST metadata provider computes for this program's module (computed once)."""
        return self.wrapper.resolve(provider)

    def parent(self, node: cst.CSTNode) -> cst.CSTNode | None:
        return self.metadata(ParentNodeProvider).get(node)

    def code(self, node: cst.CSTNode) -> str:
        return self.module.code_for_node(node)

    def callee(self, call: cst.CSTNode | None) -> str | None:
        """The qualified name of what a call calls (``torch.nn.functional.gelu`` for ``F.gelu(x)``), through the
        module's imports; None for anything that is not a call of a dotted name."""
        name = dotted_name(call.func) if isinstance(call, cst.Call) else None
        if name is None:
            return None
        head, _, rest = name.partition(".")
        return ".".join(filter(None, (self.aliases.get(head, head), rest)))

    def calls(self, *qualified_names: str) -> list[Site]:
        """Call sites, in source order, whose callee is one of the qualified names."""
        return [s for s in self.sites.values() if s.locator.endswith("()") and self.callee(s.node) in qualified_names]

    def value(self, address: str) -> Any:
        """The literal value at an expression site (``3e-3``, ``True``, ``(0.9, 0.95)``), or None."""
        site = self.sites.get(address)
        if site is None or site.kind != EXPRESSION:
            return None
        try:
            return ast.literal_eval(self.code(site.node).strip())
        except (ValueError, SyntaxError):
            return None

    def constants(self) -> dict[str, int | float | bool]:
        """Module-level names first assigned a number or a boolean: the script's hyperparameters."""
        found = {}
        for address, site in self.sites.items():
            if site.scope or site.kind != EXPRESSION or not site.locator.isidentifier() or "#" in address:
                continue
            value = self.value(address)
            if isinstance(value, (int, float)):
                found[address] = value
        return found

    def imports(self, module_name: str) -> bool:
        """Whether the name ``module_name`` stands for that module in this program (``import torch``)."""
        return self.aliases.get(module_name) == module_name

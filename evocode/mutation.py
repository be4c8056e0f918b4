"""Mutators: the plugin interface, where mutators come from, and one mutation step.

A mutator reads like a LibCST codemod: a name, a category, a docstring that
states the hypothesis it tests, and one method that finds a site in a parsed
program and returns an Edit (or None when the program has no such site).
Built-ins live in the top-level ``mutators`` package; third-party mutators are
found through the entry-point group ``evocode.mutators`` or named as
``package.module:Name`` or ``path/to/file.py:Name``.

A mutator that raises, or whose edit does not apply, does not parse, does not
compile, or touches the harness, is skipped, logged by name and returned as a
Failure; it never stops a run.
"""

from __future__ import annotations

import copy
import difflib
import importlib
import importlib.metadata
import importlib.util
import inspect
import logging
import math
import pkgutil
import re
import sys
from dataclasses import dataclass
from pathlib import Path
from types import MappingProxyType, ModuleType
from typing import ClassVar, Iterable, Mapping, Sequence, TypeVar

import libcst as cst
import numpy as np

from evocode.genome import Edit, Genome, apply_edit, code_hash
from evocode.program import Program, resolve

CATEGORIES = ("hyperparameter", "architecture", "data", "optimization")
ENTRY_POINT_GROUP = "evocode.mutators"

# The metric belongs to the harness: no edit may read or write it, or switch off causal masking.
_FORBIDDEN = (re.compile(r"\bharness\b"), re.compile(r"is_causal\s*=\s*False"))

logger = logging.getLogger(__name__)
T = TypeVar("T")
# How often a numeric mutation moves a constant the way that last helped there, when it has advice.
FOLLOW = 0.75


@dataclass(frozen=True)
class Step:
    """Advice for moving one numeric constant, from what helped there so far (evocode.search.steps): multiply the
    mutator's usual step by `scale`; `direction` +1 (larger), -1 (smaller) or 0 (no evidence)."""

    scale: float = 1.0
    direction: int = 0

    def sign(self, rng: np.random.Generator) -> int:
        """Which way to move: the advised direction with probability FOLLOW, else the other; either, evenly, without advice."""
        if not self.direction:
            return pick(rng, (-1, 1))
        return self.direction if rng.random() < FOLLOW else -self.direction


class Mutator:
    """Base class of mutators: set ``name`` and ``category``, write the hypothesis as the docstring, implement ``propose``."""

    name: ClassVar[str] = ""
    category: ClassVar[str] = ""
    # Per constant, how far and which way to step (set by the search on a copy, see `advised`); numeric mutators
    # read it with ``self.steps.get(name, Step())``, others ignore it.
    steps: Mapping[str, Step] = MappingProxyType({})

    def propose(self, program: Program, rng: np.random.Generator) -> Edit | None:
        """One edit to this program, or None when it has no site for this mutator."""
        raise NotImplementedError

    def edit(self, site: str, code: str, description: str) -> Edit:
        return Edit(self.name, site, code, description)

    def advised(self, steps: Mapping[str, Step]) -> Mutator:
        """A copy of this mutator that sizes its numeric steps by `steps`; the original is left as it was."""
        clone = copy.copy(self)
        clone.steps = MappingProxyType(dict(steps))
        return clone

    @property
    def hypothesis(self) -> str:
        return inspect.getdoc(self) or ""


def pick(rng: np.random.Generator, options: Sequence[T]) -> T:
    """One of the options, uniformly; the options' order (not their hashes) decides, so runs replay."""
    return options[int(rng.integers(len(options)))]


def format_number(value: float | int, digits: int = 3) -> str:
    """A number as a person writes it in a script: ``6e-3``, ``0.95``, ``1e-8``, ``128``."""
    if isinstance(value, bool) or isinstance(value, int):
        return repr(value)
    if value == 0 or not math.isfinite(value):
        return repr(float(value))
    mantissa, exponent = f"{value:.{digits - 1}e}".split("e")
    if -3 < int(exponent) < 4:
        return repr(float(f"{value:.{digits}g}"))
    mantissa = mantissa.rstrip("0").rstrip(".")
    return f"{mantissa}e{int(exponent)}"


def with_keyword(call: cst.Call, keyword: str, code: str | None) -> cst.Call:
    """The call with keyword argument ``keyword`` set to ``code`` (added if absent), or removed when code is None."""
    args = [arg for arg in call.args if arg.keyword is None or arg.keyword.value != keyword]
    existing = next((arg for arg in call.args if arg.keyword is not None and arg.keyword.value == keyword), None)
    if code is not None:
        value = cst.parse_expression(code)
        if existing is not None:
            args.insert(call.args.index(existing), existing.with_changes(value=value))
        else:
            no_space = cst.SimpleWhitespace("")
            args.append(cst.Arg(value, keyword=cst.Name(keyword), equal=cst.AssignEqual(no_space, no_space)))
    if args and code is None:
        args[-1] = args[-1].with_changes(comma=cst.MaybeSentinel.DEFAULT)
    return call.with_changes(args=args)


@dataclass(frozen=True)
class Failure:
    """A mutator that was skipped, and why."""

    mutator: str
    error: str


@dataclass(frozen=True)
class MutationOutcome:
    """The child of one mutation step, the edits it added, and the mutators that failed on the way."""

    genome: Genome
    edits: tuple[Edit, ...]
    failures: tuple[Failure, ...]


def _checked(program: Program, edit: object, mutator: Mutator) -> str:
    """The code the edit makes of the program; raises when the edit is not a valid, harness-free change."""
    if not isinstance(edit, Edit):
        raise TypeError(f"propose() returned {type(edit).__name__}, not an Edit or None")
    if edit.mutator != mutator.name:
        raise ValueError(f"edit claims to come from mutator {edit.mutator!r}")
    touched = [program.code(site.node) for site in resolve(program.sites, edit.site)] + [edit.code]
    if any(pattern.search(code) for code in touched for pattern in _FORBIDDEN):
        raise ValueError("edits must not touch the harness or causal masking")
    code = apply_edit(program.module, edit, program.sites).code
    compile(code, f"<{mutator.name}>", "exec")
    return code


def _error_line(error: BaseException) -> str:
    first = str(error).strip().splitlines()
    return f"{type(error).__name__}: {first[0] if first else ''}".rstrip(": ")


# How often a mutator may propose again when it drew a site this mutation already edited.
_SITE_TRIES = 3


def mutate(
    genome: Genome, mutators: Sequence[Mutator], rng: np.random.Generator, n_edits: int = 1,
    weights: Sequence[float] | None = None,
) -> MutationOutcome:
    """Add up to ``n_edits`` edits to the genome, each from the first mutator, in a random order, that has a valid one.

    The order is uniform, or drawn without replacement with probabilities
    proportional to ``weights`` (one per mutator, e.g. from what helped so far).
    The edits of one mutation are at distinct sites: a second edit where the
    first one acted would only overwrite it (label smoothing 0 → 0.2 → 0.1) or
    undo it, an evaluation spent on one change described as several.
    Deterministic given the generator's state and the order of ``mutators``.
    Fewer edits come back only when no mutator has a site that changes the program.
    """
    source, edits, failures = genome.code, [], []
    for _ in range(n_edits):
        program = Program(source)
        for index in _order(len(mutators), rng, weights):
            mutator = mutators[int(index)]
            try:
                edit = mutator.propose(program, rng)
                for _ in range(_SITE_TRIES):  # a mutator with several sites may have drawn a taken one
                    if not _taken(edit, edits):
                        break
                    edit = mutator.propose(program, rng)
                if edit is None or _taken(edit, edits):
                    continue
                child = _checked(program, edit, mutator)
            # A plugin can fail in any way; a failing mutator is reported and skipped, never fatal.
            except Exception as error:
                failures.append(Failure(mutator.name, _error_line(error)))
                logger.warning("mutator %s skipped: %s", mutator.name, failures[-1].error)
                continue
            if code_hash(child) != code_hash(source):
                source = child
                edits.append(edit)
                break
        else:
            break
    return MutationOutcome(genome.with_edits(*edits, code=source), tuple(edits), tuple(failures))


def _taken(edit: object, edits: list[Edit]) -> bool:
    return isinstance(edit, Edit) and any(edit.site == e.site for e in edits)


def _order(n: int, rng: np.random.Generator, weights: Sequence[float] | None) -> np.ndarray:
    if weights is None:
        return rng.permutation(n)
    p = np.asarray(weights, dtype=float)
    return rng.choice(n, size=n, replace=False, p=p / p.sum())


@dataclass(frozen=True)
class Registered:
    """A mutator and where it came from (``built-in mutators.loss``, ``entry point pkg``, a path)."""

    mutator: Mutator
    source: str


def _instance(obj: object, origin: str) -> Mutator:
    mutator = obj() if inspect.isclass(obj) and issubclass(obj, Mutator) else obj
    if not isinstance(mutator, Mutator) or not mutator.name or mutator.category not in CATEGORIES:
        raise ValueError(f"{origin} is not a Mutator with a name and one of the categories {CATEGORIES}; name a Mutator subclass")
    return mutator


def _builtins() -> list[Registered]:
    import mutators as package

    found = []
    for info in sorted(pkgutil.iter_modules(package.__path__), key=lambda i: i.name):
        module = importlib.import_module(f"{package.__name__}.{info.name}")
        for _, cls in inspect.getmembers(module, inspect.isclass):
            if cls.__module__ == module.__name__ and issubclass(cls, Mutator) and "name" in vars(cls):
                found.append(Registered(cls(), f"built-in {module.__name__}"))
    return found


def _entry_points() -> list[Registered]:
    found = []
    for point in sorted(importlib.metadata.entry_points(group=ENTRY_POINT_GROUP), key=lambda p: (p.name, p.value)):
        origin = f"entry point {point.name} = {point.value}"
        try:
            found.append(Registered(_instance(point.load(), origin), origin))
        # A broken third-party package must not take the built-ins down with it.
        except Exception as error:
            logger.warning("%s skipped: %s", origin, _error_line(error))
    return found


def load_spec(spec: str) -> Registered:
    """The mutator named by ``package.module:Name`` or ``path/to/file.py:Name``."""
    where, _, attribute = spec.rpartition(":")
    if not where or not attribute:
        raise ValueError(f"a mutator spec looks like package.module:Name or path/file.py:Name, got {spec!r}")
    try:
        module = _load_file(Path(where)) if where.endswith(".py") else importlib.import_module(where)
        obj = getattr(module, attribute)
    # Importing a plugin runs its code, which may fail in any way; that is bad input, not a crash of evocode.
    except Exception as error:
        raise ValueError(f"cannot load mutator {spec}: {_error_line(error)}; check the path and the class name") from None
    return Registered(_instance(obj, spec), f"path {spec}" if where.endswith(".py") else f"module {spec}")


def _load_file(path: Path) -> ModuleType:
    module_spec = importlib.util.spec_from_file_location(f"evocode_plugin_{path.stem}", path)
    if module_spec is None or not path.is_file():
        raise FileNotFoundError(f"no mutator file {path}")
    module = importlib.util.module_from_spec(module_spec)
    # Registered like any imported module, so its classes can be traced to their source (a run pins its hash).
    sys.modules[module_spec.name] = module
    module_spec.loader.exec_module(module)
    return module


def available_mutators(specs: Iterable[str] = ()) -> list[Registered]:
    """Built-ins, entry-point plugins and the mutators the specs name, sorted by name; names must be unique."""
    found = _builtins() + _entry_points() + [load_spec(spec) for spec in specs]
    by_name: dict[str, Registered] = {}
    for entry in found:
        if entry.mutator.name in by_name:
            raise ValueError(f"two mutators named {entry.mutator.name!r}: {by_name[entry.mutator.name].source} and {entry.source}")
        by_name[entry.mutator.name] = entry
    return [by_name[name] for name in sorted(by_name)]


# Words that select a group of mutators: `builtin` the ones shipped in `mutators/`, `all` every registered one.
GROUPS = {"all": lambda entry: True, "builtin": lambda entry: entry.source.startswith("built-in ")}


def select_mutators(selection: Sequence[str] | None = None) -> list[Registered]:
    """The registered mutators a selection names: by name, by category, by group (``all``, ``builtin``) or by
    spec (``module:Name``); None is all. ``builtin path/to/mine.py:Mine`` adds a plugin to the built-ins."""
    specs = [item for item in selection or () if ":" in item]
    registry = available_mutators(specs)
    if selection is None:
        return registry
    wanted = set(selection)
    spec_sources = {f"path {s}" for s in specs} | {f"module {s}" for s in specs}
    groups = [GROUPS[word] for word in wanted & GROUPS.keys()]
    chosen = [
        e for e in registry
        if {e.mutator.name, e.mutator.category} & wanted or e.source in spec_sources or any(group(e) for group in groups)
    ]
    known = {e.mutator.name for e in registry} | set(CATEGORIES) | set(GROUPS) | set(specs)
    unknown = sorted(wanted - known)
    if unknown:
        raise ValueError(f"unknown mutators or categories {unknown}; known: {sorted(known)}")
    return chosen


def load_mutators(selection: Sequence[str] | None = None) -> list[Mutator]:
    """The mutators a selection names (see select_mutators), sorted by name."""
    return [entry.mutator for entry in select_mutators(selection)]


def sample_variants(genome: Genome, mutators: Sequence[Mutator], rng: np.random.Generator, n: int) -> list[MutationOutcome]:
    """Up to n one-edit children of the genome with distinct programs, drawn one after another from rng."""
    seen, variants = {genome.code_hash}, []
    for _ in range(10 * n):
        outcome = mutate(genome, mutators, rng)
        if not outcome.edits:
            break
        if outcome.genome.code_hash not in seen:
            seen.add(outcome.genome.code_hash)
            variants.append(outcome)
            if len(variants) == n:
                break
    return variants


def describe_mutators(registered: Sequence[Registered]) -> str:
    """One line per mutator: name, category and where it comes from."""
    width = max((len(r.mutator.name) for r in registered), default=0)
    return "\n".join(f"{r.mutator.name:<{width}}  {r.mutator.category:<14}  {r.source}" for r in registered)


def describe_variant(parent: Genome, outcome: MutationOutcome, label: str, path: str) -> str:
    """A variant as its edits' descriptions and a unified diff against the parent's code."""
    header = [f"# {label} [{e.mutator}] {e.description}  (site: {e.site})" for e in outcome.edits]
    diff = difflib.unified_diff(
        parent.code.splitlines(keepends=True), outcome.genome.code.splitlines(keepends=True), path, f"{path} ({label})"
    )
    return "".join(line + "\n" for line in header) + "".join(diff)

"""Mutators of the model's layers: activations, normalization, attention and initialization."""

from __future__ import annotations

import re

import libcst as cst
import numpy as np

from evocode.genome import Edit
from evocode.mutation import Mutator, pick
from evocode.program import Program, Site, dotted_name, statement_key

FUNCTIONAL = "torch.nn.functional."
ACTIVATIONS = {
    "GELU": "{F}.gelu({x})",
    "tanh-GELU": '{F}.gelu({x}, approximate="tanh")',
    "ReLU": "{F}.relu({x})",
    "ReLU²": "torch.square({F}.relu({x}))",
    "SiLU": "{F}.silu({x})",
}


def _namespace(call: cst.Call) -> str | None:
    """``F`` for ``F.gelu(x)``: the prefix the program uses for the callee's module."""
    name = dotted_name(call.func)
    return name.rpartition(".")[0] or None if name else None


def _positional(call: cst.Call) -> list[cst.BaseExpression]:
    return [arg.value for arg in call.args if arg.keyword is None and not arg.star]


def _target_site(program: Program, site: Site) -> Site:
    """The site naming the same node by its assignment target (``self.ln_1``), which outlives call counts."""
    return next((s for s in program.sites.values() if s.node is site.node and s.kind == site.kind), site)


class Activation(Mutator):
    """The MLP's nonlinearity shapes what one layer can express per parameter; GELU, tanh-GELU, ReLU, ReLU²
    and SiLU differ in smoothness and sparsity, and ReLU² in particular has done well in small fast GPTs."""

    name = "activation"
    category = "architecture"

    def _kind(self, program: Program, call: cst.Call) -> tuple[str, cst.Call] | None:
        """(activation, the F.* call inside it) for an activation call; None for anything else."""
        callee = program.callee(call)
        args = _positional(call)
        if callee == "torch.square" and args and isinstance(args[0], cst.Call) and program.callee(args[0]) == FUNCTIONAL + "relu":
            return "ReLU²", args[0]
        if callee == FUNCTIONAL + "gelu":
            tanh = any(a.keyword is not None and a.keyword.value == "approximate" for a in call.args)
            return ("tanh-GELU" if tanh else "GELU"), call
        named = {FUNCTIONAL + "relu": "ReLU", FUNCTIONAL + "silu": "SiLU"}
        if callee not in named:
            return None
        inside_square = isinstance(program.parent(call), cst.Arg) and program.callee(program.parent(program.parent(call))) == "torch.square"
        return None if inside_square else (named[callee], call)

    def propose(self, program: Program, rng: np.random.Generator) -> Edit | None:
        sites = []
        for site in program.sites.values():
            if site.scope and site.locator.endswith("()") and (kind := self._kind(program, site.node)):
                inner = kind[1]
                if _namespace(inner) and _positional(inner):
                    sites.append((site, kind[0], inner))
        if not sites:
            return None
        site, current, inner = pick(rng, sites)
        options = [a for a in ACTIVATIONS if a != current and (program.imports("torch") or "torch." not in ACTIVATIONS[a])]
        new = pick(rng, options)
        code = ACTIVATIONS[new].format(F=_namespace(inner), x=program.code(_positional(inner)[0]))
        return self.edit(site.address, code, f"{current} → {new} in {site.scope}")


class Normalization(Mutator):
    """RMSNorm drops LayerNorm's mean subtraction and bias: fewer operations and parameters, often equal or
    better quality in transformers; swapping one norm for the other tests that here."""

    name = "normalization"
    category = "architecture"
    swaps = {"torch.nn.LayerNorm": "RMSNorm", "torch.nn.RMSNorm": "LayerNorm"}

    def propose(self, program: Program, rng: np.random.Generator) -> Edit | None:
        sites = [s for s in program.calls(*self.swaps) if _namespace(s.node) and _positional(s.node)]
        if not sites:
            return None
        call = pick(rng, sites)
        site = _target_site(program, call)
        old = program.callee(call.node).rpartition(".")[2]
        new = self.swaps[program.callee(call.node)]
        code = f"{_namespace(call.node)}.{new}({program.code(_positional(call.node)[0])})"
        return self.edit(site.address, code, f"{old} → {new} at {site.address}")


class QKNorm(Mutator):
    """Normalizing queries and keys (QK-norm) bounds the attention logits, which lets attention train stably at
    higher learning rates; adding it, or removing it where present, tests whether this script needs it."""

    name = "qk_norm"
    category = "architecture"
    attention = FUNCTIONAL + "scaled_dot_product_attention"

    def propose(self, program: Program, rng: np.random.Generator) -> Edit | None:
        sites = [s for s in program.calls(self.attention) if _namespace(s.node) and len(_positional(s.node)) >= 2]
        if not sites:
            return None
        site = pick(rng, sites)
        call, namespace = site.node, _namespace(site.node)
        q, k = _positional(call)[:2]
        normed = all(isinstance(t, cst.Call) and program.callee(t) == FUNCTIONAL + "rms_norm" for t in (q, k))
        if normed:
            new_q, new_k = (program.code(_positional(t)[0]) for t in (q, k))
        else:
            new_q, new_k = (f"{namespace}.rms_norm({program.code(t)}, ({program.code(t)}.size(-1),))" for t in (q, k))
        args = list(call.args)
        args[0] = args[0].with_changes(value=cst.parse_expression(new_q))
        args[1] = args[1].with_changes(value=cst.parse_expression(new_k))
        action = "remove" if normed else "add"
        return self.edit(site.address, program.code(call.with_changes(args=args)), f"{action} QK-norm in {site.scope}")


class ResidualInitScale(Mutator):
    """Residual projections are initialized smaller so the residual stream does not grow with depth; how much
    smaller (1/√(2L), 1/(2L), 1/√L, 1/L) sets how close to identity each block starts, which matters early in training."""

    name = "residual_init_scale"
    category = "architecture"
    divisors = {"1/√(2L)": "math.sqrt(2 * {L})", "1/(2L)": "(2 * {L})", "1/√L": "math.sqrt({L})", "1/L": "{L}"}

    def _init_std(self, program: Program, site: Site) -> bool:
        argument = program.parent(site.node)
        return site.locator.endswith("(std=)") and program.callee(program.parent(argument)) == "torch.nn.init.normal_"

    def propose(self, program: Program, rng: np.random.Generator) -> Edit | None:
        sites = []
        for site in program.sites.values():
            node = site.node
            if isinstance(node, cst.BinaryOperation) and isinstance(node.operator, cst.Divide) and self._init_std(program, site):
                depth = re.search(r"\b\w*(LAYER|DEPTH)\w*\b", program.code(node.right))
                if depth:
                    sites.append((site, depth[0]))
        if not sites:
            return None
        site, depth = pick(rng, sites)
        current = statement_key(program.code(site.node.right))
        options = {
            label: divisor.format(L=depth)
            for label, divisor in self.divisors.items()
            if statement_key(divisor.format(L=depth)) != current and (program.imports("math") or "math." not in divisor)
        }
        label = pick(rng, sorted(options))
        numerator = program.code(site.node.left)
        if isinstance(site.node.left, cst.BinaryOperation) and not site.node.left.lpar:
            numerator = f"({numerator})"
        return self.edit(site.address, f"{numerator} / {options[label]}", f"residual init std scale → {label} in {site.scope}")

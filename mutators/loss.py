"""Mutators of the training loss (never of the validation loss, which the harness computes)."""

from __future__ import annotations

import re

import libcst as cst
import numpy as np

from evocode.genome import Edit
from evocode.mutation import Mutator, format_number, pick, with_keyword
from evocode.program import Program, statement_key

CROSS_ENTROPY = "torch.nn.functional.cross_entropy"
Z_LOSS = re.compile(r"(?P<loss>.+) \+ (?P<weight>[\d.e-]+) \* torch\.logsumexp\((?P<logits>.+), dim=-1\)\.pow\(2\)\.mean\(\)")


class LabelSmoothing(Mutator):
    """Label smoothing keeps the model from pushing logits to extremes on noisy next-byte targets; it may help
    or hurt the validation loss, which is measured without smoothing."""

    name = "label_smoothing"
    category = "optimization"
    grid = (0.0, 0.05, 0.1, 0.2)

    def propose(self, program: Program, rng: np.random.Generator) -> Edit | None:
        sites = [s for s in program.calls(CROSS_ENTROPY) if s.scope]
        if not sites:
            return None
        site = pick(rng, sites)
        current = next((program.code(a.value) for a in site.node.args if a.keyword and a.keyword.value == "label_smoothing"), "0.0")
        new = pick(rng, [format_number(v) for v in self.grid if format_number(v) != current])
        call = with_keyword(site.node, "label_smoothing", new if float(new) else None)
        return self.edit(site.address, program.code(call), f"label smoothing {current} → {new} in {site.scope}")


class ZLoss(Mutator):
    """A small penalty on log Z (the log-sum-exp of the logits) keeps the softmax normalizer near one and the
    logits from drifting, which can stabilize training at a high learning rate (PaLM's z-loss)."""

    name = "z_loss"
    category = "optimization"
    weights = (1e-4, 1e-3)

    def propose(self, program: Program, rng: np.random.Generator) -> Edit | None:
        if not program.imports("torch"):
            return None
        sites = []
        for site in program.sites.values():
            if site.scope and site.locator.isidentifier():
                if isinstance(site.node, cst.Call) and program.callee(site.node) == CROSS_ENTROPY and site.node.args:
                    sites.append((site, None))
                elif match := Z_LOSS.fullmatch(statement_key(program.code(site.node))):
                    sites.append((site, match))
        if not sites:
            return None
        site, match = pick(rng, sites)
        if match is None:
            weight = pick(rng, self.weights)
            logits = program.code(site.node.args[0].value)
            code = f"{program.code(site.node)} + {format_number(weight)} * torch.logsumexp({logits}, dim=-1).pow(2).mean()"
            return self.edit(site.address, code, f"add z-loss {format_number(weight)} to {site.locator} in {site.scope}")
        return self.edit(site.address, match["loss"], f"remove z-loss from {site.locator} in {site.scope}")

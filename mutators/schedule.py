"""Mutators of the learning-rate schedule's shape."""

from __future__ import annotations

import re

import numpy as np

from evocode.genome import Edit
from evocode.mutation import Mutator, pick
from evocode.program import Program, statement_key

# Each shape maps training progress p in [0, 1] to a decay factor from 1 to 0, written the way ast.unparse writes it.
SHAPES = {
    "cosine": "0.5 * (1 + math.cos(math.pi * {p}))",
    "linear": "1 - {p}",
    "constant-then-decay": "min(1.0, 5 * (1 - {p}))",
}


def _shape_of(code: str) -> tuple[str, str] | None:
    """(shape, progress expression) if the code is one of the SHAPES."""
    for shape, template in SHAPES.items():
        pattern = re.escape(template).replace(re.escape("{p}"), "(.+)")
        match = re.fullmatch(pattern, code)
        if match:
            return shape, match[1]
    return None


class ScheduleShape(Mutator):
    """After warmup, the decay shape decides how long the learning rate stays high; cosine, linear and
    constant-then-decay (warmup-stable-decay) spend a short budget differently, and which is best is empirical."""

    name = "schedule_shape"
    category = "optimization"
    scope_pattern = r"(^|[._])(lr|learning_rate|schedule)\w*$"

    def propose(self, program: Program, rng: np.random.Generator) -> Edit | None:
        sites = []
        for site in program.sites.values():
            if site.locator.isidentifier() and re.search(self.scope_pattern, site.scope, re.IGNORECASE):
                shape = _shape_of(statement_key(program.code(site.node)))
                if shape:
                    sites.append((site, *shape))
        if not sites:
            return None
        site, shape, progress = pick(rng, sites)
        options = [s for s in SHAPES if s != shape and (program.imports("math") or "math." not in SHAPES[s])]
        new = pick(rng, options)
        return self.edit(site.address, SHAPES[new].format(p=progress), f"LR decay {shape} → {new} in {site.scope}")

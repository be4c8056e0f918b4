"""Step sizes: how far, and which way, a numeric mutation moves a constant, learned per constant.

A constant mis-set by a factor of four needs a jump; one near its best needs
small moves. Each mutant whose one new edit changed a module-level number is
a try of that constant: its step is log2(new / old), and its pair (the same
evaluation seed as its parent, evocode.search.credit) says whether it helped.
Per constant, the scale of the next steps follows the one-fifth success rule
of evolution strategies: it grows ×GROW after a try that helped and shrinks
×SHRINK after one that did not, so it settles where about one try in five
helps, large while large moves keep paying and small once they stop. The
direction of the latest step that helped is followed with probability
FOLLOW (see the mutators that read it, e.g. mutators.constants.ScaleConstant);
until a step has helped, the advised direction is the opposite of the latest
step that did not (a batch that hurt when doubled is tried halved next),
as a line search turns around.

Like credit, steps are derived from the stored evaluations, never stored
beside them, so a resumed or replayed run draws the same steps.
"""

from __future__ import annotations

import ast
import math
from typing import Sequence

from evocode.mutation import Step

GROW = 2.0
SHRINK = 2.0**-0.25  # log(1/SHRINK) / (log GROW + log(1/SHRINK)) = 1/5: the share of helpful tries where the scale holds
MIN_SCALE, MAX_SCALE = 1 / 8, 8.0


def log_step(parent_code: str, child_code: str, site: str) -> float | None:
    """log2(new / old) of the module-level number `site` from parent to child; None unless both are positive numbers."""
    old, new = module_number(parent_code, site), module_number(child_code, site)
    if old is None or new is None or old <= 0 or new <= 0:
        return None
    return math.log2(new / old)


def module_number(code: str, name: str) -> float | None:
    """The number (not a bool) a module-level `name = ...` assigns, the last such assignment; None when there is none.

    What evocode.program.Program.constants() reads too, but with `ast`: this runs on every credited pair's two programs
    each generation, and a LibCST parse with metadata costs about 100 ms a program where `ast` costs about 2."""
    return module_numbers(code).get(name)


def module_numbers(code: str) -> dict[str, float]:
    """Every module-level `NAME = number` (not a bool) of the program, by name, the last assignment of each; one parse
    for a program whose constants are all read (evocode.search.parzen)."""
    numbers: dict[str, float] = {}
    for node in ast.parse(code).body:
        if (isinstance(node, ast.Assign) and len(node.targets) == 1 and isinstance(node.targets[0], ast.Name)
                and isinstance(node.value, ast.Constant)):
            name, value = node.targets[0].id, node.value.value
            numbers.pop(name, None)
            if isinstance(value, (int, float)) and not isinstance(value, bool):
                numbers[name] = value
    return numbers


def step_sizes(tries: Sequence[tuple[str, float, bool]]) -> dict[str, Step]:
    """Per constant, the step advice after its tries (constant, log2 step, helped), in the order they were made."""
    advice: dict[str, Step] = {}
    helped_before: set[str] = set()
    for site, step, helped in tries:
        current = advice.get(site, Step())
        way = 1 if step > 0 else -1
        if helped:
            advice[site] = Step(min(MAX_SCALE, current.scale * GROW), way)
            helped_before.add(site)
        else:
            advice[site] = Step(max(MIN_SCALE, current.scale * SHRINK), current.direction if site in helped_before else -way)
    return advice

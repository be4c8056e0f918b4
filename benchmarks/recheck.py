"""Is a run's winner really better, or did it get a lucky draw?

Selection picks the best score on one evaluation seed, which flatters the
winner. This retrains the seed script and the run's best program on several
evaluation seeds, one at a time with all cores, and reports both spreads and
the mean gain: the number to quote.

    python benchmarks/recheck.py RUN_DIR [--seeds 5]
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
from pathlib import Path

from results import machine, table, write_section

from evocode.evaluation.runner import Limits, evaluate
from evocode.outputs import best_of
from evocode.settings import stored_settings
from evocode.store import RunStore


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("run_dir", type=Path)
    parser.add_argument("--seeds", type=int, default=5)
    args = parser.parse_args()
    settings = stored_settings(args.run_dir)
    if settings is None:
        sys.exit(f"{args.run_dir} holds no evocode run")
    with RunStore.reader(args.run_dir) as store:
        best = best_of(store.evaluated())
    limits = Limits(threads=os.cpu_count() or 1)
    programs = {"seed": settings.seed_source, f"best ({best.candidate.id})": best.candidate.code}
    scores = {name: [] for name in programs}
    for seed in range(args.seeds):
        for name, code in programs.items():
            r = evaluate(code, settings.spec, seed, limits)
            scores[name].append(r.val_bpb if r.status == "ok" else float("nan"))
            print(name, seed, r.status, r.val_bpb, flush=True)
    rows = [[name] + [f"{v:.4f}" for v in vs] + [f"{statistics.mean(vs):.4f}", f"{statistics.stdev(vs):.4f}"]
            for name, vs in scores.items()]
    seed_scores, best_scores = scores.values()
    gains = [a - b for a, b in zip(seed_scores, best_scores)]
    body = "\n\n".join([
        "## Rechecking a run's winner (`benchmarks/recheck.py`)",
        f"Command: `python -m evocode evolve seeds/train.py --name default`, then "
        f"`python benchmarks/recheck.py runs/default --seeds {args.seeds}`. Machine: {machine()}. "
        f"Budget {settings.spec.budget} tokens; one evaluation at a time, {limits.threads} threads. "
        f"Edits of the best: {best.candidate.description}.",
        table(["program"] + [f"eval seed {s}" for s in range(args.seeds)] + ["mean", "σ"], rows),
        f"Gain of the best over the seed, per evaluation seed: median **{statistics.median(gains):.4f}** bits/byte "
        f"(min {min(gains):.4f}, max {max(gains):.4f}); the best is better on "
        f"{sum(g > 0 for g in gains)} of {len(gains)} evaluation seeds, where selection saw only seed {settings.config.seed}.",
    ])
    write_section("recheck", body)
    print(body)


if __name__ == "__main__":
    main()

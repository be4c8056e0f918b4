"""How noisy and how costly is one evaluation of the seed?

Evaluates seeds/train.py at the default budget over several evaluation
seeds, one at a time with all cores, and reports the spread of val_bpb (the
noise any claimed improvement must beat) and where the wall-clock time of an
evaluation goes: training, the harness's scoring, and the rest (process
start, imports, model construction), which is the runner's overhead.

    python benchmarks/eval_noise.py [--seeds 5] [--budget 400000]
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
from pathlib import Path

from results import machine, table, write_section

from evocode.data import prepare_corpus
from evocode.evaluation.runner import Limits, evaluate
from evocode.spec import DEFAULT_BUDGET, EvalSpec

SEED_SCRIPT = Path(__file__).resolve().parent.parent / "seeds" / "train.py"


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--seeds", type=int, default=5)
    parser.add_argument("--budget", type=int, default=DEFAULT_BUDGET)
    args = parser.parse_args()
    spec = EvalSpec(budget=args.budget, corpus_dir=str(prepare_corpus().directory))
    limits = Limits(threads=os.cpu_count() or 1)
    source = SEED_SCRIPT.read_text()
    rows, results = [], []
    for seed in range(args.seeds):
        r = evaluate(source, spec, seed, limits)
        if r.status != "ok":
            sys.exit(f"seed {seed}: {r.status}: {r.reason}")
        results.append(r)
        other = r.wall_seconds - r.train_seconds - r.eval_seconds
        rows.append([str(seed), f"{r.val_bpb:.4f}", f"{r.train_seconds:.1f}", f"{r.eval_seconds:.1f}", f"{other:.1f}", f"{r.wall_seconds:.1f}"])
        print(" ".join(rows[-1]), flush=True)
    bpb = [r.val_bpb for r in results]
    overhead = [(r.wall_seconds - r.train_seconds) / r.wall_seconds for r in results]
    body = "\n\n".join([
        "## Evaluation noise and runner overhead (`benchmarks/eval_noise.py`)",
        f"Command: `python benchmarks/eval_noise.py --seeds {args.seeds} --budget {args.budget}`. "
        f"Machine: {machine()}. One evaluation at a time, {limits.threads} threads.",
        table(["eval seed", "val_bpb", "training s", "scoring s", "start + imports + build s", "total s"], rows),
        f"val_bpb over {len(bpb)} eval seeds: mean **{statistics.mean(bpb):.4f}**, "
        f"σ **{statistics.stdev(bpb):.4f}** (min {min(bpb):.4f}, max {max(bpb):.4f}). "
        f"Median training time {statistics.median(r.train_seconds for r in results):.1f} s; "
        f"median overhead (everything but training, scoring included) "
        f"**{100 * statistics.median(overhead):.0f}%** of an evaluation's wall time.",
    ])
    write_section("eval_noise", body)
    print(body)


if __name__ == "__main__":
    main()

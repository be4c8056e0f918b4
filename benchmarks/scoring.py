"""What trusted scoring costs per candidate: the seed evaluated warm, its time split into training, the rest of the
candidate's process (process start, model build), the export (in the candidate's process, made only to be scored) and
the scorer process (loading the export, the checks, val_bpb).

The first evaluation starts the worker's fork server and is left out.

    python benchmarks/scoring.py [--budget 400000] [--runs 3]
"""

from __future__ import annotations

import argparse
import statistics
from pathlib import Path

from results import machine, table, write_section

from evocode.data import prepare_corpus
from evocode.evaluation.runner import Limits, evaluate
from evocode.spec import EvalSpec

SEED_SCRIPT = Path(__file__).resolve().parent.parent / "seeds" / "train.py"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--budget", type=int, default=EvalSpec.budget)
    parser.add_argument("--runs", type=int, default=3)
    args = parser.parse_args()
    spec = EvalSpec(budget=args.budget, corpus_dir=str(prepare_corpus().directory))
    source = SEED_SCRIPT.read_text()
    results = [evaluate(source, spec, 0, Limits(threads=1), warm=True) for _ in range(args.runs + 1)][1:]
    assert all(r.status == "ok" for r in results), [r.reason for r in results]
    parts = {
        "training": [r.train_seconds for r in results],
        "rest of the evaluation (start, build)": [r.wall_seconds - r.train_seconds - r.scoring_seconds
                                                  for r in results],
        "export (in the candidate)": [r.export_seconds for r in results],
        "scorer process": [r.eval_seconds for r in results],
        "wall": [r.wall_seconds for r in results],
    }
    rows = [[name, f"{statistics.median(v):.2f}", f"{100 * statistics.median(v) / statistics.median(parts['wall']):.0f}%"]
            for name, v in parts.items()]
    body = "\n\n".join([
        "## Trusted scoring: what the export and the scorer process cost per candidate (`benchmarks/scoring.py`)",
        f"Command: `python benchmarks/scoring.py --budget {args.budget} --runs {args.runs}`. Machine: {machine()}; "
        f"one worker, one thread; the seed script, warm; medians of {args.runs} evaluations (val_bpb {results[0].val_bpb:.4f}, "
        "the same each time).",
        table(["part of an evaluation", "seconds (median)", "share of wall"], rows),
    ])
    write_section("scoring", body)
    print(body)


if __name__ == "__main__":
    main()

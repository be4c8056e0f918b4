"""Distill a real run's winner and record the table in RESULTS.md.

Runs `python -m evocode distill` on RUN_DIR (resumable: rerun after a kill
and it continues) and writes its table, the minimal set and the transfer
check, with the command, the machine and the wall time, to the `distill`
section of RESULTS.md.

    python benchmarks/distill.py RUN_DIR [--seeds 3] [--transfer-budget TOKENS] [--workers W]
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

from results import machine, table, write_section

from evocode.insight.distill import HEADER, summary, table_rows
from evocode.insight.distill_run import MIN_SEEDS, DistillOptions, distill_run
from evocode.settings import stored_settings


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("run_dir", type=Path)
    parser.add_argument("--seeds", type=int, default=MIN_SEEDS)
    parser.add_argument("--transfer-budget", type=int, default=None)
    parser.add_argument("--workers", type=int, default=None)
    args = parser.parse_args()
    started = time.perf_counter()
    found, measurements = distill_run(args.run_dir, DistillOptions(seeds=args.seeds, transfer_budget=args.transfer_budget,
                                                                   workers=args.workers))
    minutes = (time.perf_counter() - started) / 60
    settings = stored_settings(args.run_dir)
    minimal = "; ".join(found.edits[i].description for i in found.minimal) or "none"
    options = f" --seeds {args.seeds}" + (f" --transfer-budget {args.transfer_budget}" if args.transfer_budget else "")
    write_section("distill", f"""
## Distilling a run's winner (`benchmarks/distill.py`)

Command: `python benchmarks/distill.py {args.run_dir}{options}` (the same as `python -m evocode distill {args.run_dir}{options}`).
Machine: {machine()}. {measurements.trained} evaluations trained in this call, {minutes:.1f} min.

{summary(found, settings.spec.budget, settings.config.seed)}

{table(HEADER, table_rows(found))}

Minimal set: {minimal}.
""")


if __name__ == "__main__":
    main()

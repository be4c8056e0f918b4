"""progress.png in autoresearch's style: every experiment's val_bpb, the running best, and what each new best changed.

Experiments are numbered in the order results.tsv lists them; a successful
experiment that beats every earlier one is kept (green, annotated with its
edits), the others are discarded (grey); failures have no score and are
left out of the plot (the report counts them). matplotlib's Agg backend
draws without a display, so this works on a headless server.
"""

from __future__ import annotations

from pathlib import Path

from evocode.insight.lineage import new_edits
from evocode.outputs import tsv_rows
from evocode.search.credit import new_edits as added_to
from evocode.store import Evaluated

# Annotations longer than this are cut: the plot shows which edits, best.diff shows them whole.
_LABEL_CHARS = 48


def _what_it_tried(by_id: dict[str, Evaluated], e: Evaluated) -> str:
    """A kept point's label: the edits it added over its parents (a crossover may add none: then it says so)."""
    added = "; ".join(edit.description for edit in new_edits(by_id, e))
    if added:
        return "model: " + added if e.candidate.origin == "model" else added
    if e.candidate.origin == "stacking":  # its new edits came from its donor: they are what it tried here
        return "+ " + "; ".join(edit.description for edit in added_to(by_id[e.candidate.parents[0]], e))
    if e.candidate.origin == "crossover":
        return "crossover of " + " × ".join(e.candidate.parents)
    return e.candidate.description  # the seed


def progress_points(evaluated: list[Evaluated]) -> tuple[list[tuple[int, float, str]], list[tuple[int, float]]]:
    """(kept, discarded) points: (experiment number, val_bpb[, label]) for every successful experiment."""
    by_id = {e.candidate.id: e for e in evaluated}
    kept, discarded = [], []
    for number, (e, row) in enumerate(zip(evaluated, tsv_rows(evaluated))):
        status = row[3]
        if status == "keep":
            kept.append((number, e.result.val_bpb, _what_it_tried(by_id, e)))
        elif status == "discard":
            discarded.append((number, e.result.val_bpb))
    return kept, discarded


def _label(text: str) -> str:
    return text if len(text) <= _LABEL_CHARS else text[: _LABEL_CHARS - 1] + "…"


def plot_progress(evaluated: list[Evaluated], path: Path) -> None:
    """Write the progress plot of these evaluations (in results.tsv order) to path as a PNG."""
    kept, discarded = progress_points(evaluated)
    # Imported here: pyplot costs a second and a half, which every other command would pay.
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(14, 7), dpi=100)
    if discarded:
        xs, ys = zip(*discarded)
        ax.scatter(xs, ys, c="#cccccc", s=16, alpha=0.6, zorder=2, label="discarded")
    if kept:
        xs, ys, labels = zip(*kept)
        ax.scatter(xs, ys, c="#2ecc71", s=60, edgecolors="black", linewidths=0.5, zorder=4, label="kept")
        steps_x, steps_y = list(xs) + [len(evaluated) - 1], list(ys) + [ys[-1]]
        ax.step(steps_x, steps_y, where="post", color="#27ae60", linewidth=2, alpha=0.7, zorder=3, label="running best")
        for x, y, label in zip(xs, ys, labels):
            ax.annotate(_label(label), (x, y), textcoords="offset points", xytext=(6, 6), fontsize=8,
                        color="#1a7a40", rotation=30, ha="left", va="bottom", zorder=5)
    ax.set_xlabel("Experiment #")
    ax.set_ylabel("Validation BPB (lower is better)")
    ax.set_title(f"evocode progress: {len(evaluated)} experiments, {len(kept)} kept improvements")
    ax.grid(True, alpha=0.2)
    ax.legend(loc="upper right")
    fig.tight_layout()
    staging = path.with_name(f".{path.name}.tmp.png")
    fig.savefig(staging, bbox_inches="tight")  # keeps the annotations of late bests inside the image
    plt.close(fig)
    staging.replace(path)

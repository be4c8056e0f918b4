"""report.html: one self-contained static page that shows what a run did and found.

The page is plain HTML with its CSS and the progress plot (a base64 PNG)
inside it, so it can be mailed, archived or opened from a file system with
no server and no network. Each section is one function of the finished run;
a section with nothing to show is left out.
"""

from __future__ import annotations

import base64
import html
import json
from pathlib import Path

from evocode.genome import edits_from_json
from evocode.insight.finished_run import FinishedRun, load_finished_run
from evocode.insight.lineage import Ancestor, ancestry
from evocode.insight.plot import plot_progress
from evocode.search.fidelity import spent
from evocode.store import RunStore

DISTILL_KEY = "distill"  # run-store key under which `distill` leaves its table for the report

_CSS = """
body { font-family: system-ui, sans-serif; margin: 2em auto; max-width: 72em; color: #222; }
h1 { font-size: 1.6em; } h2 { font-size: 1.25em; margin-top: 1.6em; border-bottom: 1px solid #ddd; }
table { border-collapse: collapse; } td, th { border: 1px solid #ddd; padding: .25em .6em; text-align: left; vertical-align: top; }
code, pre { font-family: ui-monospace, monospace; font-size: .9em; } pre { background: #f6f6f6; padding: .6em; overflow-x: auto; }
img { max-width: 100%; } .score { color: #1a7a40; font-weight: bold; } .muted { color: #777; }
ul.tree { list-style: none; padding-left: 1.4em; border-left: 1px dotted #bbb; }
"""


def _e(value: object) -> str:
    return html.escape(str(value))


def _bpb(value: float | None) -> str:
    return "-" if value is None else f"{value:.6f}"


def _headline(run: FinishedRun) -> str:
    best, seed = run.best, run.seed
    line = f"best <b>{_e(best.candidate.id)}</b>: val_bpb <span class='score'>{_bpb(best.result.val_bpb)}</span>"
    if seed is not None and seed.result.status == "ok":
        gain = seed.result.val_bpb - best.result.val_bpb
        line += f" (seed {_bpb(seed.result.val_bpb)}, gain {gain:.6f} bits per byte, {100 * gain / seed.result.val_bpb:.2f}%)"
    used = spent(run.evaluated, run.rungs)
    screened = (f" ({used.screened_out} more children were screened out below the full budget, "
                f"{used.screening_tokens:,} tokens in {used.screenings} evaluations)") if used.screenings else ""
    return (f"<h1>evocode run {_e(run.directory.name)}</h1><p>{line}; {len(run.evaluated)} evaluations{screened}, "
            f"all trained with evaluation seed {run.settings.config.seed}; {used.tokens:,} training tokens, "
            f"{used.seconds:.0f} s of training in all.</p>")


def _flatten(prefix: str, value: object) -> list[tuple[str, object]]:
    if isinstance(value, dict):
        return [row for key, v in value.items() for row in _flatten(f"{prefix}{key}.", v)]
    return [(prefix[:-1], value)]


def settings_section(run: FinishedRun) -> str:
    settings = {k: v for k, v in run.settings.to_json().items() if k != "seed_source"}
    rows = "".join(f"<tr><th>{_e(k)}</th><td><code>{_e(json.dumps(v))}</code></td></tr>" for k, v in _flatten("", settings))
    return f"<h2>Run settings</h2><table>{rows}</table>"


def progress_section(run: FinishedRun) -> str:
    png = run.directory / "progress.png"
    data = base64.b64encode(png.read_bytes()).decode()
    return ("<h2>Progress</h2><p>Every experiment's validation bits per byte in the order they were made; "
            "green points are new bests, annotated with their edits.</p>"
            f"<img alt='progress plot' src='data:image/png;base64,{data}'>")


def _ancestor_html(node: Ancestor) -> str:
    c, r = node.evaluated.candidate, node.evaluated.result
    score = _bpb(r.val_bpb) if r.status == "ok" else r.status
    if node.repeated:
        return f"<li><code>{_e(c.id)}</code> <span class='muted'>(shown above)</span></li>"
    how = {"seed": "the seed", "crossover": "crossover of " + " × ".join(c.parents),
           "stacking": " + ".join(c.parents[:1] + tuple(f"the change that helped {d}" for d in c.parents[1:])),
           "model": "".join(c.parents[:1]) + " with the constants the model proposed"}.get(c.origin, c.origin)
    added = "; ".join(edit.description for edit in node.new_edits) or ("" if c.origin == "seed" else "no new edit")
    parents = f"<ul class='tree'>{''.join(_ancestor_html(p) for p in node.parents)}</ul>" if node.parents else ""
    return (f"<li><code>{_e(c.id)}</code> <span class='score'>{_e(score)}</span> <span class='muted'>{_e(how)}</span>"
            f"{': ' + _e(added) if added else ''}{parents}</li>")


def lineage_section(run: FinishedRun) -> str:
    best = run.best
    by_id = {e.candidate.id: e for e in run.evaluated}
    edits = "".join(f"<li>{_e(edit.description)} <span class='muted'>[{_e(edit.mutator)} at {_e(edit.site)}]</span></li>"
                    for edit in edits_from_json(best.candidate.genome))
    return ("<h2>Lineage of the best</h2>"
            f"<p>The best's edits, in the order they apply to the seed:</p><ol>{edits}</ol>"
            "<p>Its ancestry, from the best back to the seed (each with its score and what it added):</p>"
            f"<ul class='tree'>{_ancestor_html(ancestry(by_id, best.candidate.id))}</ul>")


def _table(header: list[str], rows: list[list[object]]) -> str:
    head = "".join(f"<th>{_e(h)}</th>" for h in header)
    body = "".join("<tr>" + "".join(f"<td>{_e(cell)}</td>" for cell in row) + "</tr>" for row in rows)
    return f"<table><tr>{head}</tr>{body}</table>"


def distill_section(distilled: dict | None) -> str | None:
    if distilled is None:
        return None
    return (f"<h2>Distilled edits of {_e(distilled['candidate'])}</h2><p>{_e(distilled['summary'])}</p>"
            + _table(distilled["header"], distilled["rows"]))


def failures_section(run: FinishedRun) -> str:
    failed: dict[str, list] = {}
    for e in run.evaluated:
        if e.result.status != "ok":
            failed.setdefault(e.result.status, []).append(e)
    if not failed:
        return "<h2>Failures</h2><p>No evaluation failed.</p>"
    parts = ["<h2>Failures</h2><p>Failed evaluations by status, with the first of each as an example.</p>"]
    for status, group in sorted(failed.items()):
        example = group[0]
        tail = "\n".join(example.result.log_tail.splitlines()[-12:])
        parts.append(f"<h3>{_e(status)}: {len(group)}</h3><p><code>{_e(example.candidate.id)}</code> "
                     f"({_e(example.candidate.description)}): {_e(example.result.reason)}</p><pre>{_e(tail)}</pre>")
    return "".join(parts)


def report_html(run: FinishedRun, distilled: dict | None) -> str:
    """The page's HTML; run.directory must hold progress.png."""
    sections = [
        _headline(run),
        progress_section(run),
        lineage_section(run),
        # The what-helped table (mutator × site credit, issue #8) goes here once evocode.search.credit has it.
        distill_section(distilled),
        failures_section(run),
        settings_section(run),
    ]
    body = "\n".join(section for section in sections if section)
    return (f"<!DOCTYPE html>\n<html lang='en'><head><meta charset='utf-8'><title>evocode run {_e(run.directory.name)}</title>"
            f"<style>{_CSS}</style></head><body>\n{body}\n</body></html>\n")


def write_report(run_dir: Path) -> Path:
    """Write progress.png and report.html into a finished run's directory; returns the page's path."""
    run = load_finished_run(run_dir)
    with RunStore.reader(run_dir) as store:
        distilled = store.get(DISTILL_KEY)
    plot_progress(list(run.evaluated), run_dir / "progress.png")
    page = run_dir / "report.html"
    staging = page.with_name(".report.html.tmp")
    staging.write_text(report_html(run, distilled))
    staging.replace(page)
    return page

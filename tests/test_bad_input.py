"""Bad input on the command line: one line that names what is wrong, exit status 2, and nothing left behind.

Each case runs the real command in a fresh process, from a working directory
that holds the files the cases point at, and checks that the directory tree
is exactly as it was: no run directory, no `runs/`, no half-made store.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from conftest import REPO, SEED_SCRIPT, error_lines
from evocode.options import mutator_item

SEED = str(SEED_SCRIPT)

# (arguments, a fragment the error line must contain: the option or the path at fault)
CASES = [
    # eval: the script and the measurement
    (["eval", "missing.py"], "missing.py: no such file"),
    (["eval", "adir"], "adir is not a file"),
    (["eval", "binary.bin"], "binary.bin is not text"),
    (["eval", "latin1.py"], "latin1.py is not a UTF-8 Python script"),
    (["eval", SEED, "--budget", "0"], "--budget"),
    (["eval", SEED, "--budget", "lots"], "--budget"),
    (["eval", SEED, "--budget", "100"], "--budget 100 is less than one window of --context 128 (the default)"),
    (["eval", SEED, "--seed", "-1"], "--seed"),
    (["eval", SEED, "--seed", "4294967296"], "--seed"),
    (["eval", SEED, "--context", "1"], "--context"),
    (["eval", SEED, "--eval-tokens", "64"], "--eval-tokens 64 is less than one window of --context 128 (the default)"),
    (["eval", SEED, "--context", "99999999", "--eval-tokens", "99999999", "--budget", "99999999"], "--context 99999999 is longer than the corpus"),
    (["eval", SEED, "--device", "gpu"], "--device"),
    (["eval", SEED, "--device", "cuda:99"], "--device"),
    (["eval", SEED, "--memory", "100"], "--memory"),
    (["eval", SEED, "--timeout", "0"], "--timeout"),
    (["eval", SEED, "--timeout", "nan"], "--timeout"),
    (["eval", SEED, "--data", "missing.txt"], "--data"),
    (["eval", SEED, "--data", "adir"], "--data"),
    (["eval", SEED, "--data", "binary.bin"], "--data"),
    (["eval", SEED, "--data", "small.txt"], "--data"),
    # mutate
    (["mutate", SEED, "--n", "0"], "--n"),
    (["mutate", SEED, "--seed", "-5"], "--seed"),
    (["mutate", SEED, "--mutators", "no_such_mutator"], "--mutators"),
    (["mutate", SEED, "--mutators", "os:path"], "--mutators"),
    (["mutate", SEED, "--mutators", "not_a_mutator.py:Thing"], "--mutators"),
    (["mutate", SEED, "--mutators", "fails_on_import.py:Anything"], "--mutators"),
    (["mutate", SEED, "--mutators", "missing.py:Thing"], "--mutators"),
    (["mutate", "--list", SEED], "--list"),
    (["mutate"], "SCRIPT"),
    (["mutate", "adir"], "adir is not a file"),
    # evolve: the search
    (["evolve", "missing.py"], "missing.py: no such file"),
    (["evolve", "syntax_error.py"], "syntax_error.py does not parse"),
    (["evolve", SEED, "--seed", "-1"], "--seed"),
    (["evolve", SEED, "--population", "1"], "--population"),
    (["evolve", SEED, "--population", "2"], "--elite 2 (the default) must be less than --population 2"),
    (["evolve", SEED, "--elite", "8"], "--elite 8 must be less than --population 8 (the default)"),
    (["evolve", SEED, "--elite", "-1"], "--elite"),
    (["evolve", SEED, "--tournament", "9"], "--tournament 9 is larger than --population 8 (the default)"),
    (["evolve", SEED, "--tournament", "0"], "--tournament"),
    (["evolve", SEED, "--generations", "-1"], "--generations"),
    (["evolve", SEED, "--cx", "1.5"], "--cx"),
    (["evolve", SEED, "--cx", "often"], "--cx"),
    (["evolve", SEED, "--stack", "2"], "--stack"),
    (["evolve", SEED, "--model", "-0.1"], "--model"),
    (["evolve", SEED, "--cost-share", "0"], "--cost-share"),
    (["evolve", SEED, "--lag", "-1"], "--lag"),
    (["evolve", SEED, "--lag", "1", "--rungs", "2"], "--lag must be at least 0, and 0 with --rungs above 1"),
    (["evolve", SEED, "--workers", "0"], "--workers"),
    (["evolve", SEED, "--mutators", "os:path"], "--mutators"),
    (["evolve", SEED, "--mutators", "no_such_mutator"], "--mutators"),
    (["evolve", SEED, "--device", "tpu"], "--device"),
    (["evolve", SEED, "--memory", "10"], "--memory"),
    (["evolve", SEED, "--budget", "0"], "--budget"),
    (["evolve", SEED, "--data", "binary.bin"], "--data"),
    (["evolve", SEED, "--data", "small.txt"], "--data"),
    (["evolve", SEED, "--timeout", "-3"], "--timeout"),
    (["evolve", SEED, "--time-factor", "0.5"], "--time-factor"),
    # evolve: where the run goes
    (["evolve", SEED, "--run-dir", "afile"], "afile is a file"),
    (["evolve", SEED, "--run-dir", "afile/run"], "under the file"),
    (["evolve", SEED, "--run-dir", "/proc/evocode/run"], "cannot create /proc/evocode/run"),
    (["evolve", SEED, "--run-dir", "stuff"], "stuff holds other files and no evocode run"),
    (["evolve", SEED, "--name", "../escape"], "--name"),
    (["evolve", SEED, "--name", "a/b"], "--name"),
    (["evolve", SEED, "--name", ""], "--name"),
    (["evolve", SEED, "--run-dir", "r", "--name", "n"], "--name: not allowed with argument --run-dir"),
    # commands that take a run directory
    (["resume", "missing_dir"], "missing_dir is not a directory"),
    (["resume", "afile"], "afile is not a directory"),
    (["resume", "adir"], "adir holds no evocode run"),
    (["resume", "garbage"], "garbage holds no evocode run"),
    (["status", "stuff"], "stuff holds no evocode run"),
    (["best", "adir"], "adir holds no evocode run"),
    (["show", "adir", "g000-000"], "adir holds no evocode run"),
    (["show"], "the following arguments are required: RUNDIR, ID"),
    (["status", "garbage", "--json"], "garbage holds no evocode run"),
    (["runs", "missing_dir"], "missing_dir is not a directory"),
    (["runs", "afile"], "afile is not a directory"),
    (["resume", "adir", "--generations", "-2"], "adir holds no evocode run"),
    # where candidates run
    (["evolve", SEED, "--gpus", "first"], "--gpus"),
    (["evolve", SEED, "--per-gpu", "0"], "--per-gpu"),
    (["evolve", SEED, "--executor", "cloud"], "--executor"),
    (["evolve", SEED, "--executor", "dask"], "--executor dask needs the cluster"),
    (["evolve", SEED, "--executor", "local", "--scheduler", "tcp://127.0.0.1:8786"], "--scheduler and --scheduler-file name a Dask cluster"),
    (["evolve", SEED, "--scheduler-file", "missing.json"], "--scheduler-file"),
    (["evolve", SEED, "--scheduler", "tcp://127.0.0.1:8786", "--scheduler-file", "afile"], "not allowed with argument --scheduler"),
    # what a finished run is turned into
    (["report", "adir"], "adir holds no evocode run"),
    (["export", "adir", "--git", "out"], "adir holds no evocode run"),
    (["export"], "RUNDIR"),
    (["distill", "stuff"], "stuff holds no evocode run"),
    (["distill", "--seeds", "0", "adir"], "--seeds"),
    (["distill", "--transfer-data", "binary.bin", "adir"], "--transfer-data"),
    (["add", "adir", "missing.py"], "adir holds no evocode run"),
    (["add"], "RUNDIR"),
]


@pytest.fixture(scope="module")
def workspace(tmp_path_factory) -> Path:
    """A working directory with the wrong things to point at."""
    root = tmp_path_factory.mktemp("workspace")
    (root / "afile").write_text("just a file\n")
    (root / "adir").mkdir()
    (root / "stuff").mkdir()
    (root / "stuff" / "notes.txt").write_text("not a run\n")
    (root / "garbage").mkdir()
    (root / "garbage" / "evocode.db").write_text("not a database\n")
    (root / "binary.bin").write_bytes(bytes(range(256)) * 64)
    (root / "latin1.py").write_bytes("print('caf\xe9')\n".encode("latin-1"))
    (root / "small.txt").write_text("too little text to validate on\n")
    (root / "syntax_error.py").write_text("def main(:\n")
    (root / "not_a_mutator.py").write_text("class Thing:\n    pass\n")
    (root / "fails_on_import.py").write_text("raise RuntimeError('plugin broken at import')\n")
    return root


def tree(root: Path) -> set[str]:
    return {str(p.relative_to(root)) for p in root.rglob("*")}


@pytest.mark.parametrize("args, names", CASES, ids=[" ".join(a).replace(SEED, "SEED") or "none" for a, _ in CASES])
def test_bad_input_is_one_line_naming_it_with_status_2_and_leaves_nothing(workspace, args, names):
    before = tree(workspace)
    done = subprocess.run(
        [sys.executable, "-m", "evocode", *args], cwd=workspace, capture_output=True, text=True, timeout=120,
        env={**os.environ, "PYTHONPATH": os.pathsep.join([str(REPO), os.environ.get("PYTHONPATH", "")])},
    )
    assert done.returncode == 2, done.stderr
    assert "Traceback" not in done.stderr
    # argparse's usage lines (the first, and its indented continuations) may come before the error line.
    lines = error_lines(done.stderr)
    assert len(lines) == 1, done.stderr
    assert names in lines[0]
    assert tree(workspace) == before



def test_a_plugin_file_is_recorded_by_its_absolute_path():
    assert mutator_item("not_a_mutator.py:Thing") == f"{Path('not_a_mutator.py').resolve()}:Thing"
    assert mutator_item("mutators.layers:Activation") == "mutators.layers:Activation"

"""`python -m evocode mutate`: what the mutators propose, replayable from a seed, plugins included."""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from evocode.cli import main
from evocode.mutation import select_mutators

REPO = Path(__file__).resolve().parent.parent
PLUGINS = Path(__file__).parent / "plugins"


def evocode(*args: str, env: dict | None = None) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "evocode", *args], cwd=REPO, capture_output=True, text=True, env={**os.environ, **(env or {})}, timeout=120
    )


@pytest.fixture(scope="module")
def installed_plugin(tmp_path_factory) -> Path:
    """The test plugin package, built and installed for real (pip --target) into a fresh directory."""
    source = tmp_path_factory.mktemp("source") / "plugin"
    shutil.copytree(PLUGINS / "entry_point_plugin", source)
    target = tmp_path_factory.mktemp("site")
    subprocess.run(
        [sys.executable, "-m", "pip", "install", "--quiet", "--no-deps", "--no-build-isolation", "--no-index", "--target", str(target), str(source)],
        check=True,
        capture_output=True,
    )
    return target


def test_mutate_prints_n_diffs_each_with_its_description(capsys):
    assert main(["mutate", "seeds/train.py", "--n", "20", "--seed", "0"]) == 0
    variants = capsys.readouterr().out.split("# variant ")[1:]
    assert len(variants) == 20
    for variant in variants:
        header, diff = variant.split("\n", 1)
        assert re.fullmatch(r"\d+/20 \[\w+\] \S.*  \(site: .+\)", header), header
        assert diff.startswith("--- seeds/train.py\n+++ seeds/train.py (variant ") and "\n@@ " in diff


def test_the_same_seed_prints_the_same_bytes_whatever_the_hash_seed():
    first = evocode("mutate", "seeds/train.py", "--n", "4", "--seed", "0", env={"PYTHONHASHSEED": "1"})
    second = evocode("mutate", "seeds/train.py", "--n", "4", "--seed", "0", env={"PYTHONHASHSEED": "2"})
    assert first.returncode == 0 and first.stdout == second.stdout and first.stdout.count("# variant ") == 4


def test_another_seed_prints_other_variants(capsys):
    main(["mutate", "seeds/train.py", "--n", "4", "--seed", "0"])
    seed_0 = capsys.readouterr().out
    main(["mutate", "seeds/train.py", "--n", "4", "--seed", "1"])
    assert capsys.readouterr().out != seed_0


def test_list_shows_every_builtin_with_category_and_source(capsys):
    assert main(["mutate", "--list"]) == 0
    rows = [line.split(None, 2) for line in capsys.readouterr().out.splitlines()]
    builtins = [row for row in rows if row[2].startswith("built-in mutators.")]
    assert len(builtins) >= 12 and {row[1] for row in builtins} == {"hyperparameter", "architecture", "data", "optimization"}


def test_mutators_selects_a_category(capsys):
    main(["mutate", "seeds/train.py", "--n", "3", "--mutators", "data"])
    headers = [line for line in capsys.readouterr().out.splitlines() if line.startswith("# variant")]
    assert len(headers) == 3 and all("[batch_size]" in h or "[batch_vs_seq_len]" in h for h in headers)


def test_a_file_plugin_is_used_and_a_failing_one_is_skipped_with_a_warning(capsys, caplog):
    plugins = PLUGINS / "misbehaving.py"
    assert main(["mutate", "seeds/train.py", "--n", "3", "--mutators", f"{plugins}:Raises", "dropout"]) == 0
    out = capsys.readouterr().out
    assert out.count("[dropout]") == 3 and "mutator raises skipped: RuntimeError: this plugin has a bug" in caplog.text


def test_an_unknown_mutator_is_an_error_not_a_traceback(capsys):
    assert main(["mutate", "seeds/train.py", "--mutators", "no_such_mutator"]) == 2
    assert "unknown mutators or categories ['no_such_mutator']" in capsys.readouterr().err


def test_an_installed_entry_point_plugin_is_listed_and_used(installed_plugin):
    env = {"PYTHONPATH": str(installed_plugin)}
    listed = evocode("mutate", "--list", env=env)
    assert "halve_log_every      hyperparameter  entry point halve_log_every = evocode_test_plugin:HalveLogEvery" in listed.stdout
    used = evocode("mutate", "seeds/train.py", "--n", "1", "--mutators", "halve_log_every", env=env)
    assert "[halve_log_every] LOG_EVERY 50 → 25" in used.stdout and "+LOG_EVERY = 25" in used.stdout


def test_an_installed_entry_point_plugin_is_discovered_in_process(installed_plugin, monkeypatch):
    monkeypatch.syspath_prepend(str(installed_plugin))
    (entry,) = [e for e in select_mutators() if e.mutator.name == "halve_log_every"]
    assert entry.source.startswith("entry point") and entry.mutator.category == "hyperparameter"

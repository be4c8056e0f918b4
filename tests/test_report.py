"""`report`: a finished run gets progress.png and a self-contained report.html that a browser renders."""

from __future__ import annotations

import shutil
import subprocess
import sys

import pytest
from matplotlib import image

from conftest import REPO, error_lines, unfinished_copy
from evocode.outputs import best_of
from evocode.store import RunStore

CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")
needs_chromium = pytest.mark.skipif(
    CHROMIUM is None, reason="headless Chromium is not installed (`apt-get install -y chromium`); report.html is not rendered"
)


def evocode(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "evocode", *args], cwd=REPO, capture_output=True, text=True)


def chromium(page, user_data_dir, *args: str) -> subprocess.CompletedProcess:
    """Headless Chromium on a local page: no sandbox (containers), no GPU, no network of its own, a fresh profile."""
    return subprocess.run(
        [CHROMIUM, "--headless", "--no-sandbox", "--disable-gpu", "--no-first-run", "--disable-background-networking",
         "--disable-component-update", "--disable-sync", f"--user-data-dir={user_data_dir}", *args, page.as_uri()],
        capture_output=True, text=True, timeout=120, check=True,
    )


def best_id(run_dir) -> str:
    with RunStore.reader(run_dir) as store:
        return best_of(store.evaluated()).candidate.id


def test_evolve_leaves_a_progress_plot_and_a_report(finished_run):
    assert image.imread(finished_run / "progress.png").shape[0] > 100
    assert (finished_run / "report.html").is_file()


def test_the_report_is_one_file_with_the_plot_inlined(finished_run):
    page = (finished_run / "report.html").read_text()
    assert "src='data:image/png;base64," in page
    assert "<script" not in page and "http://" not in page and "https://" not in page


def test_the_report_names_the_best_shows_its_lineage_failures_and_settings(finished_run):
    page = (finished_run / "report.html").read_text()
    assert f"best <b>{best_id(finished_run)}</b>" in page
    for heading in ("Lineage of the best", "Failures", "Run settings"):
        assert f"<h2>{heading}</h2>" in page
    assert "g000-000" in page.split("Lineage of the best")[1]  # the lineage reaches the seed


def test_report_rewrites_the_page_on_request(finished_run):
    (finished_run / "report.html").unlink()
    result = evocode("report", str(finished_run))
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == str(finished_run / "report.html")
    assert (finished_run / "report.html").is_file()


@needs_chromium
def test_the_report_renders_in_headless_chromium(finished_run, tmp_path):
    page = finished_run / "report.html"
    shot = tmp_path / "shot.png"
    chromium(page, tmp_path / "profile-1", f"--screenshot={shot}", "--window-size=1280,1600")
    pixels = image.imread(shot)
    assert pixels.std() > 0.05, "the screenshot is blank"
    dom = chromium(page, tmp_path / "profile-2", "--dump-dom").stdout
    assert best_id(finished_run) in dom and "<img alt=\"progress plot\"" in dom


def test_report_on_a_directory_without_a_run_is_a_one_line_error(tmp_path):
    result = evocode("report", str(tmp_path))
    assert result.returncode == 2
    message = error_lines(result.stderr)
    assert len(message) == 1 and "holds no evocode run" in message[0]


def test_report_on_an_unfinished_run_is_a_one_line_error_that_says_resume(finished_run, tmp_path):
    run_dir = unfinished_copy(finished_run, tmp_path / "killed")
    result = evocode("report", str(run_dir))
    assert result.returncode == 2
    assert len(error_lines(result.stderr)) == 1 and f"evocode resume {run_dir}" in result.stderr

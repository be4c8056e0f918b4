"""The sandbox: a confined process reads, writes, connects and signals only as allowed.

Each test starts a real Python process that confines itself with
`confine` and then tries one thing; the last line it prints says whether
the kernel let it. The runner tests at the end run the seed and attacking
candidates through `evaluate` with `Limits(sandbox=True)`.
"""

from __future__ import annotations

import errno
import os
import shutil
import signal
import socket
import subprocess
import sys
from dataclasses import replace
from pathlib import Path

import pytest

from conftest import REPO, children_alive
from evocode.data import DEFAULT_CORPUS, load_corpus
from evocode.evaluation.runner import EvalResult, evaluate, format_result, last_error, run_isolated
from evocode.evaluation.sandbox import interpreter_paths, landlock_abi, prepare_confinement

pytestmark = pytest.mark.skipif(landlock_abi()[0] < 6, reason=f"needs Landlock ABI 6 or later: {landlock_abi()[1]}")

# The tried action's outcome, as the last line of output: "done", or the exception's class name.
_TRY = """
def attempt(action):
    try:
        action()
    except OSError as e:
        print(type(e).__name__, flush=True)
    else:
        print("done", flush=True)
"""


def run_confined(action: str, read_only=(), read_write=(), unreadable=()) -> list[str]:
    """Run `attempt(<action>)` in a fresh Python process confined to the given paths; its output lines.

    The first line is what `confine` returned, the last the outcome of the action.
    """
    read_only = [*interpreter_paths(), *map(str, read_only)]
    program = (
        f"import mmap, os, socket, signal, subprocess\n{_TRY}\n"
        "from evocode.evaluation.sandbox import confine\n"
        f"print(confine({read_only!r}, {list(map(str, read_write))!r}, {list(map(str, unreadable))!r}), flush=True)\n"
        f"attempt(lambda: {action})\n"
    )
    done = subprocess.run(
        [sys.executable, "-c", program], capture_output=True, text=True, timeout=60,
        env={**os.environ, "PYTHONPATH": str(REPO)},
    )
    assert done.returncode == 0, done.stderr
    return done.stdout.splitlines()


def outcome(action: str, **paths) -> str:
    return run_confined(action, **paths)[-1]


@pytest.fixture
def secret(tmp_path) -> Path:
    path = tmp_path / "denied" / "validation.txt"
    path.parent.mkdir()
    path.write_text("the held-out text\n")
    return path


def test_confine_reports_the_landlock_abi_it_applied(tmp_path):
    assert run_confined("None", read_write=[tmp_path]) == [f"landlock ABI {landlock_abi()[0]}", "done"]


def test_a_confined_process_writes_inside_its_directory(tmp_path):
    inside = tmp_path / "work" / "out.txt"
    inside.parent.mkdir()
    assert outcome(f"open({str(inside)!r}, 'w').write('x')", read_write=[inside.parent]) == "done"
    assert inside.read_text() == "x"


def test_a_confined_process_cannot_write_outside_its_directory(tmp_path):
    (tmp_path / "work").mkdir()
    outside = tmp_path / "outside.txt"
    assert outcome(f"open({str(outside)!r}, 'w')", read_write=[tmp_path / "work"]) == "PermissionError"
    assert not outside.exists()


def test_a_confined_process_cannot_modify_evocode_sources(tmp_path):
    copy = tmp_path / "site" / "evocode"
    shutil.copytree(REPO / "evocode", copy, ignore=shutil.ignore_patterns("__pycache__"))
    harness = copy / "harness.py"
    before = harness.read_bytes()
    action = f"open({str(harness)!r}, 'a').write('\\nbudget = 10**9\\n')"
    assert outcome(action, read_only=[copy.parent], read_write=[tmp_path / "work"]) == "PermissionError"
    assert harness.read_bytes() == before


@pytest.mark.parametrize(
    "read",
    ["open(PATH).read()", "os.read(os.open(PATH, os.O_RDONLY), 100)", "mmap.mmap(os.open(PATH, os.O_RDONLY), 0, prot=mmap.PROT_READ)"],
    ids=["open", "os.open", "mmap"],
)
def test_a_confined_process_cannot_read_a_denied_directory(secret, tmp_path, read):
    action = read.replace("PATH", repr(str(secret)))
    assert outcome(action, read_only=[tmp_path / "allowed"], read_write=[tmp_path / "work"]) == "PermissionError"


def test_a_cat_started_by_a_confined_process_cannot_read_a_denied_file(secret, tmp_path):
    action = f"print(subprocess.run(['cat', {str(secret)!r}], capture_output=True, text=True))"
    output = run_confined(action, read_write=[tmp_path / "work"])
    assert "Permission denied" in output[1] and "held-out" not in output[1]


def test_a_path_marked_unreadable_stays_unreadable_beneath_a_readable_directory(tmp_path):
    corpus = tmp_path / "corpus"
    corpus.mkdir()
    (corpus / "train.bin").write_text("train")
    (corpus / "hidden.bin").write_text("hidden")
    readable = outcome(f"open({str(corpus / 'train.bin')!r}).read()", read_only=[corpus], unreadable=[corpus / "hidden.bin"])
    hidden = outcome(f"open({str(corpus / 'hidden.bin')!r}).read()", read_only=[corpus], unreadable=[corpus / "hidden.bin"])
    assert (readable, hidden) == ("done", "PermissionError")


def test_a_path_marked_unreadable_stays_unreadable_beneath_nested_readable_directories(tmp_path):
    # As evocode's packaged corpus inside site-packages inside the interpreter's prefix.
    prefix, site = tmp_path / "prefix", tmp_path / "prefix" / "site"
    (site / "evocode" / "corpora").mkdir(parents=True)
    (site / "evocode" / "harness.py").write_text("harness")
    (site / "evocode" / "corpora" / "validation.txt").write_text("held out")
    paths = {"read_only": [prefix, site], "unreadable": [site / "evocode" / "corpora"]}
    readable = outcome(f"open({str(site / 'evocode' / 'harness.py')!r}).read()", **paths)
    hidden = outcome(f"open({str(site / 'evocode' / 'corpora' / 'validation.txt')!r}).read()", **paths)
    assert (readable, hidden) == ("done", "PermissionError")


def test_a_confined_process_cannot_connect_to_a_local_tcp_port():
    with socket.create_server(("127.0.0.1", 0)) as listener:
        port = listener.getsockname()[1]
        tried = outcome(f"socket.create_connection(('127.0.0.1', {port}), timeout=5)")
        listener.settimeout(0.5)
        with pytest.raises(TimeoutError):
            listener.accept()
    assert tried == "PermissionError"


def test_a_confined_process_cannot_bind_a_tcp_port():
    assert outcome("socket.create_server(('127.0.0.1', 0))") == "PermissionError"


def test_a_confined_process_cannot_connect_to_an_abstract_unix_socket_outside_it():
    name = f"\0evocode-test-{os.getpid()}"
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as listener:
        listener.bind(name)
        listener.listen()
        tried = outcome(f"socket.socket(socket.AF_UNIX).connect({name!r})")
    assert tried == "PermissionError"


def test_a_confined_process_cannot_signal_its_parent():
    received = []
    previous = signal.signal(signal.SIGUSR1, lambda *_: received.append(True))
    try:
        tried = outcome("os.kill(os.getppid(), signal.SIGUSR1)")
    finally:
        signal.signal(signal.SIGUSR1, previous)
    assert tried == "PermissionError"
    assert received == []


def test_a_confinement_prepared_before_a_fork_applies_in_the_child_of_a_torch_process(tmp_path):
    work, outside = tmp_path / "work", tmp_path / "outside.txt"
    work.mkdir()
    program = f"""
import os, torch
from evocode.evaluation.sandbox import interpreter_paths, prepare_confinement
torch.set_num_threads(2)
torch.ones(256, 256) @ torch.ones(256, 256)  # torch's thread pool is running when the worker forks
confinement = prepare_confinement(interpreter_paths(), [{str(work)!r}])
pid = os.fork()
if pid == 0:
    confinement.apply()
    open({str(work / "in.txt")!r}, "w").write("x")
    try:
        open({str(outside)!r}, "w")
    except PermissionError:
        os._exit(0)
    os._exit(1)
print(os.waitstatus_to_exitcode(os.waitpid(pid, 0)[1]))
"""
    done = subprocess.run([sys.executable, "-c", program], capture_output=True, text=True, timeout=120, env={**os.environ, "PYTHONPATH": str(REPO)})
    assert done.stdout.strip() == "0", done.stderr
    assert (work / "in.txt").read_text() == "x" and not outside.exists()


# --- through the runner ---------------------------------------------------------------


def test_the_seed_scores_the_same_in_the_sandbox(seed_source, tiny_spec, limits):
    free = evaluate(seed_source, tiny_spec, 0, replace(limits, sandbox=False))
    confined = evaluate(seed_source, tiny_spec, 0, replace(limits, sandbox=True))
    assert confined.status == "ok", confined.reason + confined.log_tail
    assert confined.sandbox == f"landlock ABI {landlock_abi()[0]}"
    assert confined.val_bpb == free.val_bpb
    assert free.sandbox == "off"


def test_the_sandbox_state_is_printed_with_the_result():
    assert "sandbox:          landlock ABI 7" in format_result(EvalResult(status="ok", sandbox="landlock ABI 7")).splitlines()


def test_a_sandboxed_candidate_cannot_write_outside_its_directory(tiny_spec, limits, tmp_path):
    target = tmp_path / "planted.txt"
    source = f"open({str(target)!r}, 'w').write('x')\n"
    result = evaluate(source, tiny_spec, 0, replace(limits, sandbox=True))
    assert result.status == "crash" and "PermissionError" in result.reason
    assert not target.exists()
    assert children_alive() == []


def test_a_sandboxed_candidate_cannot_read_the_rest_of_the_checkout(tiny_spec, limits):
    source = f"print(open({str(REPO / 'README.md')!r}).read())\n"
    result = evaluate(source, tiny_spec, 0, replace(limits, sandbox=True))
    assert result.status == "crash" and "PermissionError" in result.reason


@pytest.mark.parametrize("target", ["hidden split", "packaged corpus"])
def test_a_sandboxed_candidate_cannot_read_the_hidden_split_or_the_packaged_corpus(tiny_spec, limits, target):
    hidden = load_corpus(tiny_spec.corpus_dir).hidden_path
    path = hidden if target == "hidden split" else DEFAULT_CORPUS / "validation.txt.xz"
    source = f"print(open({str(path)!r}, 'rb').read(100))\n"
    result = evaluate(source, tiny_spec, 0, replace(limits, sandbox=True))
    assert result.status == "crash" and "PermissionError" in result.reason


def test_a_sandboxed_candidate_reads_its_own_proc_entries_but_not_its_parents(tiny_spec, limits):
    source = (
        "import os\n"
        "print('own status', open('/proc/self/status').read().startswith('Name:'))\n"
        "try:\n"
        "    open(f'/proc/{os.getppid()}/environ').read()\n"
        "    print('parent environ read')\n"
        "except PermissionError:\n"
        "    print('parent environ denied')\n"
    )
    result = evaluate(source, tiny_spec, 0, replace(limits, sandbox=True))
    assert "own status True" in result.log_tail and "parent environ denied" in result.log_tail


def test_a_confinement_the_kernel_refuses_stops_the_candidate_before_it_runs(tmp_path, limits):
    # A namespace file lives on an internal filesystem: landlock_add_rule refuses it (EBADFD).
    refused = prepare_confinement(interpreter_paths(), ["/proc/self/ns/net"])
    marker = tmp_path / "ran.txt"
    run = run_isolated([sys.executable, "-c", f"open({str(marker)!r}, 'w')"], str(tmp_path), dict(os.environ), limits, confinement=refused)
    assert run.returncode != 0 and not marker.exists()
    assert last_error(run.log_tail).startswith(f"evocode: the sandbox could not be applied: [Errno {errno.EBADFD}]")

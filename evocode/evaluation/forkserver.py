"""The fork server: one long-lived process per worker slot that forks a fresh child per candidate.

Starting Python and importing torch costs seconds (most of a GPU
evaluation); forking a process that has already imported them costs
milliseconds. The server imports torch, numpy and the harness's
dependencies once and then never runs anything else: it touches neither
CUDA nor torch's thread pools, imports no candidate and no harness (which
reads its measurement at import), so every child starts from the same
pristine state and nothing one candidate does can reach the next.

Protocol, one JSON object per line: the worker writes a request on the
server's stdin; the server answers `{"pid": ...}` once the child runs and
`{"returncode": ..., "timed_out": ..., "log_tail": ...}` when it is over.
A request names either a candidate `script` to run (sandboxed) or an
exported `model` to score: the scorer is a fork of this same pristine
process, so it never runs candidate code and starts with torch.export loaded.
While a candidate runs, the server also serves its training batches and
counts them (evocode.evaluation.feeder); the last answer carries the count
as `served`.
The server is single-threaded (a fork from a threaded process could inherit
a held lock), dies with the worker that started it (PR_SET_PDEATHSIG) and is
a child subreaper: a candidate's descendant that left its process group
with `setsid` is re-parented here when its parent exits, and is killed with
everything else the evaluation left behind.

Run as `python -m evocode.evaluation.forkserver`; see evocode.evaluation.workers.
"""

from __future__ import annotations

import ctypes
import gc
import json
import os
import select
import signal
import sys
import time

# What every candidate needs, imported once here instead of once per candidate.
import numpy  # noqa: F401
import torch  # noqa: F401
import torch._dynamo  # noqa: F401  (an optimizer's constructor imports it: seconds, once per candidate otherwise)
import torch.nn  # noqa: F401
import torch.nn.functional  # noqa: F401
import torch.optim  # noqa: F401

import torch._export.serde.serialize  # noqa: F401  (what the scorer loads an export with)
import torch.export  # noqa: F401
import torch.export._trace  # noqa: F401  (what harness.finish exports with: 0.2 s once per candidate otherwise)

from evocode.data import corpus_of
from evocode.evaluation import scorer
from evocode.evaluation.feeder import Feeder, ledger_for, open_feed
from evocode.evaluation.process import Limits, child_limits, kill_group
from evocode.evaluation.sandbox import Confinement, candidate_confinement
from evocode.spec import CORPUS_DIR_VAR, THREADS_VAR, EvalSpec

_PR_SET_PDEATHSIG = 1
_PR_SET_CHILD_SUBREAPER = 36
_POLL_S = 0.05


def main() -> None:
    libc = ctypes.CDLL(None, use_errno=True)
    libc.prctl(_PR_SET_PDEATHSIG, signal.SIGKILL)
    libc.prctl(_PR_SET_CHILD_SUBREAPER, 1)
    worker = os.getppid()
    # Every child's garbage collector would otherwise scan torch's objects again, all of them, on its first full
    # collection (a third of a second, in the middle of the export); frozen, they also stay shared with the children.
    gc.freeze()
    requests, replies = sys.stdin.buffer, sys.stdout.buffer
    for line in requests:
        request = json.loads(line)
        run = serve(request, worker, replies)
        _reply(replies, run)


def serve(request: dict, worker: int, replies) -> dict:
    """Fork the candidate (or the scorer), report its pid, supervise it to the end, and leave nothing of it behind."""
    limits = Limits(**request["limits"])
    confinement = _confinement(request) if limits.sandbox and "script" in request else None
    apply_limits = child_limits(limits, request["cuda_possible"], confinement)
    # A candidate's training batches come from this process, which counts them (evocode.evaluation.feeder).
    feeder, feed = open_feed(ledger_for(request["env"])) if "script" in request else (None, {})
    read_end, write_end = os.pipe()
    server = os.getpid()
    pid = os.fork()
    if pid == 0:
        _become_child(request, apply_limits, server, write_end, feed)  # never returns
    for fd in (write_end, *feed.values()):
        os.close(fd)
    exited = _exit_watch(pid)
    _reply(replies, {"pid": pid})
    try:
        status, timed_out, tail, projected = _supervise(pid, read_end, limits, worker, feeder, exited)
    finally:
        kill_group(pid)
        _reap_orphans()
        for fd in (read_end, *exited):
            os.close(fd)
        if feeder is not None:
            feeder.close()
    sandbox = confinement.state if confinement else "off"
    return {"returncode": _returncode(status), "timed_out": timed_out, "log_tail": tail, "sandbox": sandbox,
            "served": feeder.ledger.report() if feeder else None, "projected_s": projected}


def _confinement(request: dict) -> Confinement:
    """The candidate's Landlock rules, prepared here so the child only has to apply them."""
    corpus = corpus_of(request["env"].get(CORPUS_DIR_VAR))
    return candidate_confinement(request["cwd"], request["result_dir"], corpus, request["cuda_possible"])


def _become_child(request: dict, apply_limits, server: int, write_end: int, feed: dict[str, int]) -> None:
    """In the child: isolate, then run the candidate as `__main__`, as `python candidate.py` would, or score a model."""
    code = 1
    try:
        os.setsid()
        devnull = os.open(os.devnull, os.O_RDONLY)
        os.dup2(devnull, 0)
        os.dup2(write_end, 1)
        os.dup2(write_end, 2)
        _close_fds_except(set(feed.values()))  # the server's protocol pipes, among others, are not the candidate's
        os.chdir(request["cwd"])
        os.environ.clear()
        os.environ.update(request["env"])
        os.environ.update({var: str(fd) for var, fd in feed.items()})
        apply_limits()  # the sandbox last of all: from here on only what its rules allow
        if os.getppid() != server:  # the server died before PDEATHSIG was armed
            os._exit(1)
        code = _run_main(request["script"]) if "script" in request else _run_scorer(request["model"])
    finally:
        os._exit(code)


def _run_scorer(model: str) -> int:
    """Score the export; the record is the last line of the output."""
    import io

    sys.stdout = io.TextIOWrapper(io.FileIO(1, "w", closefd=False), write_through=True)
    sys.stderr = io.TextIOWrapper(io.FileIO(2, "w", closefd=False), write_through=True, errors="backslashreplace")
    torch.set_num_threads(int(os.environ.get(THREADS_VAR, "1")))
    scorer.print_record(scorer.score(model, EvalSpec.from_env()))
    return 0


def _run_main(script: str) -> int:
    """Run the script as the main module; the exit code Python itself would give."""
    import io
    import runpy
    import tempfile
    import traceback

    sys.stdin = open(0, "r", closefd=False)
    sys.stdout = io.TextIOWrapper(io.FileIO(1, "w", closefd=False), write_through=True)
    sys.stderr = io.TextIOWrapper(io.FileIO(2, "w", closefd=False), write_through=True, errors="backslashreplace")
    sys.argv = [script]
    sys.path[0] = os.path.dirname(script)
    tempfile.tempdir = None  # re-read TMPDIR: the candidate's own directory
    try:
        runpy.run_path(script, run_name="__main__")
        return 0
    except SystemExit as e:
        if e.code is None or isinstance(e.code, int):
            return e.code or 0
        print(e.code, file=sys.stderr)
        return 1
    except BaseException:
        traceback.print_exc()
        return 1
    finally:
        for stream in (sys.stdout, sys.stderr):
            try:
                stream.flush()
            except Exception:
                pass


def _exit_watch(pid: int) -> list[int]:
    """A descriptor that turns readable when the child exits (its pidfd), or none before Linux 5.3.

    Without it a child whose output has closed but who is not yet reaped is
    seen only at the next poll: up to 50 ms per candidate, and again per scorer.
    """
    try:
        return [os.pidfd_open(pid)]
    except (AttributeError, OSError):
        return []


def _supervise(pid: int, output: int, limits: Limits, worker: int, feeder: Feeder | None,
               exited: list[int]) -> tuple[int, bool, str, float | None]:
    """Drain output (keeping the tail) and serve batches until the child exits, its time is up (or, at its pace,
    would be before it finishes: the seconds it would need are returned), or the worker is gone."""
    deadline = time.monotonic() + limits.timeout_s
    tail = bytearray()
    open_output = True
    while True:
        watched = ([output] if open_output else []) + (feeder.readable() if feeder else []) + exited
        writing = feeder.writable() if feeder else []
        if watched or writing:
            readable, writable, _ = select.select(watched, writing, [], _POLL_S)
        else:
            readable, writable = [], []
            time.sleep(_POLL_S)
        if feeder is not None:
            feeder.on_ready(readable, writable)
        if output in readable:
            chunk = os.read(output, 65536)
            open_output = bool(chunk)
            tail += chunk
            if len(tail) > 2 * limits.log_tail_bytes:
                del tail[: -limits.log_tail_bytes]
        done, status = os.waitpid(pid, os.WNOHANG)
        if done:
            # Descendants may still hold the pipe open; what they write after the child's end is not its log.
            tail += _drain_now(output) if open_output else b""
            return status, False, _text(tail, limits), None
        projected = feeder.ledger.projected_seconds(limits.timeout_s) if feeder is not None else None
        if time.monotonic() > deadline or os.getppid() != worker or projected is not None:
            kill_group(pid)
            _, status = os.waitpid(pid, 0)
            return status, True, _text(tail, limits), projected


def _drain_now(output: int) -> bytes:
    found = b""
    while select.select([output], [], [], 0)[0]:
        chunk = os.read(output, 65536)
        if not chunk:
            break
        found += chunk
    return found


def _reap_orphans() -> None:
    """Kill and reap every process re-parented to this subreaper: what escaped the candidate's group."""
    me = str(os.getpid())
    for _ in range(100):
        orphans = _children(me)
        for pid in orphans:
            try:
                os.kill(pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
        while True:
            try:
                if os.waitpid(-1, os.WNOHANG)[0] == 0:
                    break
            except ChildProcessError:
                break
        if not orphans:
            return
        time.sleep(0.01)


def _children(parent: str) -> list[int]:
    found = []
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            with open(f"/proc/{entry}/stat") as f:
                stat = f.read()
        except OSError:
            continue
        if stat.rsplit(")", 1)[1].split()[1] == parent:
            found.append(int(entry))
    return found


def _returncode(status: int) -> int:
    return -os.WTERMSIG(status) if os.WIFSIGNALED(status) else os.WEXITSTATUS(status)


def _text(tail: bytearray, limits: Limits) -> str:
    return bytes(tail[-limits.log_tail_bytes :]).decode("utf-8", errors="replace")


def _close_fds_except(keep: set[int]) -> None:
    """Close every descriptor from 3 up but those in keep."""
    low = 3
    for fd in sorted(keep) + [_max_fd()]:
        os.closerange(low, fd)
        low = fd + 1


def _max_fd() -> int:
    return os.sysconf("SC_OPEN_MAX") if hasattr(os, "sysconf") else 1024


def _reply(replies, message: dict) -> None:
    replies.write(json.dumps(message).encode() + b"\n")
    replies.flush()


if __name__ == "__main__":
    main()

"""Warm workers: candidates forked from a fork server score as cold ones do, and nothing survives them.

Every test runs real programs through the real runner; the fork server is
the one this test process keeps (evaluate's default), so one candidate's
leftovers would show in the next.
"""

from __future__ import annotations

import os
import sys

import pytest

from conftest import children_alive, is_fork_server, live_processes, process_alive
from evocode.evaluation.process import DriverGone, run_isolated
from evocode.evaluation.runner import Limits, evaluate
from evocode.evaluation.workers import detect_gpus, run_warm
from evocode.executors.local import Slots

CORRUPTER = """
import sys, threading, time
import torch
import torch.nn.functional as F
torch.log_softmax = lambda *a, **k: 0
F.cross_entropy = lambda *a, **k: torch.tensor(0.0)
torch.manual_seed = lambda *a, **k: None
for i in range(1000):
    sys.modules[f"junk_module_{i}"] = object()
threading.Thread(target=time.sleep, args=(1000,), daemon=False).start()
print("corrupted", flush=True)
"""


def test_warm_and_cold_give_the_same_scores(seed_source, tiny_spec, limits):
    for seed in (0, 3):
        warm = evaluate(seed_source, tiny_spec, seed, limits, warm=True)
        cold = evaluate(seed_source, tiny_spec, seed, limits, warm=False)
        assert warm.status == cold.status == "ok", warm.reason + cold.reason
        assert warm.val_bpb == cold.val_bpb


def test_a_candidate_that_corrupts_module_state_does_not_change_the_next_score(seed_source, tiny_spec, limits):
    before = evaluate(seed_source, tiny_spec, 0, limits)
    corrupted = evaluate(CORRUPTER, tiny_spec, 0, Limits(timeout_s=20))
    after = evaluate(seed_source, tiny_spec, 0, limits)
    assert "corrupted" in corrupted.log_tail
    assert before.status == after.status == "ok"
    assert after.val_bpb == before.val_bpb
    assert children_alive() == []


@pytest.mark.parametrize("warm", [True, False], ids=["warm", "cold"])
def test_a_worker_whose_driver_is_gone_starts_nothing(tmp_path, warm):
    """A worker learns of its driver's death only when it looks; it must look before it starts the next candidate."""
    script = tmp_path / "candidate.py"
    script.write_text("open('started', 'w').close()\n")
    limits, env = Limits(timeout_s=20, sandbox=False), {"PATH": os.environ["PATH"]}
    if warm:  # a server up and idle, as between two candidates: it would fork at once
        assert run_warm(str(script), str(tmp_path), str(tmp_path), env, limits, cuda_possible=False).returncode == 0
        (tmp_path / "started").unlink()
    with pytest.raises(DriverGone):
        if warm:
            run_warm(str(script), str(tmp_path), str(tmp_path), env, limits, cuda_possible=False, driver_gone=lambda: True)
        else:
            run_isolated([sys.executable, str(script)], str(tmp_path), env, limits, driver_gone=lambda: True)
    assert not (tmp_path / "started").exists()
    assert children_alive() == []


def test_a_hang_that_ignores_sigterm_times_out_and_leaves_no_process(tiny_spec):
    program = "import os, signal\nsignal.signal(signal.SIGTERM, signal.SIG_IGN)\nprint(os.getpid(), flush=True)\nwhile True:\n    pass\n"
    result = evaluate(program, tiny_spec, 0, Limits(timeout_s=2))
    assert result.status == "timeout"
    assert not process_alive(int(result.log_tail.split()[0]))
    assert children_alive() == []


def test_a_setsid_daemon_does_not_outlive_its_evaluation(tiny_spec, limits):
    program = (
        "import os, time\n"
        "if os.fork() == 0:\n"
        "    os.setsid()\n"
        "    if os.fork() == 0:\n"
        "        print('daemon', os.getpid(), flush=True)\n"
        "        time.sleep(1000)\n"
        "    os._exit(0)\n"
        "time.sleep(0.5)\n"
    )
    result = evaluate(program, tiny_spec, 0, limits)
    daemon = int(result.log_tail.split("daemon")[1].split()[0])
    assert result.status == "crash"
    assert not process_alive(daemon)
    assert children_alive() == []


def test_a_burst_of_forks_is_killed_with_the_candidate(tiny_spec, limits):
    program = (
        "import os, time\n"
        "for _ in range(40):\n"
        "    if os.fork() == 0:\n"
        "        os.fork()\n"
        "        time.sleep(1000)\n"
        "print('forked', flush=True)\n"
    )
    result = evaluate(program, tiny_spec, 0, limits)
    assert "forked" in result.log_tail
    assert children_alive() == []


UNSANDBOXED = Limits(timeout_s=120, memory_mb=4096, sandbox=False)  # Landlock would not let it signal its server


def test_a_candidate_that_kills_its_server_once_is_rerun_on_a_fresh_one(seed_source, tiny_spec, tmp_path):
    marker = tmp_path / "killed-once"
    program = (
        f"import os, signal, pathlib\nmarker = pathlib.Path({str(marker)!r})\n"
        "if not marker.exists():\n    marker.touch()\n    os.kill(os.getppid(), signal.SIGKILL)\n"
    ) + seed_source
    result = evaluate(program, tiny_spec, 0, UNSANDBOXED)
    assert result.status == "ok", result.reason
    assert result.val_bpb == evaluate(seed_source, tiny_spec, 0, UNSANDBOXED).val_bpb
    assert children_alive() == []


def test_a_candidate_that_always_kills_its_server_is_a_crash_naming_it(tiny_spec):
    result = evaluate("import os, signal\nos.kill(os.getppid(), signal.SIGKILL)\n", tiny_spec, 0, UNSANDBOXED)
    assert result.status == "crash"
    assert result.reason.startswith("killed its evaluation worker")
    assert children_alive() == []


def test_the_server_stays_up_between_candidates(tiny_spec, limits):
    evaluate("print('one')\n", tiny_spec, 0, limits)
    servers = my_fork_servers()
    evaluate("print('two')\n", tiny_spec, 0, limits)
    assert len(servers) == 1 and my_fork_servers() == servers


def my_fork_servers() -> list[int]:
    """The fork servers this test process started."""
    return [pid for pid, parent in live_processes().items() if parent == os.getpid() and is_fork_server(pid)]


def test_each_gpu_slot_sees_only_its_gpu():
    slots = Slots(gpus=("0", "1"), per_gpu=2)
    assert slots.count == 4
    assert [slots.env(i) for i in range(4)] == [{"CUDA_VISIBLE_DEVICES": g} for g in ("0", "0", "1", "1")]
    assert Slots(workers=3).count == 3 and Slots(workers=3).env(2) == {}


def test_a_candidate_sees_the_gpu_its_slot_gives_it(tiny_spec, limits):
    program = "import os\nprint('visible', os.environ.get('CUDA_VISIBLE_DEVICES'), flush=True)\n"
    result = evaluate(program, tiny_spec, 0, limits, env={"CUDA_VISIBLE_DEVICES": "1"})
    assert "visible 1" in result.log_tail


def test_gpus_are_found_from_cuda_visible_devices(monkeypatch):
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "2, 5")
    assert detect_gpus() == ("2", "5")
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "-1")
    assert detect_gpus() == ()

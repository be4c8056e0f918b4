"""The score comes from a scorer that runs no candidate code: what a candidate does to its own process gains nothing.

Candidates go through the real runner; the archive checks are tried on a
real export of the seed model, doctored the way a cheating candidate would.
"""

from __future__ import annotations

import json
import zipfile
from pathlib import Path

import numpy as np
import pytest

from conftest import SEED_SCRIPT
from evocode.genome import apply_edits
from evocode.mutation import load_mutators
from evocode.program import Program
from evocode.evaluation.runner import evaluate
from evocode.evaluation.scorer import ScoreError, export_shape, load_program, score

PATCHES = {
    "cross_entropy": "import torch.nn.functional as F\nF.cross_entropy = lambda *a, **k: __import__('torch').zeros((), requires_grad=True)\n",
    "log_softmax": "import torch\ntorch.log_softmax = lambda x, dim: torch.zeros_like(x)\ntorch.Tensor.log_softmax = lambda self, dim: torch.zeros_like(self)\n",
    "gather and allclose": "import torch\ntorch.Tensor.gather = lambda self, dim, index: torch.zeros(index.shape)\ntorch.allclose = lambda *a, **k: True\n",
    "the harness's own functions": (
        "from evocode import harness\n"
        "harness.finish = lambda model: open(harness._result_path, 'w').write("
        "'{\"status\": \"ok\", \"val_bpb\": 0.01, \"tokens\": 0}')\n"
    ),
}


@pytest.fixture(scope="module")
def honest(seed_source, tiny_spec, limits):
    result = evaluate(seed_source, tiny_spec, 0, limits)
    assert result.status == "ok", result.reason
    return result


@pytest.mark.parametrize("patch", sorted(PATCHES))
def test_patching_torch_or_the_harness_before_finish_gains_nothing(patch, seed_source, tiny_spec, limits, honest):
    before_main = seed_source.replace("if __name__ == \"__main__\":", PATCHES[patch] + "\nif __name__ == \"__main__\":")
    result = evaluate(before_main, tiny_spec, 0, limits)
    assert result.status != "ok" or result.val_bpb >= honest.val_bpb, f"{patch}: scored {result.val_bpb}"


def test_a_model_torch_export_cannot_capture_ends_as_export_with_the_error(seed_source, tiny_spec, limits):
    source = seed_source.replace("        B, T = idx.shape\n", "        B, T = idx.shape\n        idx = torch.from_numpy(idx.numpy())\n")
    result = evaluate(source, tiny_spec, 0, limits)
    assert result.status == "export"
    assert "cannot be exported with torch.export" in result.reason
    assert result.val_bpb is None


def test_a_model_that_reads_the_validation_split_while_scored_is_refused(seed_source, tiny_spec, limits):
    source = seed_source.replace(
        "        return self.lm_head(x)\n",
        "        peek = torch.from_file(harness._corpus.val_path.as_posix(), size=16, dtype=torch.uint8)\n"
        "        return self.lm_head(x) + 0 * peek.sum()\n",
    )
    result = evaluate(source, tiny_spec, 0, limits)
    assert result.status != "ok"


@pytest.fixture(scope="module")
def export(tmp_path_factory, tiny_spec) -> Path:
    """A real export of the (untrained) seed model on the scoring shape, as the harness writes it."""
    import runpy

    import torch

    namespace = runpy.run_path(str(SEED_SCRIPT), run_name="seed")
    path = tmp_path_factory.mktemp("export") / "model.pt2"
    example = torch.zeros(export_shape(tiny_spec), dtype=torch.int64)
    torch.export.save(torch.export.export(namespace["GPT"]().eval(), (example,), strict=False), str(path))
    return path


def doctored(export: Path, tmp_path: Path, edit) -> Path:
    """The export with its graph description changed by edit (a function of the parsed model.json)."""
    copy = tmp_path / "model.pt2"
    with zipfile.ZipFile(export) as original, zipfile.ZipFile(copy, "w") as out:
        for info in original.infolist():
            data = original.read(info)
            if info.filename.endswith("/models/model.json"):
                model = json.loads(data)
                edit(model)
                data = json.dumps(model).encode()
            out.writestr(info, data)
    return copy


def test_an_honest_export_scores(export, tiny_spec):
    record = score(export, tiny_spec)
    assert record["status"] == "ok" and 0 < record["val_bpb"] < 9


def first_node(model: dict) -> dict:
    return model["graph_module"]["graph"]["nodes"][0]


@pytest.mark.parametrize("edit, refused", [
    (lambda m: first_node(m).update(target="torch.hub.load"), "not an aten operator"),
    (lambda m: first_node(m).update(target="builtins.eval"), "not an aten operator"),
    (lambda m: first_node(m).update(target="torch.ops.aten.from_file.default"), "not an aten operator"),
    (lambda m: m.update(guards_code=["__import__('os').system('true')"]), "guard code"),
    (lambda m: first_node(m)["inputs"][0].update(arg={"as_sym_int": {"as_expr": {"expr_str": "__import__('os')"}}}), "as_expr"),
    (lambda m: first_node(m)["outputs"][0]["as_tensor"].update(name="x; import os"), "not a plain name"),
    (lambda m: m["graph_module"]["signature"]["input_specs"][0]["parameter"].update(parameter_name='w", exec("1")) or ("'),
     "not a plain name"),
    (lambda m: m["graph_module"]["module_call_graph"][0]["signature"].update(out_spec='[1, {"type": "collections.OrderedDict"}]'),
     "not tensors"),
])
def test_an_archive_a_candidate_doctored_is_refused_before_torch_reads_it(export, tmp_path, edit, refused):
    with pytest.raises(ScoreError, match=refused):
        load_program(doctored(export, tmp_path, edit))


def test_an_operator_argument_that_is_not_a_name_is_accepted(tmp_path, tiny_spec):
    import torch

    class Einsum(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.embed = torch.nn.Embedding(256, 256)

        def forward(self, idx):
            return torch.einsum("btc,cd->btd", self.embed(idx), torch.eye(256))

    path = tmp_path / "model.pt2"
    torch.export.save(torch.export.export(Einsum(), (torch.zeros(export_shape(tiny_spec), dtype=torch.int64),)), str(path))
    assert score(path, tiny_spec)["status"] == "ok"


def test_a_file_that_is_not_an_export_is_refused(tmp_path, tiny_spec):
    (tmp_path / "model.pt2").write_bytes(b"not a zip")
    record = score(tmp_path / "model.pt2", tiny_spec)
    assert record["status"] == "export" and "not a torch.export archive" in record["reason"]


@pytest.mark.parametrize("name", sorted(m.name for m in load_mutators()))
def test_every_builtins_variant_of_the_seed_exports_and_scores(name, seed_source, tiny_spec, limits):
    """The scorer is not stricter for honest programs: the built-ins' edits export and score."""
    mutator = next(m for m in load_mutators() if m.name == name)
    edit = mutator.propose(Program(seed_source), np.random.default_rng(0))
    result = evaluate(apply_edits(seed_source, [edit]), tiny_spec, 0, limits)
    assert result.status in ("ok", "nan"), f"{edit.description}: {result.status} {result.reason}"


def test_a_link_planted_in_place_of_the_export_is_not_followed(tmp_path, tiny_spec, export):
    (tmp_path / "model.pt2").symlink_to(export)
    record = score(tmp_path / "model.pt2", tiny_spec)
    assert record["status"] == "export" and "not a regular file" in record["reason"]


class Leaky:
    """Logits from a running sum of one-hot tokens (causal), plus, optionally, what a cheating model would add."""

    def __init__(self, leak: str | None = None):
        self.leak = leak

    def __call__(self, x):
        import torch

        onehot = torch.nn.functional.one_hot(x, 256).float()
        out = onehot.cumsum(dim=1)
        if self.leak == "next token":
            out[:, :-1] += onehot[:, 1:]
        elif self.leak == "last token, late positions":  # only a cut at the very end can see it
            half = x.shape[1] // 2
            out[:, half:-1] += onehot[:, -1:]
        elif self.leak == "batch mean":
            out += onehot.mean(dim=0, keepdim=True)
        return out


@pytest.mark.parametrize("rows", [2, 3, 32])
@pytest.mark.parametrize("leak, rule", [(None, None), ("next token", "sees the future"),
                                        ("last token, late positions", "sees the future"),
                                        ("batch mean", "other sequences")])
def test_the_checks_catch_a_model_that_sees_later_tokens_or_other_rows(rows, leak, rule):
    import torch

    from evocode.evaluation.scorer import check_integrity

    x = torch.randint(0, 256, (rows, 16), generator=torch.Generator().manual_seed(0))
    model = Leaky(leak)
    found = check_integrity(model, x, model(x))
    assert (found == []) if rule is None else any(rule in f for f in found), found

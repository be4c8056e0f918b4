"""The score, computed in a process that runs no candidate code.

`harness.finish(model)` exports the trained model with `torch.export` on one
fixed input shape (`export_shape`) and saves it where only the runner looks;
this module loads that graph and its weights in a separate process (forked
from the worker's fork server, or `python -m evocode.evaluation.scorer`
cold), runs the integrity checks on it and computes `val_bpb` on validation
windows the candidate process never had. Nothing the candidate did to its own
process (replaced losses, patched torch, edited counters) can reach here.

What is trusted: torch and this module. What is not: the archive, which the
candidate wrote. `torch.export.load` is not built for untrusted files, so
the archive is checked and rewritten before torch reads it:
- every graph node must call a `torch.ops.aten` operator (or take an item of
  a tuple): no Python callables, no custom or higher-order operators, and
  none of the aten operators that read or write files (`from_file`, `save`),
  since the scorer can read the scored split;
- no symbolic shapes, range constraints, guard code, custom or opaque
  objects, or pickled weights (symbolic expressions are parsed with sympy's
  `sympify`, which evaluates Python; guard code is compiled; opaque objects
  are unpickled), which a fixed-shape export never has;
- every name and attribute path is plain (word characters and dots: FX
  writes them into the source it generates and runs), and the input and
  output structures are tuples, lists and dicts of tensors only;
- node metadata (stack traces, module paths) is dropped unread;
- the archive itself must be a regular file, not a link the candidate
  planted (to the scored split, say);
- torch.load runs with TORCH_FORCE_WEIGHTS_ONLY_LOAD, so the sample inputs
  and any fallback unpickle only tensors.
The checks then run the graph on fixed inputs: changing future tokens must
not change earlier logits, and changing the other rows of a batch must not
change a row's logits.
"""

from __future__ import annotations

import io
import json
import math
import os
import re
import sys
import time
import zipfile
from pathlib import Path

import numpy as np

from evocode.data import VOCAB_SIZE, corpus_of
from evocode.spec import EvalSpec

EXPORT_NAME = "model.pt2"
EVAL_BATCH = 32
_TOLERANCE = 1e-4
_ALLOWED_TARGET = re.compile(r"torch\.ops\.aten\.\w+\.\w+|_operator\.getitem")
# aten operators that touch files: a graph must not read the scored split from disk.
_FILE_OPERATORS = {"from_file", "save"}
# Names, module paths and attribute paths: FX writes them into the Python source it generates and runs.
_PLAIN = re.compile(r"[\w.]*")
_SPEC_TYPES = {None, "builtins.tuple", "builtins.list", "builtins.dict"}
_FORBIDDEN_KEYS = {"as_expr", "as_sym_int", "as_sym_ints", "as_sym_bool", "as_sym_bools", "as_sym_float",
                   "as_sym_floats", "as_custom_obj", "as_graph", "as_operator"}


class ScoreError(RuntimeError):
    """The model cannot be scored: its archive is refused or cannot be loaded."""


class IntegrityError(RuntimeError):
    """The model breaks a rule of the measurement: its output is not the logits asked for."""


def window_count(spec: EvalSpec) -> int:
    return max(1, spec.eval_tokens // spec.context_length)


def export_shape(spec: EvalSpec) -> tuple[int, int]:
    """The one input shape a model is exported on and scored with: (rows, context_length).

    At least two rows, so that row independence can be checked on the same shape.
    """
    return max(2, min(EVAL_BATCH, window_count(spec))), spec.context_length


def score(model_path: str | os.PathLike, spec: EvalSpec) -> dict:
    """The record of one exported model: status (ok, nan, integrity or export), val_bpb, violations, reason."""
    started = time.perf_counter()
    try:
        record = _judged(load_program(model_path), spec)
    except ScoreError as e:
        record = {"status": "export", "reason": str(e), "val_bpb": None, "violations": []}
    return {**record, "eval_seconds": time.perf_counter() - started}


def _judged(program, spec: EvalSpec) -> dict:
    import torch

    rows = export_shape(spec)[0]
    device = _device_of(program)
    model = program.module()
    windows = validation_windows(spec)
    try:
        with torch.no_grad():
            # The checks run on the first validation batch, whose logits the validation loss then reuses.
            x = _batch(windows, 0, rows)[:, :-1].to(device)
            first = logits(model, x)
            violations = check_integrity(model, x, first)
            val_bpb = None if violations else validation_bpb(model, windows, rows, device, first)
    except IntegrityError as e:
        violations, val_bpb = [str(e)], None
    if violations:
        return {"status": "integrity", "reason": "", "val_bpb": None, "violations": violations}
    if not math.isfinite(val_bpb):
        return {"status": "nan", "reason": "", "val_bpb": None, "violations": []}
    return {"status": "ok", "reason": "", "val_bpb": val_bpb, "violations": []}


def load_program(model_path: str | os.PathLike):
    """The ExportedProgram in the archive, once the archive passes the checks in this module's docstring."""
    import torch

    os.environ["TORCH_FORCE_WEIGHTS_ONLY_LOAD"] = "1"
    try:
        sanitized = _sanitized(Path(model_path))
        program = torch.export.load(sanitized)
    except ScoreError:
        raise
    except Exception as e:
        raise ScoreError(f"the exported model cannot be loaded: {type(e).__name__}: {first_line(e)}") from None
    for node in program.graph.nodes:
        if node.op == "call_function" and not _allowed_callable(node.target):
            raise ScoreError(f"the exported graph calls {node.target}, which is not an aten operator")
    return program


def _sanitized(path: Path) -> io.BytesIO:
    """A copy of the archive that torch may read: checked, with the model's metadata dropped."""
    # The candidate wrote this directory: a link or a FIFO in place of the archive is not followed.
    if path.is_symlink() or not path.is_file():
        raise ScoreError(f"the exported model {path.name} is missing or not a regular file")
    try:
        archive = zipfile.ZipFile(path)
    except (OSError, zipfile.BadZipFile) as e:
        raise ScoreError(f"the exported model is not a torch.export archive: {e}") from None
    out = io.BytesIO()
    with archive, zipfile.ZipFile(out, "w") as copy:
        for info in archive.infolist():
            data = archive.read(info)
            name = info.filename
            if name.endswith("/models/model.json"):
                data = json.dumps(_checked_model(json.loads(data))).encode()
            elif name.endswith("_weights_config.json") or name.endswith("_constants_config.json"):
                _check_tensor_config(json.loads(data), name)
            copy.writestr(info, data)
    out.seek(0)
    return out


def _checked_model(model: dict) -> dict:
    graph_module = model["graph_module"]
    graph = graph_module["graph"]
    if model.get("guards_code") or model.get("range_constraints"):
        raise ScoreError("the exported model has symbolic shapes or guard code; export it on the fixed scoring shape")
    for table in ("sym_int_values", "sym_bool_values", "sym_float_values", "custom_obj_values"):
        if graph.get(table):
            raise ScoreError(f"the exported graph has {table.replace('_', ' ')}, which the scorer does not accept")
    for node in graph["nodes"]:
        target = node.get("target")
        if not isinstance(target, str) or not _ALLOWED_TARGET.fullmatch(target) or target.split(".")[-2] in _FILE_OPERATORS:
            raise ScoreError(f"the exported graph calls {node.get('target')!r}, which is not an aten operator")
        node["metadata"] = {}
    graph_module["metadata"] = {}
    forbidden = _keys(graph) & _FORBIDDEN_KEYS
    if forbidden:
        raise ScoreError(f"the exported graph holds {', '.join(sorted(forbidden))}, which the scorer does not accept")
    _check_strings(model)
    return model


def _check_tensor_config(config: dict, name: str) -> None:
    for fqn, entry in config.get("config", {}).items():
        if entry.get("use_pickle") or not str(entry.get("path_name", "")).startswith(("weight_", "tensor_")):
            raise ScoreError(f"the exported model stores {fqn} as something other than a plain tensor ({name})")


def _keys(value) -> set[str]:
    if isinstance(value, dict):
        return set(value) | {k for v in value.values() for k in _keys(v)}
    if isinstance(value, list):
        return {k for v in value for k in _keys(v)}
    return set()


def _check_strings(value, key: str = "") -> None:
    """Every string of the model is a plain name or path, but operator arguments and the input and output structures."""
    if isinstance(value, dict):
        for k, v in value.items():
            if not _PLAIN.fullmatch(k):
                raise ScoreError(f"the exported graph has a key that is not a plain name: {k[:40]!r}")
            if k in ("in_spec", "out_spec"):
                _check_spec(v)
            elif k not in ("torch_version", "as_string", "as_strings"):  # argument strings are written with repr()
                _check_strings(v, k)
    elif isinstance(value, list):
        for v in value:
            _check_strings(v, key)
    elif isinstance(value, str) and not _PLAIN.fullmatch(value):
        raise ScoreError(f"the exported graph has a {key} that is not a plain name: {value[:40]!r}")


def _check_spec(text: str) -> None:
    """An input or output structure: tuples, lists and keyword-free dicts of tensors, nothing else to rebuild."""
    try:
        _, tree = json.loads(text)
    except (TypeError, ValueError):
        raise ScoreError("the exported model's input or output structure cannot be read") from None
    pending = [tree]
    while pending:
        node = pending.pop()
        if not isinstance(node, dict) or node.get("type") not in _SPEC_TYPES or node.get("context") not in (None, "null", "[]"):
            raise ScoreError("the exported model's inputs or outputs are not tensors, tuples or lists")
        pending += node.get("children_spec") or []


def _allowed_callable(target) -> bool:
    import operator

    import torch

    if target is operator.getitem:
        return True
    return isinstance(target, torch._ops.OpOverload) and target.namespace == "aten" and target._opname not in _FILE_OPERATORS


def _device_of(program):
    import torch

    tensors = [*program.state_dict.values(), *program.constants.values()]
    return next((t.device for t in tensors if isinstance(t, torch.Tensor)), torch.device("cpu"))


def validation_windows(spec: EvalSpec):
    """The same evenly spaced windows of the scored split for every candidate and every seed."""
    import torch

    corpus = corpus_of(spec.corpus_dir)
    path = corpus.val_path if spec.split == "validation" else corpus.hidden_path
    text = np.memmap(path, dtype=np.uint8, mode="r")
    length = spec.context_length
    starts = np.linspace(0, len(text) - length - 1, window_count(spec)).astype(np.int64)
    return torch.from_numpy(np.stack([text[s : s + length + 1] for s in starts]).astype(np.int64))


def _batch(windows, start: int, rows: int):
    """rows windows from start, wrapping around to the first ones where too few are left (the shape is fixed)."""
    import torch

    index = torch.arange(start, start + rows) % len(windows)
    return windows[index]


def logits(model, x):
    import torch

    try:
        out = model(x)
    except Exception as e:
        raise ScoreError(f"the exported model does not run on the scoring input {tuple(x.shape)}: {type(e).__name__}: {first_line(e)}") from None
    if isinstance(out, (tuple, list)) and out:
        out = out[0]
    if not isinstance(out, torch.Tensor):
        raise IntegrityError(f"model(x) must return logits as a tensor, got {type(out).__name__}")
    expected = (x.shape[0], x.shape[1], VOCAB_SIZE)
    if tuple(out.shape) != expected:
        raise IntegrityError(f"model(x) must return logits of shape {expected}, got {tuple(out.shape)}")
    return out.float()


def _same(a, b) -> bool:
    import torch

    scale = max(1.0, float(a.abs().max()))
    return bool(torch.allclose(a, b, rtol=_TOLERANCE, atol=_TOLERANCE * scale))


def check_integrity(model, x, base) -> list[str]:
    """Logits at a position may depend only on tokens at or before it, and only on its own row.

    base: the model's logits on x. Two more forward passes, each a tenth of
    a scorer's work: in the first, each row has its tokens from a cut point
    on replaced (the cuts 1, length/2 and length − 1 in turn down the rows,
    so each is tried on every third row) and its logits before the cut must
    not move; in the second, every row but the first is replaced and the
    first row's logits must not move.
    """
    import torch

    found = []
    if not bool(torch.isfinite(base).all()):
        return found  # a diverged model cannot be judged; its validation loss reports it as nan
    rows, length = x.shape
    cuts = sorted({1, length // 2, length - 1})
    for shift in range(0, len(cuts), rows):  # one pass, unless there are fewer rows than cuts
        changed, before = x.clone(), torch.zeros(x.shape, dtype=torch.bool, device=x.device)
        for row in range(rows):
            cut = cuts[(row + shift) % len(cuts)]
            changed[row, cut:] = (changed[row, cut:] + 1 + torch.arange(length - cut, device=x.device) % 255) % VOCAB_SIZE
            before[row, :cut] = True
        if not _same(base[before], logits(model, changed)[before]):
            found.append("logits before a position change when later tokens change (the model sees the future)")
            break
    others = x.clone()
    others[1:] = (others[1:] + 1 + torch.arange(rows - 1, device=x.device)[:, None]) % VOCAB_SIZE
    if not _same(base[0], logits(model, others)[0]):
        found.append("logits of one sequence depend on other sequences in the batch")
    return found


def validation_bpb(model, windows, rows: int, device, first) -> float:
    """Bits per byte over all windows, run in batches of the fixed shape (the last one padded, its padding not counted).

    first: the model's logits on the first batch, computed once for the integrity checks.
    """
    import torch

    nats, count = 0.0, 0
    for start in range(0, len(windows), rows):
        chunk = _batch(windows, start, rows).to(device)
        real = min(rows, len(windows) - start)
        out = first if start == 0 else logits(model, chunk[:, :-1])
        logp = torch.log_softmax(out, dim=-1)[:real]
        nats -= float(logp.gather(-1, chunk[:real, 1:, None]).sum())
        count += chunk[:real, 1:].numel()
    return nats / count / math.log(2)


def first_line(error: BaseException) -> str:
    text = str(error).strip()
    return text.splitlines()[0][:300] if text else ""


def print_record(record: dict) -> None:
    """The record as the last line of stdout, where whoever started the scorer reads it."""
    sys.stdout.write("\n" + json.dumps(record) + "\n")
    sys.stdout.flush()


def read_record(output: str) -> dict | None:
    """The scorer's record from its output (the last line), or None if it did not finish."""
    lines = [line for line in output.splitlines() if line.strip()]
    try:
        record = json.loads(lines[-1]) if lines else None
    except ValueError:
        return None
    return record if isinstance(record, dict) and "status" in record else None


def main() -> None:
    """`python -m evocode.evaluation.scorer MODEL`: score the exported model under the spec in the environment."""
    import torch

    threads = os.environ.get("EVOCODE_THREADS")
    if threads:
        torch.set_num_threads(int(threads))
    print_record(score(sys.argv[1], EvalSpec.from_env()))


if __name__ == "__main__":
    main()

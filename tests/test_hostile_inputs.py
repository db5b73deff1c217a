"""Hostile inputs to the four commands (predict, evaluate, train, export), issue 28 item 9.

Every case runs the real job in-process on a config composed as the entry point composes it, and checks three
things: the exit status (a user error is `SystemExit(1)`), the message (one console line, "data error: ..." or
"training stopped: ...", naming the file or argument, no traceback), and the output folder (nothing partial
written, nothing an earlier run or the user left there lost or changed).

Checkpoints, resumed run directories and images are data: a `_target_` they hold that names anything but a
registered class must never be imported or called. Those cases carry a SENTINEL file that the payload would
create, truncate, overwrite or delete, and check its bytes afterwards.
"""

from __future__ import annotations

import copy
import json
import os
import socket
import struct
import subprocess
import sys
import zlib
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch
from conftest import TINY, compose
from PIL import Image

from landmark_exp import folders
from landmark_exp.evaluation import evaluate
from landmark_exp.export import export
from landmark_exp.predict import predict
from landmark_exp.resume import resume_argv
from landmark_exp.training import train

SENTINEL_TEXT = "sentinel: untouched\n"
NO_FILES = frozenset()
# what a job that failed on a user error may leave in its run directory besides its inputs: the config it was
# given, the provenance record and the error (never a result, never the lock)
RUN_RECORDS = frozenset({"config.yaml", "run_info.json", "error.txt"})


# ----------------------------------------------------------------------------------------------------- helpers


def _snapshot(folder: Path) -> dict[str, bytes]:
    """Every file below `folder` (relative path -> bytes); {} when it does not exist."""
    if not folder.exists():
        return {}
    return {str(p.relative_to(folder)): p.read_bytes() for p in sorted(folder.rglob("*")) if p.is_file()}


def _strict_json(path: Path) -> object:
    """The file parsed as strict JSON: NaN, Infinity and -Infinity are not JSON."""
    def refuse(name: str) -> None:
        raise ValueError(f"{path}: non-standard JSON constant {name}")

    return json.loads(path.read_text(), parse_constant=refuse)


def _refused(capsys, excinfo, *names: object, prefix: str = "data error:", code: int = 1) -> str:
    """The job stopped with `code` and ONE console line starting with `prefix` that names each of `names`;
    no traceback anywhere. Returns the line."""
    assert excinfo.value.code == code, excinfo.value.code
    captured = capsys.readouterr()
    lines = [ln for ln in captured.out.splitlines() if ln.strip().startswith(("data error:", "training stopped:"))]
    assert len(lines) == 1, captured.out[-3000:]
    line = lines[0].strip()
    assert line.startswith(prefix), line
    assert "Traceback" not in captured.out + captured.err
    for name in names:
        assert str(name) in line, (name, line)
    return line


def _leftovers(folder: Path, before: dict[str, bytes], allowed: frozenset[str] = RUN_RECORDS) -> set[str]:
    """Assert that nothing `folder` held before changed or went, and return what is new there (which must be
    among `allowed`: never a result file, never the lock)."""
    after = _snapshot(folder)
    for name, data in before.items():
        assert name in after, f"{folder / name} was deleted"
        assert after[name] == data, f"{folder / name} was changed"
    new = set(after) - set(before)
    assert new <= allowed, f"partial output left in {folder}: {sorted(new - allowed)}"
    assert folders.LOCK_NAME not in after, "the run's lock file was left behind"
    return new


def _png(path: Path, h: int = 40, w: int = 48, seed: int = 0) -> Path:
    rng = np.random.default_rng(seed)
    Image.fromarray(rng.integers(0, 255, (h, w), dtype=np.uint8)).save(path)
    return path


def _header_only_png(path: Path, width: int, height: int) -> Path:
    """A PNG whose header claims width x height pixels and that holds no pixel data: a decompression bomb's
    header (the real thing is a few KB of zeros that decode to gigabytes)."""
    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data) & 0xFFFFFFFF)

    ihdr = struct.pack(">IIBBBBB", width, height, 8, 0, 0, 0, 0)
    path.write_bytes(b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IEND", b""))
    return path


@pytest.fixture(scope="module")
def base_ckpt(tiny_run) -> dict:
    """tiny_run's best.ckpt as plain data (weights only), read once; deep-copy before editing."""
    return torch.load(tiny_run["ckpt"], weights_only=True)


@pytest.fixture
def sentinel(tmp_path) -> Path:
    """A file (in a folder of its own) that each code-execution payload would truncate, overwrite or delete."""
    folder = tmp_path / "sentinel_dir"
    folder.mkdir()
    path = folder / "sentinel.txt"
    path.write_text(SENTINEL_TEXT)
    return path


def _sentinel_intact(sentinel: Path) -> None:
    assert sentinel.is_file(), f"{sentinel} was deleted: code named by a file ran"
    assert sentinel.read_text() == SENTINEL_TEXT, f"{sentinel} was changed: code named by a file ran"
    assert not (sentinel.parent / "pwned").exists(), "code named by a file ran"


# ------------------------------------------------------------------------------------- crafted checkpoints

PAYLOAD_MODULE = "landmark_exp_hostile_payload"


class _Pickled:
    """Unpickling this would truncate the sentinel: what a malicious pickle in a checkpoint runs."""

    def __init__(self, path: Path) -> None:
        self.path = str(path)

    def __reduce__(self):
        return (open, (self.path, "w"))


def _payload_module(tmp_path: Path, sentinel: Path, monkeypatch) -> str:
    """A module on sys.path that overwrites the sentinel when imported (importlib.import_module's payload)."""
    folder = tmp_path / "site"
    folder.mkdir(exist_ok=True)
    (folder / f"{PAYLOAD_MODULE}.py").write_text(f"open({str(sentinel)!r}, 'w').write('pwned by import')\n")
    monkeypatch.syspath_prepend(str(folder))
    monkeypatch.delitem(sys.modules, PAYLOAD_MODULE, raising=False)
    return PAYLOAD_MODULE


def _edit_hp(key_path: str, value):
    """An edit putting `value` at hyper_parameters[key_path] (dots: nested keys)."""
    def edit(ckpt: dict, s: Path) -> None:
        *parents, last = key_path.split(".")
        node = ckpt["hyper_parameters"]
        for p in parents:
            node = node[p]
        node[last] = value(s) if callable(value) else value
    return edit


def _nan_weights(ckpt: dict, s: Path) -> None:
    name = next(k for k, v in ckpt["state_dict"].items() if v.is_floating_point())
    ckpt["state_dict"][name] = torch.full_like(ckpt["state_dict"][name], float("nan"))


def _pickled_payload(ckpt: dict, s: Path) -> None:
    ckpt["hyper_parameters"]["extra"] = _Pickled(s)


def _not_a_tensor(ckpt: dict, s: Path) -> None:
    ckpt["state_dict"]["net.evil"] = "not a tensor"


def _no_hparams(ckpt: dict, s: Path) -> None:
    del ckpt["hyper_parameters"]


def _oc_create(target: str, **kwargs: str) -> str:
    """An OmegaConf interpolation that, once resolved, is a config node naming `target` with `kwargs`."""
    inner = ", ".join(f"{k}: {v!r}".replace("'", '"') for k, v in kwargs.items())
    return "${oc.create:{_target_: " + target + (", " + inner if inner else "") + "}}"


# (id, edit(ckpt, sentinel) | raw file bytes, words the message holds). Every id reads as what the file holds.
CRAFTED = [
    ("model-target-builtins.open-as-kwargs",
     _edit_hp("model", lambda s: {"_target_": "builtins.open", "file": str(s), "mode": "w"}), "refused _target_ 'builtins.open'"),
    ("loss-target-builtins.open-with-_args_",
     _edit_hp("loss", lambda s: {"_target_": "builtins.open", "_args_": [str(s), "w"]}), "refused"),
    ("data.source-target-shutil.copyfile",
     _edit_hp("data.source", lambda s: {"_target_": "shutil.copyfile", "src": __file__, "dst": str(s)}),
     "refused _target_ 'shutil.copyfile'"),
    ("data.augment-target-shutil.rmtree",
     _edit_hp("data.augment.affine", lambda s: {"_target_": "shutil.rmtree", "path": str(s.parent)}),
     "refused _target_ 'shutil.rmtree'"),
    ("optimizer-target-os.system",
     _edit_hp("optimizer", lambda s: {"_target_": "os.system", "command": f"echo pwned > {s}"}),
     "refused _target_ 'os.system'"),
    ("scheduler-target-subprocess.run",
     _edit_hp("scheduler", lambda s: {"_target_": "subprocess.run", "args": ["sh", "-c", f"echo pwned > {s}"]}),
     "refused _target_ 'subprocess.run'"),
    ("data-target-importlib.import_module",
     _edit_hp("data", {"_target_": "importlib.import_module", "name": PAYLOAD_MODULE}),
     "refused _target_ 'importlib.import_module'"),
    ("model-target-collections.OrderedDict", _edit_hp("model._target_", "collections.OrderedDict"),
     "refused _target_ 'collections.OrderedDict'"),
    ("model-target-module-reached-through-an-allowed-namespace",
     _edit_hp("model._target_", "torch.optim.lr_scheduler.warnings"), "refused _target_"),
    ("model-target-not-a-dotted-name", _edit_hp("model._target_", "os.system('id')"), "is not a class name"),
    ("model-_partial_-key", _edit_hp("model._partial_", True), "refused key '_partial_'"),
    ("model-_args_-key", _edit_hp("model._args_", [1, 19]), "refused key '_args_'"),
    ("unknown-hyper-parameter", _edit_hp("callback", {"x": 1}), "unknown keys ['callback']"),
    ("nan-weights", _nan_weights, "NaN or infinite"),
    ("pickled-payload", _pickled_payload, "refused to load"),
    ("state_dict-entry-not-a-tensor", _not_a_tensor, "is not a tensor"),
    ("weights-without-hyper-parameters", _no_hparams, "not a landmark_exp checkpoint"),
    ("weights-of-other-layer-widths", _edit_hp("model.widths", [8, 8, 8, 8]), "weights do not fit"),
    ("a-text-file", b"model: unet\nweights: none\n", "not a PyTorch checkpoint file"),
    ("a-broken-zip-archive", b"PK\x03\x04" + b"\0" * 60, "not a readable PyTorch checkpoint"),
    ("an-empty-file", b"", "not a PyTorch checkpoint file"),
    # values a registered class refuses: one line saying the stored config is not a valid model
    ("model.activation-unknown", _edit_hp("model.activation", "nosuch"), "does not describe a valid model"),
    ("model.widths-not-a-list", _edit_hp("model.widths", "abc"), "does not describe a valid model"),
    ("loss-unknown-argument", _edit_hp("loss.bogus", 1), "does not describe a valid model"),
    ("heatmap.decoder-unknown", _edit_hp("heatmap.decoder", "nosuch"), "does not describe a valid model"),
    ("input_size-zero", _edit_hp("input_size", [0, 0]), "input size"),
    ("input_size-negative", _edit_hp("input_size", [-5, 7]), "input size"),
]

COMMANDS = ("predict", "evaluate", "export")


def _crafted_params():
    for name, what, message in CRAFTED:
        for command in COMMANDS:
            yield pytest.param(command, what, message, id=f"{name}-{command}")

# a _target_ hidden in an OmegaConf interpolation: the stored value is a plain string when the registry checks it,
# and Hydra's instantiate resolves it into a config node afterwards, and builds what that names
def _and_misfit(edit):
    """`edit`, and weights that do not fit the stored model: whatever the payload does, the job ends fast."""
    def both(ckpt: dict, s: Path) -> None:
        edit(ckpt, s)
        ckpt["hyper_parameters"]["model"]["widths"] = [8, 8, 8, 8]
    return both


INTERPOLATED = [
    ("interpolated-builtins.open-in-model",
     _edit_hp("model.bottleneck", lambda s: _oc_create("builtins.open", file=str(s), mode="w"))),
    ("interpolated-shutil.copyfile-in-loss",
     _and_misfit(_edit_hp("loss.smooth", lambda s: _oc_create("shutil.copyfile", src=__file__, dst=str(s))))),
    ("interpolated-importlib.import_module-in-model",
     _edit_hp("model.activation", _oc_create("importlib.import_module", name=PAYLOAD_MODULE))),
]


def _write_crafted(tmp_path: Path, base: dict, what, sentinel: Path) -> Path:
    path = tmp_path / "crafted.ckpt"
    if isinstance(what, bytes):
        path.write_bytes(what)
    else:
        ckpt = copy.deepcopy(base)
        what(ckpt, sentinel)
        torch.save(ckpt, path)
    return path


def _predict_cfg(tmp_path: Path, ckpt: Path | str, inputs, *extra: str, output_dir: Path | None = None):
    out = tmp_path / "out" if output_dir is None else output_dir
    return compose("predict", [f"ckpt_path={ckpt}", f"input={inputs}", "device=cpu", "spacing=0.1",
                               f"output_dir={out}", *extra], tmp_path / "hydra_run")


def _evaluate_cfg(tmp_path: Path, ckpt: Path | str, *extra: str, run_dir: Path | None = None):
    return compose("evaluate", [f"ckpt_path={ckpt}", "device=cpu", "overlays=0",
                                f"paths.cache_dir={tmp_path}/cache", *extra], run_dir or tmp_path / "eval")


def _export_cfg(tmp_path: Path, ckpt: Path | str, *extra: str, output: Path | None = None):
    return compose("export", [f"ckpt_path={ckpt}", f"output={output or tmp_path / 'model.onnx'}", "check=false",
                              *extra], tmp_path / "export_run")


def _run_crafted(command: str, tmp_path: Path, ckpt: Path, capsys) -> str:
    """Run `command` on the crafted checkpoint: exit 1 with one line naming it; nothing partial written."""
    if command == "predict":
        image = _png(tmp_path / "in.png")
        cfg = _predict_cfg(tmp_path, ckpt, image)
        folder, allowed = tmp_path / "out", frozenset({"config.yaml"})
        with pytest.raises(SystemExit) as excinfo:
            predict(cfg)
    elif command == "evaluate":
        cfg = _evaluate_cfg(tmp_path, ckpt)
        folder, allowed = tmp_path / "eval", RUN_RECORDS
        with pytest.raises(SystemExit) as excinfo:
            evaluate(cfg)
    else:
        cfg = _export_cfg(tmp_path, ckpt)
        folder, allowed = tmp_path / "export_run", NO_FILES
        with pytest.raises(SystemExit) as excinfo:
            export(cfg)
        assert not (tmp_path / "model.onnx").exists()
    line = _refused(capsys, excinfo, ckpt)
    _leftovers(folder, {}, allowed)
    return line


@pytest.mark.parametrize("command, what, message", _crafted_params())
def test_a_crafted_checkpoint_is_refused_in_one_line_and_runs_nothing(command, what, message, tmp_path, base_ckpt,
                                                                      sentinel, monkeypatch, capsys):
    _payload_module(tmp_path, sentinel, monkeypatch)
    ckpt = _write_crafted(tmp_path, base_ckpt, what, sentinel)
    before = ckpt.read_bytes()
    line = _run_crafted(command, tmp_path, ckpt, capsys)
    assert message in line
    _sentinel_intact(sentinel)
    assert PAYLOAD_MODULE not in sys.modules
    assert ckpt.read_bytes() == before


@pytest.mark.parametrize("command", ["predict", "evaluate", "export"])
@pytest.mark.parametrize("name, what", INTERPOLATED, ids=[c[0] for c in INTERPOLATED])
def test_a_target_hidden_in_an_interpolation_is_refused_and_runs_nothing(command, name, what, tmp_path, base_ckpt,
                                                                         sentinel, monkeypatch, capsys):
    _payload_module(tmp_path, sentinel, monkeypatch)
    ckpt = _write_crafted(tmp_path, base_ckpt, what, sentinel)
    try:
        _run_crafted(command, tmp_path, ckpt, capsys)
    finally:
        _sentinel_intact(sentinel)  # checked first: whatever the message, the payload must not have run
        assert PAYLOAD_MODULE not in sys.modules


# ------------------------------------------------------------------------------------- predict: arguments

PREDICT_ARGUMENTS = [
    ("batch_size=abc", "batch_size"), ("batch_size=0", "batch_size"), ("batch_size=-3", "batch_size"),
    ("batch_size=2.5", "batch_size"), ("read_workers=0", "read_workers"), ("device=tpu", "device='tpu'"),
    ("device=cuda:x", "device='cuda:x'"), ("runtime=foo", "runtime='foo'"), ("spacing=-1", "spacing=-1"),
    ("spacing=abc", "spacing='abc'"), ("spacing=[0,1]", "spacing=[0, 1]"), ("spacing=nan", "spacing="),
    ("tta_shifts=abc", "tta_shifts='abc'"), ("tta_shifts=[[1,2,3]]", "tta_shifts="), ("tta_shifts=[]", "tta_shifts=[]"),
    ("tta_shifts=[[0.5,0]]", "tta_shifts="), ("refine_shifts=abc", "refine_shifts"),
    ("refine_shifts=[[1,2,3]]", "refine_shifts"), ("refine_views=[[90,1]]", "refine_views"),
    ("refine_views=[[0,10]]", "refine_views"), ("refine_blend=2", "refine_blend"), ("refine_blend=abc", "refine_blend"),
    ("refine_iterations=0", "refine_iterations"), ("max_megapixels=0", "max_megapixels"),
    ("overwrite=maybe", "overwrite='maybe'"), ("resume=1", "resume=1"),
]


@pytest.mark.parametrize("override, named", PREDICT_ARGUMENTS, ids=[a for a, _ in PREDICT_ARGUMENTS])
def test_predict_refuses_a_malformed_argument_before_any_work(override, named, tmp_path, tiny_run, capsys):
    image = _png(tmp_path / "in.png")
    with pytest.raises(SystemExit) as excinfo:
        predict(_predict_cfg(tmp_path, tiny_run["ckpt"], image, override))
    _refused(capsys, excinfo, named)
    assert not (tmp_path / "out").exists() and not (tmp_path / "hydra_run").exists()


@pytest.mark.skipif(torch.cuda.is_available(), reason="a GPU is visible: device=cuda is valid here")
def test_predict_on_cuda_without_a_gpu_is_one_line(tmp_path, tiny_run, capsys):
    with pytest.raises(SystemExit) as excinfo:
        predict(_predict_cfg(tmp_path, tiny_run["ckpt"], _png(tmp_path / "in.png"), "device=cuda"))
    _refused(capsys, excinfo, "device='cuda'", "no CUDA GPU")
    assert not (tmp_path / "out").exists()


# ------------------------------------------------------------------------------------- predict: inputs

@pytest.mark.parametrize("kind", ["missing-file", "empty-folder", "folder-without-images", "glob-matching-nothing",
                                  "list-with-one-missing-file", "missing-checkpoint"])
def test_predict_refuses_inputs_that_name_nothing(kind, tmp_path, tiny_run, capsys):
    good = _png(tmp_path / "good.png")
    ckpt = tiny_run["ckpt"]
    if kind == "missing-file":
        inputs = named = tmp_path / "nosuch.png"
    elif kind == "empty-folder":
        inputs = named = tmp_path / "empty"
        inputs.mkdir()
    elif kind == "folder-without-images":
        inputs = named = tmp_path / "notes"
        inputs.mkdir()
        (inputs / "readme.txt").write_text("no images here")
    elif kind == "glob-matching-nothing":
        inputs = named = f"{tmp_path}/*.dcm"
    elif kind == "list-with-one-missing-file":
        named = tmp_path / "gone.png"
        inputs = f"[{good},{named}]"
    else:
        inputs, ckpt = good, tmp_path / "nosuch.ckpt"
        named = ckpt
    with pytest.raises(SystemExit) as excinfo:
        predict(_predict_cfg(tmp_path, ckpt, inputs))
    _refused(capsys, excinfo, named)
    if kind != "missing-checkpoint":
        assert not (tmp_path / "out").exists()  # refused before the output folder was made
    else:
        _leftovers(tmp_path / "out", {}, frozenset({"config.yaml"}))


BAD_IMAGES = {
    "bomb-header-30000x30000": (lambda p: _header_only_png(p.with_suffix(".png"), 30000, 30000), "megapixel limit"),
    "truncated-png": (lambda p: _truncated_png(p.with_suffix(".png")), "truncated"),
    "1x1-png": (lambda p: _png(p.with_suffix(".png"), 1, 1), "minimum side"),
    "nan-float-tiff": (lambda p: _nan_tiff(p.with_suffix(".tif")), "non-finite"),
    "text-file-named-png": (lambda p: _text_png(p.with_suffix(".png")), "cannot read image"),
}


def _truncated_png(path: Path) -> Path:
    _png(path, 64, 64, seed=3)
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2])
    return path


def _nan_tiff(path: Path) -> Path:
    a = np.random.default_rng(0).random((40, 48)).astype(np.float32)
    a[5:9, 5:9] = np.nan
    Image.fromarray(a, mode="F").save(path)
    return path


def _text_png(path: Path) -> Path:
    path.write_text("this is not a PNG\n")
    return path


def _check_strict_outputs(out: Path) -> None:
    for path in out.glob("*.json"):
        _strict_json(path)


@pytest.mark.parametrize("kind", list(BAD_IMAGES))
def test_a_bad_image_among_good_ones_is_one_failure_row_and_the_rest_are_predicted(kind, tmp_path, tiny_run, capsys):
    folder = tmp_path / "in"
    folder.mkdir()
    good = [_png(folder / "a_good.png", seed=1), _png(folder / "c_good.png", 56, 40, seed=2)]
    make, reason = BAD_IMAGES[kind]
    bad = make(folder / "b_bad")
    inputs = _snapshot(folder)
    result = predict(_predict_cfg(tmp_path, tiny_run["ckpt"], folder, "runtime=eager"))  # exit 0: it returns
    out = tmp_path / "out"
    assert result == {"n_images": 2, "n_failed": 1, "out_dir": str(out)}
    failures = pd.read_csv(out / "failures.csv")
    assert list(failures["file"]) == [str(bad)] and reason in failures["reason"][0], failures.to_dict()
    assert "\n" not in failures["reason"][0]
    predicted = pd.read_csv(out / "predictions.csv")
    assert sorted(set(predicted["file"])) == [str(p) for p in good]
    summary = _strict_json(out / "summary.json")
    assert summary["n_images"] == 2 and summary["n_failed"] == 1 and summary["failures"][0]["file"] == str(bad)
    _check_strict_outputs(out)
    assert not (out / "b_bad.json").exists() and not (out / "b_bad.csv").exists()
    assert _snapshot(folder) == inputs and folders.LOCK_NAME not in os.listdir(out)


def test_when_no_input_can_be_read_the_failures_are_listed_and_the_exit_is_1(tmp_path, tiny_run, capsys):
    folder = tmp_path / "in"
    folder.mkdir()
    bad = sorted(make(folder / name.replace("-", "_")) for name, (make, _) in BAD_IMAGES.items())
    with pytest.raises(SystemExit) as excinfo:
        predict(_predict_cfg(tmp_path, tiny_run["ckpt"], folder))
    out = tmp_path / "out"
    _refused(capsys, excinfo, f"none of the {len(bad)} input file(s)", out / "failures.csv")
    assert sorted(pd.read_csv(out / "failures.csv")["file"]) == [str(p) for p in bad]
    assert not (out / "predictions.csv").exists()
    _check_strict_outputs(out)


# ------------------------------------------------------------------------------------- predict: output folder

def test_predict_refuses_an_output_dir_that_is_a_file(tmp_path, tiny_run, capsys):
    target = tmp_path / "results"
    target.write_bytes(b"a file, not a folder")
    with pytest.raises(SystemExit) as excinfo:
        predict(_predict_cfg(tmp_path, tiny_run["ckpt"], _png(tmp_path / "in.png"), output_dir=target))
    _refused(capsys, excinfo, f"output_dir={target}", "not a folder")
    assert target.read_bytes() == b"a file, not a folder"


def test_predict_refuses_an_output_dir_whose_parent_is_missing(tmp_path, tiny_run, capsys):
    target = tmp_path / "missing" / "x"
    with pytest.raises(SystemExit) as excinfo:
        predict(_predict_cfg(tmp_path, tiny_run["ckpt"], _png(tmp_path / "in.png"), output_dir=target))
    _refused(capsys, excinfo, f"output_dir={target}", "does not exist")
    assert not (tmp_path / "missing").exists()


@pytest.mark.skipif(os.geteuid() == 0, reason="root writes into read-only folders")
def test_predict_refuses_a_read_only_output_dir(tmp_path, tiny_run, capsys):
    target = tmp_path / "ro"
    target.mkdir()
    target.chmod(0o555)
    try:
        with pytest.raises(SystemExit) as excinfo:
            predict(_predict_cfg(tmp_path, tiny_run["ckpt"], _png(tmp_path / "in.png"), output_dir=target))
        _refused(capsys, excinfo, f"output_dir={target}", "not writable")
        assert os.listdir(target) == []
    finally:
        target.chmod(0o755)


def test_predict_refuses_an_output_dir_it_cannot_create(tmp_path, tiny_run, capsys):
    """Even as root: /proc takes no new folders."""
    target = Path("/proc/landmark_exp_hostile_out")
    with pytest.raises(SystemExit) as excinfo:
        predict(_predict_cfg(tmp_path, tiny_run["ckpt"], _png(tmp_path / "in.png"), output_dir=target))
    _refused(capsys, excinfo, f"output_dir={target}")
    assert not target.exists()


def _earlier_run(out: Path, tiny_run, tmp_path: Path) -> Path:
    """`out` holding a finished predict run of old.png, and a note of the user's own beside it."""
    (tmp_path / "earlier").mkdir()
    old = _png(tmp_path / "earlier" / "old.png", seed=5)
    predict(_predict_cfg(tmp_path, tiny_run["ckpt"], old, "runtime=eager", output_dir=out))
    (out / "notes.txt").write_text("the user's own notes\n")
    return old


def test_predict_refuses_an_output_dir_holding_earlier_results_and_keeps_them(tmp_path, tiny_run, capsys):
    out = tmp_path / "results"
    _earlier_run(out, tiny_run, tmp_path)
    before = _snapshot(out)
    assert {"old.json", "old.csv", "old_overlay.jpg", "predictions.csv", "summary.json"} <= set(before)
    capsys.readouterr()
    with pytest.raises(SystemExit) as excinfo:
        predict(_predict_cfg(tmp_path, tiny_run["ckpt"], _png(tmp_path / "new.png"), output_dir=out))
    _refused(capsys, excinfo, f"output_dir={out}", "overwrite=true")
    _leftovers(out, before, NO_FILES)


def test_predict_overwrite_removes_the_earlier_results_first_and_keeps_other_files(tmp_path, tiny_run):
    out = tmp_path / "results"
    _earlier_run(out, tiny_run, tmp_path)
    new = _png(tmp_path / "new.png", seed=6)
    predict(_predict_cfg(tmp_path, tiny_run["ckpt"], new, "runtime=eager", "overwrite=true", output_dir=out))
    left = set(os.listdir(out))
    assert not {"old.json", "old.csv", "old_overlay.jpg"} & left
    assert {"new.json", "new.csv", "new_overlay.jpg", "notes.txt"} <= left
    assert (out / "notes.txt").read_text() == "the user's own notes\n"
    assert set(pd.read_csv(out / "predictions.csv")["image_id"]) == {"new"}
    assert pd.read_csv(out / "failures.csv").empty
    _check_strict_outputs(out)


@pytest.mark.parametrize("clash", ["input-named-like-an-overlay", "input-named-config.yaml",
                                   "checkpoint-named-summary.json", "checkpoint-named-like-an-image-csv"])
def test_predict_never_writes_over_a_file_it_reads(clash, tmp_path, tiny_run, capsys):
    folder = tmp_path / "shared"
    folder.mkdir()
    ckpt, inputs = tiny_run["ckpt"], folder
    a = _png(folder / "a.png", seed=1)
    if clash == "input-named-like-an-overlay":
        victim = _png(folder / "a_overlay.jpg", seed=2)
    elif clash == "input-named-config.yaml":
        victim = folder / "config.yaml"
        Image.open(a).save(victim, format="PNG")
        inputs = f"[{a},{victim}]"
    elif clash == "checkpoint-named-summary.json":
        victim = ckpt = folder / "summary.json"
        victim.write_bytes(tiny_run["ckpt"].read_bytes())
    else:
        victim = ckpt = folder / "a.csv"
        victim.write_bytes(tiny_run["ckpt"].read_bytes())
    before = _snapshot(folder)
    with pytest.raises(SystemExit) as excinfo:
        predict(_predict_cfg(tmp_path, ckpt, inputs, output_dir=folder))
    _refused(capsys, excinfo, f"output_dir={victim}", "inputs")
    _leftovers(folder, before, NO_FILES)


def _dead_pid() -> int:
    proc = subprocess.Popen(["true"])
    proc.wait()
    return proc.pid


@pytest.mark.parametrize("holder", ["this-live-process", "a-live-process-on-another-host"])
def test_predict_refuses_an_output_dir_a_live_run_holds(holder, tmp_path, tiny_run, capsys):
    out = tmp_path / "results"
    out.mkdir()
    lock = out / folders.LOCK_NAME
    if holder == "this-live-process":
        with folders.run_lock(out):
            held = lock.read_bytes()
            with pytest.raises(SystemExit) as excinfo:
                predict(_predict_cfg(tmp_path, tiny_run["ckpt"], _png(tmp_path / "in.png"), output_dir=out))
            assert lock.read_bytes() == held  # the holder's lock is not taken or removed
        named = f"process {os.getpid()}"
    else:
        lock.write_text(f"not-{socket.gethostname()} {_dead_pid()} 1\n")
        with pytest.raises(SystemExit) as excinfo:
            predict(_predict_cfg(tmp_path, tiny_run["ckpt"], _png(tmp_path / "in.png"), output_dir=out))
        named = f"on not-{socket.gethostname()}"
        assert lock.is_file()
    _refused(capsys, excinfo, f"output_dir={out}", "another run", named)
    assert set(os.listdir(out)) <= {folders.LOCK_NAME}


@pytest.mark.parametrize("stale", ["dead-process", "reused-process-id", "garbage-lock-file"])
def test_predict_takes_over_a_stale_lock(stale, tmp_path, tiny_run):
    out = tmp_path / "results"
    out.mkdir()
    host = socket.gethostname()
    text = {"dead-process": f"{host} {_dead_pid()} 12345\n",
            "reused-process-id": f"{host} {os.getpid()} 1\n",  # this pid, but a process that started at tick 1
            "garbage-lock-file": "\0\0\0 not a lock\n"}[stale]
    (out / folders.LOCK_NAME).write_text(text)
    result = predict(_predict_cfg(tmp_path, tiny_run["ckpt"], _png(tmp_path / "in.png"), "runtime=eager",
                                  output_dir=out))
    assert result["n_images"] == 1 and (out / "in.json").is_file()
    assert folders.LOCK_NAME not in os.listdir(out)


def test_resume_predicts_only_the_missing_images(tmp_path, tiny_run):
    folder = tmp_path / "in"
    folder.mkdir()
    _png(folder / "a.png", seed=1)
    out = tmp_path / "results"
    predict(_predict_cfg(tmp_path, tiny_run["ckpt"], folder, "runtime=eager", output_dir=out))
    _png(folder / "b.png", seed=2)  # the run was interrupted before b
    os.utime(out / "a.json", ns=(1_000_000_000, 1_000_000_000))
    done = (out / "a.json").stat()
    result = predict(_predict_cfg(tmp_path, tiny_run["ckpt"], folder, "runtime=eager", "resume=true",
                                  output_dir=out))
    assert result["n_images"] == 2
    again = (out / "a.json").stat()
    assert (again.st_ino, again.st_mtime_ns) == (done.st_ino, done.st_mtime_ns), "a.png was predicted again"
    assert (out / "b.json").is_file()
    assert set(pd.read_csv(out / "predictions.csv")["image_id"]) == {"a", "b"}
    _check_strict_outputs(out)


def test_resume_refuses_results_another_model_predicted(tmp_path, tiny_run, capsys):
    folder = tmp_path / "in"
    folder.mkdir()
    _png(folder / "a.png", seed=1)
    out = tmp_path / "results"
    other = tmp_path / "other.ckpt"
    other.write_bytes(tiny_run["ckpt"].read_bytes())
    predict(_predict_cfg(tmp_path, other, folder, "runtime=eager", output_dir=out))
    before = _snapshot(out)
    capsys.readouterr()
    with pytest.raises(SystemExit) as excinfo:
        predict(_predict_cfg(tmp_path, tiny_run["ckpt"], folder, "runtime=eager", "resume=true", output_dir=out))
    _refused(capsys, excinfo, out / "a.json", other)
    before.pop("config.yaml")  # see the next test
    _leftovers(out, before, frozenset({"config.yaml"}))


@pytest.mark.parametrize("why", ["results-of-another-model", "refused-checkpoint"])
def test_a_refused_resume_leaves_the_earlier_runs_config_as_it_was(why, tmp_path, tiny_run, capsys):
    folder = tmp_path / "in"
    folder.mkdir()
    _png(folder / "a.png", seed=1)
    out = tmp_path / "results"
    first = tmp_path / "first.ckpt"
    first.write_bytes(tiny_run["ckpt"].read_bytes())
    predict(_predict_cfg(tmp_path, first, folder, "runtime=eager", output_dir=out))
    before = _snapshot(out)
    again = tiny_run["ckpt"] if why == "results-of-another-model" else tmp_path / "junk.ckpt"
    if why == "refused-checkpoint":
        again.write_text("not a checkpoint")
    capsys.readouterr()
    with pytest.raises(SystemExit) as excinfo:
        predict(_predict_cfg(tmp_path, again, folder, "runtime=eager", "resume=true", output_dir=out))
    _refused(capsys, excinfo)
    _leftovers(out, before, NO_FILES)


def test_predict_overwrite_with_a_refused_checkpoint_keeps_the_earlier_results(tmp_path, tiny_run, base_ckpt, capsys):
    out = tmp_path / "results"
    _earlier_run(out, tiny_run, tmp_path)
    before = _snapshot(out)
    bad = _write_crafted(tmp_path, base_ckpt, _edit_hp("model._target_", "builtins.open"), tmp_path / "unused")
    capsys.readouterr()
    with pytest.raises(SystemExit) as excinfo:
        predict(_predict_cfg(tmp_path, bad, _png(tmp_path / "new.png"), "overwrite=true", output_dir=out))
    _refused(capsys, excinfo, bad, "refused _target_ 'builtins.open'")
    before.pop("config.yaml")  # the config of the run that asked to overwrite
    _leftovers(out, before, frozenset({"config.yaml"}))


# ------------------------------------------------------------------------------------- evaluate

EVALUATE_ARGUMENTS = [
    ("tta_shifts=abc", "tta_shifts="), ("tta_shifts=[[1,2,3]]", "tta_shifts="), ("runtime=foo", "runtime='foo'"),
    ("device=tpu", "device='tpu'"), ("overlays=-1", "overlays=-1"), ("overlays=abc", "overlays='abc'"),
    ("overwrite=maybe", "overwrite='maybe'"),
    ("refine_blend=2", "refine_blend"), ("refine_iterations=0", "refine_iterations"),
    ("refine_views=[[90,1]]", "refine_views"),
]


@pytest.mark.parametrize("override, named", EVALUATE_ARGUMENTS, ids=[a for a, _ in EVALUATE_ARGUMENTS])
def test_evaluate_refuses_a_malformed_argument_before_any_work(override, named, tmp_path, tiny_run, capsys):
    with pytest.raises(SystemExit) as excinfo:
        evaluate(_evaluate_cfg(tmp_path, tiny_run["ckpt"], override))
    _refused(capsys, excinfo, named)
    assert _leftovers(tmp_path / "eval", {}) <= {"error.txt"}  # checked before the config is even written


@pytest.mark.parametrize("command", ["export"])
def test_a_malformed_tta_shifts_is_quoted_as_given(command, tmp_path, tiny_run, capsys):
    job, cfg = ((evaluate, _evaluate_cfg(tmp_path, tiny_run["ckpt"], "tta_shifts=abc")) if command == "evaluate" else
                (export, _export_cfg(tmp_path, tiny_run["ckpt"], "tta_shifts=abc")))
    with pytest.raises(SystemExit) as excinfo:
        job(cfg)
    _refused(capsys, excinfo, "tta_shifts='abc'")


@pytest.mark.parametrize("override, named", [
    ("split=nosuch", "nosuch"),
    ("data_root=/missing/isbi", "/missing/isbi"),
], ids=["split-nosuch", "data_root-missing"])
def test_evaluate_refuses_data_that_is_not_there(override, named, tmp_path, tiny_run, capsys):
    with pytest.raises(SystemExit) as excinfo:
        evaluate(_evaluate_cfg(tmp_path, tiny_run["ckpt"], override))
    _refused(capsys, excinfo, named)
    _leftovers(tmp_path / "eval", {})


def test_evaluate_refuses_a_run_dir_holding_an_earlier_evaluation(tmp_path, tiny_run, capsys):
    run = tmp_path / "eval"
    run.mkdir()
    (run / "metrics.json").write_text('{"mre": 1.25}\n')
    (run / "per_landmark.csv").write_text("landmark,mre\n1,1.25\n")
    before = _snapshot(run)
    with pytest.raises(SystemExit) as excinfo:
        evaluate(_evaluate_cfg(tmp_path, tiny_run["ckpt"]))
    _refused(capsys, excinfo, f"hydra.run.dir={run}", "metrics.json", "overwrite=true")
    _leftovers(run, before, frozenset({"error.txt"}))


def test_evaluate_refuses_a_run_dir_a_live_run_holds(tmp_path, tiny_run, capsys):
    run = tmp_path / "eval"
    run.mkdir()
    with folders.run_lock(run, "hydra.run.dir"):
        with pytest.raises(SystemExit) as excinfo:
            evaluate(_evaluate_cfg(tmp_path, tiny_run["ckpt"]))
        assert (run / folders.LOCK_NAME).is_file()
    _refused(capsys, excinfo, f"hydra.run.dir={run}", f"process {os.getpid()}")
    assert set(os.listdir(run)) <= {"error.txt"}


def test_evaluate_refuses_a_run_dir_that_is_a_file(tmp_path, tiny_run, capsys):
    run = tmp_path / "eval"
    run.write_bytes(b"not a folder")
    with pytest.raises(SystemExit) as excinfo:
        evaluate(_evaluate_cfg(tmp_path, tiny_run["ckpt"]))
    _refused(capsys, excinfo, f"hydra.run.dir={run}", "not a folder")
    assert run.read_bytes() == b"not a folder"


# ------------------------------------------------------------------------------------- export

@pytest.fixture
def own_ckpt(tmp_path, tiny_run) -> Path:
    """A copy of tiny_run's checkpoint in this test's folder (export writes beside it by default)."""
    path = tmp_path / "ckpts" / "best.ckpt"
    path.parent.mkdir()
    path.write_bytes(tiny_run["ckpt"].read_bytes())
    return path


@pytest.mark.parametrize("case", [
    "output-is-the-checkpoint", "output-is-the-checkpoint-with-overwrite", "existing-output-without-overwrite",
    "output-named-txt", "output-is-a-folder", "output-parent-missing", "opset-abc", "opset-0", "format-tflite",
    "overwrite-maybe", "tta_shifts-abc", "ensemble-without-output", "empty-checkpoint-list",
])
def test_export_refuses_and_keeps_every_file_as_it_was(case, tmp_path, own_ckpt, capsys):
    output, extra, named = tmp_path / "model.onnx", [], []
    ckpt: object = own_ckpt
    if case.startswith("output-is-the-checkpoint"):
        output, named = own_ckpt, [f"output={own_ckpt}", "inputs"]
        extra = ["overwrite=true"] if case.endswith("overwrite") else []
    elif case == "existing-output-without-overwrite":
        output.write_bytes(b"an earlier export")
        named = [f"output={output}", "overwrite=true"]
    elif case == "output-named-txt":
        output = tmp_path / "x.txt"
        named = [f"output={output}", ".onnx"]
    elif case == "output-is-a-folder":
        output = tmp_path / "folder.onnx"
        output.mkdir()
        named = [f"output={output}", "folder"]
    elif case == "output-parent-missing":
        output = tmp_path / "missing" / "deeper" / "model.onnx"  # (a missing folder whose parent exists is made)
        named = [f"output={output.parent}", "does not exist"]
    elif case.startswith("opset"):
        extra, named = [f"opset={case.split('-')[1]}"], ["opset"]
    elif case == "format-tflite":
        extra, named = ["format=tflite"], ["format='tflite'"]
    elif case == "overwrite-maybe":
        extra, named = ["overwrite=maybe"], ["overwrite='maybe'"]
    elif case == "tta_shifts-abc":
        extra, named = ["tta_shifts=abc"], ["tta_shifts="]
    elif case == "ensemble-without-output":
        ckpt, named = f"[{own_ckpt},{own_ckpt}]", ["ckpt_path", "output="]
    else:
        ckpt, named = "[]", ["ckpt_path"]
    cfg = _export_cfg(tmp_path, ckpt, *extra, output=output)
    if case == "ensemble-without-output":
        cfg.output = None
    before = _snapshot(tmp_path)
    with pytest.raises(SystemExit) as excinfo:
        export(cfg)
    _refused(capsys, excinfo, *named)
    _leftovers(tmp_path, before, frozenset({"export_run/error.txt"}))
    assert not list(tmp_path.rglob("*.onnx.*")), "a temporary file was left"


# ------------------------------------------------------------------------------------- train

def _train_cfg(tmp_path: Path, tiny_run, *extra: str, run: Path | None = None):
    return compose("train", ["data=isbi2015", f"data.source.root={tiny_run['root']}", f"paths.cache_dir={tmp_path}/cache",
                             *TINY, "logger=none", *extra], run or tmp_path / "run")


def _train_refused(tmp_path: Path, cfg, capsys, *named: str, run: Path | None = None,
                   before: dict[str, bytes] | None = None) -> str:
    run = run or tmp_path / "run"
    with pytest.raises(SystemExit) as excinfo:
        train(cfg)
    line = _refused(capsys, excinfo, *named)
    _leftovers(run, before or {})
    assert not (run / "checkpoints").exists() or _snapshot(run / "checkpoints") == {
        k.split("/", 1)[1]: v for k, v in (before or {}).items() if k.startswith("checkpoints/")}
    return line


TRAIN_ARGUMENTS = [
    ("data.batch_size=0", "data.batch_size"), ("data.batch_size=abc", "data.batch_size"),
    ("data.num_workers=-1", "data.num_workers"), ("data.input_size=[0,0]", "data.input_size"),
    ("data.source.root=/missing/isbi", "/missing/isbi"),
]


@pytest.mark.parametrize("override, named", TRAIN_ARGUMENTS, ids=[a for a, _ in TRAIN_ARGUMENTS])
def test_train_refuses_a_malformed_setting_before_fitting(override, named, tmp_path, tiny_run, capsys):
    _train_refused(tmp_path, _train_cfg(tmp_path, tiny_run, override), capsys, named)


def _q(text: str) -> str:
    """A Hydra override value quoted (spaces, '>' and the like)."""
    return "'" + text.replace("\\", "\\\\").replace("'", "\\'") + "'"


TRAIN_TARGETS = [
    ("loss-builtins.open", lambda s: ["loss._target_=builtins.open", f"+loss.file={s}", "+loss.mode=w"],
     "loss._target_", "builtins.open"),
    ("model-os.system", lambda s: ["model._target_=os.system", f"+model.command={_q(f'echo pwned > {s}')}"],
     "model._target_", "os.system"),
    ("optimizer-subprocess.run", lambda s: ["optimizer._target_=subprocess.run",
                                            f"+optimizer.args=[sh,-c,{_q(f'echo pwned > {s}')}]"],
     "optimizer._target_", "subprocess.run"),
    ("data.source-shutil.copyfile", lambda s: ["data.source._target_=shutil.copyfile", f"+data.source.src={__file__}",
                                               f"+data.source.dst={s}"], "data.source._target_", "shutil.copyfile"),
    ("data.augment-shutil.rmtree", lambda s: ["data.augment.affine._target_=shutil.rmtree",
                                              f"+data.augment.affine.path={s.parent}"],
     "data.augment.affine._target_", "shutil.rmtree"),
    ("callback-os.system", lambda s: ["+callbacks.evil._target_=os.system",
                                      f"+callbacks.evil.command={_q(f'echo pwned > {s}')}"],
     "callbacks.evil._target_", "os.system"),
    ("scheduler-importlib.import_module", lambda s: ["scheduler._target_=importlib.import_module",
                                                     f"+scheduler.name={PAYLOAD_MODULE}"],
     "scheduler._target_", "importlib.import_module"),
    ("data-collections.OrderedDict", lambda s: ["data._target_=collections.OrderedDict"], "data._target_",
     "collections.OrderedDict"),
    ("model-_partial_", lambda s: ["+model._partial_=true"], "model", "_partial_"),
]


@pytest.mark.parametrize("name, overrides, where, target", TRAIN_TARGETS, ids=[t[0] for t in TRAIN_TARGETS])
def test_train_refuses_a_config_naming_an_unregistered_class(name, overrides, where, target, tmp_path, tiny_run,
                                                             sentinel, monkeypatch, capsys):
    _payload_module(tmp_path, sentinel, monkeypatch)
    cfg = _train_cfg(tmp_path, tiny_run, *overrides(sentinel))
    line = _train_refused(tmp_path, cfg, capsys, where, target)
    assert "refused" in line
    _sentinel_intact(sentinel)
    assert PAYLOAD_MODULE not in sys.modules


# ------------------------------------------------------------------------------------- train: resume=

def _recorded_run(tmp_path: Path, overrides_yaml: str | None, ckpt: Path | None = None) -> Path:
    run = tmp_path / "runs" / "r1"
    (run / "checkpoints").mkdir(parents=True)
    (run / "checkpoints" / "last.ckpt").write_bytes(ckpt.read_bytes() if ckpt else b"PK weights")
    if overrides_yaml is not None:
        (run / ".hydra").mkdir()
        (run / ".hydra" / "overrides.yaml").write_text(overrides_yaml)
    return run


RECORDED = [
    ("hydra-callback-os.system", "- hydra.callbacks.x._target_=os.system\n- +hydra.callbacks.x.command=id\n",
     "is refused"),
    ("hydra-group-override", "- hydra/launcher=basic\n", "is refused"),
    ("hydra-job-env", "- +hydra.job.env_set.LD_PRELOAD=/tmp/evil.so\n", "is refused"),
    ("_args_-key", "- +model._args_=[1]\n", "is refused"),
    ("malformed-yaml", "- [unclosed\n", "not readable as YAML"),
    ("not-a-list", "model: unet\n", "not a list of overrides"),
    ("list-of-numbers", "- 1\n- 2\n", "not a list of overrides"),
    ("binary-junk", None, "not readable as YAML"),
    ("no-overrides-file", "", "not a Hydra run directory"),
    ("no-last-checkpoint", "- seed=1\n", "no checkpoints/last.ckpt"),
]


@pytest.mark.parametrize("name, text, message", RECORDED, ids=[r[0] for r in RECORDED])
def test_resume_refuses_a_hostile_run_directory_in_one_line(name, text, message, tmp_path):
    run = _recorded_run(tmp_path, text if text not in (None, "") else None)
    if name == "binary-junk":
        (run / ".hydra").mkdir()
        (run / ".hydra" / "overrides.yaml").write_bytes(b"\xff\xfe\x00garbage\x81")
    if name == "no-last-checkpoint":
        (run / "checkpoints" / "last.ckpt").unlink()
    before = _snapshot(run)
    with pytest.raises(SystemExit) as excinfo:
        resume_argv(["train.py", f"resume={run}"], Path(__file__).parents[1] / "landmark_exp" / "conf", "train")
    said = excinfo.value.code
    assert isinstance(said, str) and "\n" not in said and said.startswith("resume"), said
    assert message in said and str(run) in said, said
    assert _snapshot(run) == before


def _resumed_cfg(tmp_path: Path, run: Path):
    argv = resume_argv(["train.py", f"resume={run}"], Path(__file__).parents[1] / "landmark_exp" / "conf", "train")
    overrides = [a for a in argv[1:] if not a.startswith("hydra.")]
    return compose("train", overrides, run)


def test_resume_of_a_run_whose_recorded_model_names_builtins_open_runs_nothing(tmp_path, tiny_run, sentinel, capsys):
    recorded = ["data=isbi2015", f"data.source.root={tiny_run['root']}", f"paths.cache_dir={tmp_path}/cache", *TINY,
                "logger=none", "model._target_=builtins.open", f"+model.file={sentinel}", "+model.mode=w"]
    run = _recorded_run(tmp_path, "".join(f"- {json.dumps(o)}\n" for o in recorded), tiny_run["ckpt"])
    before = _snapshot(run)
    cfg = _resumed_cfg(tmp_path, run)
    capsys.readouterr()
    _train_refused(tmp_path, cfg, capsys, "model._target_", "builtins.open", run=run, before=before)
    _sentinel_intact(sentinel)


def test_resume_of_a_run_whose_recorded_value_hides_a_target_in_an_interpolation(tmp_path, tiny_run, sentinel, capsys):
    hidden = "'\\" + _oc_create("builtins.open", file=str(sentinel), mode="w") + "'"  # '\${...}': escaped once
    recorded = ["data=isbi2015", f"data.source.root={tiny_run['root']}", f"paths.cache_dir={tmp_path}/cache", *TINY,
                "logger=none", f"loss.smooth={hidden}",
                "+callbacks.stop._target_=collections.OrderedDict"]  # refused once the loss is built: no fitting
    run = _recorded_run(tmp_path, "".join(f"- {json.dumps(o)}\n" for o in recorded), tiny_run["ckpt"])
    cfg = _resumed_cfg(tmp_path, run)
    capsys.readouterr()
    try:
        with pytest.raises(SystemExit):
            train(cfg)
    finally:
        _sentinel_intact(sentinel)


@pytest.mark.parametrize("command, overrides, missing", [
    ("predict", ["ckpt_path=x.ckpt"], "input"),
    ("evaluate", [], "ckpt_path"),
    ("export", [], "ckpt_path"),
])
def test_a_required_setting_left_unset_is_one_line_naming_it(command, overrides, missing, tmp_path, capsys):
    job = {"predict": predict, "evaluate": evaluate, "export": export}[command]
    png = _png(tmp_path / "a.png")
    with pytest.raises(SystemExit) as excinfo:
        job(compose(command, [o.format(png=png) for o in overrides], tmp_path / "out"))
    _refused(capsys, excinfo, f"{missing} is required")

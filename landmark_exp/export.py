"""Checkpoint -> ONNX model with a dynamic batch, and the proof that it predicts what PyTorch predicts.

    python -m landmark_exp.export ckpt_path=<run>/checkpoints/best.ckpt [output=model.onnx]
    python -m landmark_exp.export 'ckpt_path=[a.ckpt,b.ckpt,c.ckpt]' output=ensemble.onnx   # one graph, mean heatmaps

The graph maps (B, C, h, w) images (C = 1, or 2 with a context channel) to (B, K, h, w) heatmaps; decoding stays in
Python, its settings stored as JSON metadata (`ModelInfo`): an export decodes exactly as its checkpoint.
"""

from __future__ import annotations

import contextlib
import io
import json
import logging
import tempfile
import warnings
from pathlib import Path

import numpy as np
import torch
from omegaconf import DictConfig

from landmark_exp.arguments import flag, int_pairs, plain
from landmark_exp.backends import onnx_predictor, torch_predictor
from landmark_exp.data.records import DataError, whole_number
from landmark_exp.files import atomic_write_bytes, write_json
from landmark_exp.folders import output_file, refuse_overwriting_inputs
from landmark_exp.jobs import guard, run_command
from landmark_exp.loading import checkpoint_paths, load_module
from landmark_exp.module import LandmarkModule
from landmark_exp.predictor import ONNX_METADATA_KEY, ModelInfo
from landmark_exp.reports import console

FORMATS = ("onnx",)


def export_onnx(module: LandmarkModule, path: str | Path, opset: int = 18, dynamo: bool = True,
                source: str | Path = "") -> Path:
    """Write `module`'s network as ONNX (dynamic batch) with `ModelInfo` metadata; atomically."""
    import onnx

    path = Path(path)
    module = module.cpu().eval()
    h, w = module.input_size
    info = ModelInfo.from_module(module, source)
    example = (torch.rand(2, info.input_channels, h, w),)
    with tempfile.TemporaryDirectory() as tmp, _quiet():
        raw = Path(tmp) / "model.onnx"
        batch = (dict(external_data=False, verbose=False,
                      dynamic_shapes=({0: torch.export.Dim("batch", min=1, max=4096)},)) if dynamo
                 else dict(dynamic_axes={"image": {0: "batch"}, "heatmaps": {0: "batch"}}))
        torch.onnx.export(module.net, example, str(raw), input_names=["image"], output_names=["heatmaps"],
                          opset_version=opset, dynamo=dynamo, **batch)
        model = onnx.load(str(raw))
    entry = model.metadata_props.add()
    entry.key, entry.value = ONNX_METADATA_KEY, json.dumps(info.to_dict())
    onnx.checker.check_model(model)
    atomic_write_bytes(path, model.SerializeToString())
    return path


@contextlib.contextmanager
def _quiet():
    """Silence the exporters' progress prints, INFO logs and deprecation/tracer warnings (errors still raise)."""
    loggers = [logging.getLogger(n) for n in ("onnxscript", "onnx_ir", "torch.onnx", "torch.export")]
    levels = [lg.level for lg in loggers]
    try:
        for lg in loggers:
            lg.setLevel(logging.WARNING)
        with warnings.catch_warnings(), contextlib.redirect_stdout(io.StringIO()):
            warnings.simplefilter("ignore")
            yield
    finally:
        for lg, level in zip(loggers, levels, strict=True):
            lg.setLevel(level)


def parity(module: LandmarkModule, onnx_path: str | Path, images: list[np.ndarray] | None = None,
           seed: int = 0) -> dict[str, float]:
    """Max abs difference ONNX Runtime vs PyTorch, both on CPU: heatmaps, and decoded coordinates in original pixels.
    `images` default: three random images of different sizes (so the geometry inverse is exercised too). A
    second-stage model is compared on patches cut around random centres."""
    rng = np.random.default_rng(seed)
    if images is None:
        h, w = module.input_size
        images = [rng.random((h * f, w * g)).astype(np.float32) for f, g in ((1, 1), (3, 2), (2, 3))]
    ref, onx = torch_predictor(module, "cpu"), onnx_predictor(onnx_path, "cpu")
    batch = np.stack([np.repeat(ref.prepare(im)[0], ref.info.input_channels, axis=0) for im in images])
    heat_diff = float((ref.heatmaps(batch).cpu() - onx.heatmaps(batch)).abs().max())
    if ref.info.working_size is None:
        a, b = ref.predict(images), onx.predict(images)
    else:
        centres = [rng.uniform(0, 1, (module.num_landmarks, 2)) * [im.shape[1] - 1, im.shape[0] - 1] for im in images]
        a = [ref.refine(im, c) for im, c in zip(images, centres, strict=True)]
        b = [onx.refine(im, c) for im, c in zip(images, centres, strict=True)]
    xy_diff = max(float(np.abs(p.xy - q.xy).max()) for p, q in zip(a, b, strict=True))
    conf_diff = max(float(np.abs(p.confidence - q.confidence).max()) for p, q in zip(a, b, strict=True))
    return {"heatmaps_max_abs_diff": heat_diff, "coordinates_px_max_abs_diff": xy_diff,
            "confidence_max_abs_diff": conf_diff, "batch": len(images)}


@guard
def export(cfg: DictConfig) -> dict:
    """The Hydra job behind `python -m landmark_exp.export`: export, check parity, write export.json."""
    if cfg.format not in FORMATS:
        raise DataError(f"format={cfg.format!r} is not supported (choose from {', '.join(FORMATS)})")
    paths = checkpoint_paths(cfg.ckpt_path)
    if len(paths) > 1 and not cfg.get("output"):
        raise DataError("ckpt_path: an ensemble of checkpoints needs output=<file>.onnx")
    out = Path(str(cfg.output)) if cfg.get("output") else paths[0].with_suffix(".onnx")
    # before any work: never the file read (said first, whatever else is wrong with the name), then the name
    refuse_overwriting_inputs([out], paths, "output")
    if out.suffix.lower() != ".onnx" and not out.is_dir():
        raise DataError(f"output={out}: an ONNX model's file name ends in .onnx")
    output_file(out, paths, flag(cfg.get("overwrite", False), "overwrite"))
    module = load_module(paths, tta_shifts=int_pairs(plain(cfg.get("tta_shifts")), "tta_shifts"))
    ckpt = ", ".join(map(str, paths))
    export_onnx(module, out, opset=whole_number(cfg.opset, "opset"), dynamo=bool(cfg.dynamo), source=ckpt)
    result: dict = {"checkpoint": ckpt, "onnx": str(out), "bytes": out.stat().st_size}
    console.print(f"exported {ckpt} -> {out} ({out.stat().st_size / 1e6:.1f} MB, dynamic batch)")
    if cfg.get("check", True):
        result["parity"] = parity(module, out)
        console.print("ONNX Runtime vs PyTorch on CPU: " + ", ".join(f"{k} {v:.3g}" for k, v in result["parity"].items()))
    write_json(Path(cfg.paths.output_dir) / "export.json", result)  # its folder made as the file is written
    return result


if __name__ == "__main__":
    run_command("export", export)

"""The two ways a `Predictor` runs its network: PyTorch on a checkpoint's module, or ONNX Runtime on an export,
and which one to use (`pick_runtime`)."""

from __future__ import annotations

import importlib.util
import json
import warnings
from pathlib import Path

import numpy as np
import torch

from landmark_exp.data.records import CheckpointError, one_line
from landmark_exp.module import LandmarkModule
from landmark_exp.performance import for_inference
from landmark_exp.predictor import ONNX_METADATA_KEY, ModelInfo, Predictor


def resolve_device(device: str = "auto") -> str:
    """'auto' -> 'cuda' when a GPU is visible, else 'cpu'; anything else as given."""
    if device == "auto":
        return "cuda" if torch.cuda.is_available() else "cpu"
    return device


def torch_predictor(module: LandmarkModule, device: str = "auto", source: str | Path = "",
                    runtime: str = "tuned") -> Predictor:
    """PyTorch forward pass; `runtime` as `performance.for_inference` (tuned: batch norm folded, NHWC)."""
    device = resolve_device(device)
    info = ModelInfo.from_module(module, source)  # before tuning: the decoding reads the module's buffers
    net = for_inference(module.net, device, runtime)

    def forward(batch: np.ndarray) -> torch.Tensor:
        with torch.inference_mode():
            return net(torch.from_numpy(batch).to(device))

    return Predictor(info, forward, f"pytorch-{runtime}", device)


def onnx_predictor(path: str | Path, device: str = "auto", heatmap: dict | None = None) -> Predictor:
    """An exported model: ONNX Runtime on CUDA when asked for and available, else CPU. Decoding is in its
    metadata, not the graph, so `heatmap` overrides apply to an export as to its checkpoint."""
    import onnxruntime as ort

    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"{path}: ONNX model not found")
    device = resolve_device(device)
    providers = ["CPUExecutionProvider"]
    if device.startswith("cuda"):
        if "CUDAExecutionProvider" in ort.get_available_providers():
            providers.insert(0, "CUDAExecutionProvider")
        else:
            warnings.warn("onnxruntime has no CUDA provider here (install onnxruntime-gpu); running on CPU", stacklevel=2)
            device = "cpu"
    try:
        options = ort.SessionOptions()
        # no busy-waiting between operators: a spinning pool takes the time of the threads that decode the
        # next images (predict.py read_workers; 1.48x -> 1.76x end to end on 2 cores, docs/results.md)
        options.add_session_config_entry("session.intra_op.allow_spinning", "0")
        session = ort.InferenceSession(str(path), sess_options=options, providers=providers)
    except Exception as e:  # onnxruntime raises its own exception types for unreadable models
        raise CheckpointError(f"{path}: not a readable ONNX model ({type(e).__name__}: {str(e)[:200]})") from None
    meta = session.get_modelmeta().custom_metadata_map.get(ONNX_METADATA_KEY)
    if meta is None:
        raise CheckpointError(f"{path}: no {ONNX_METADATA_KEY!r} metadata: export it with python -m landmark_exp.export")
    try:
        info = ModelInfo.from_dict(json.loads(meta))
    except (ValueError, KeyError, TypeError, IndexError) as e:
        raise CheckpointError(f"{path}: its {ONNX_METADATA_KEY!r} metadata is not valid "
                              f"({one_line(e, 200)})") from None
    if heatmap:
        try:
            info.decoding = info.decoding.overridden(heatmap, info.input_size)
        except ValueError as e:
            raise CheckpointError(f"{path}: {e}") from None
    inp, out = session.get_inputs()[0], session.get_outputs()[0]
    if list(inp.shape[1:]) != [info.input_channels, *info.input_size]:
        raise CheckpointError(f"{path}: graph input {inp.shape} does not match the metadata's input "
                              f"{[info.input_channels, *info.input_size]} (channels, height, width)")
    if out.shape[1] not in (info.num_landmarks, 1):
        raise CheckpointError(f"{path}: graph output has {out.shape[1]} channels, metadata says {info.num_landmarks} landmarks")

    def forward(batch: np.ndarray) -> torch.Tensor:
        return torch.from_numpy(session.run([out.name], {inp.name: batch})[0])

    return Predictor(info, forward, "onnxruntime", device)


RUNTIMES = ("auto", "tuned", "eager", "onnxruntime")
AUTO_ONNX_MIN_IMAGES = 8  # the on-the-fly export takes 0.3 s (CPU model) to 5 s (spec U-Net): worth it from here


def pick_runtime(runtime: str, device: str, images: int | None = None) -> str:
    """`auto`: ONNX Runtime on a CPU when it is installed and there are at least AUTO_ONNX_MIN_IMAGES images
    (or an unknown number), the fastest there (docs/results.md "Inference"); else the tuned PyTorch
    graph (GPUs, a few images, or no onnxruntime)."""
    if runtime != "auto":
        return runtime
    on_cpu = resolve_device(device) == "cpu"
    enough = images is None or images >= AUTO_ONNX_MIN_IMAGES
    return "onnxruntime" if on_cpu and enough and importlib.util.find_spec("onnxruntime") is not None else "tuned"

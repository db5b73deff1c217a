"""GPU memory of trainings run side by side, estimated on the CPU before a device session is planned.

    python -m benchmarks.activation_memory [experiment ...]     (default: the GPU session's four kinds)

For each experiment (composed from the package's configs, as train.py would), the bytes the model saves for
backward per sample under bf16 autocast (`torch.autograd.graph.saved_tensors_hooks`; the slope between one and
two samples, so the autocast copy of the weights drops out), times the samples of one batch (images, or images x
landmarks for a second stage's patches), x1.1 for the allocator, + 1.2 GiB per process (CUDA context, fp32
weights, gradients and Adam's moments of the spec U-Net). A CPU stands in for the GPU: the saved tensors are the
same, the allocator's slack and cuDNN's workspaces are not measured (hence the margins).
"""

from __future__ import annotations

import argparse
from pathlib import Path

import torch
from hydra import compose, initialize_config_dir
from omegaconf import OmegaConf

import landmark_exp
from landmark_exp.registry import build

CONF = str(Path(landmark_exp.__file__).parent / "conf")

PER_PROCESS_GIB, ALLOCATOR = 1.2, 1.1
ARM_R20 = ["data.input_size=[1200,968]", "data.patch.size=[96,96]"]  # gpu_session.sh's 0.2 mm/px arm, as it matters here
SESSION = {"isbi2015_full": [], "isbi2015_full_refine": [], "isbi2015_full_refine r20": ARM_R20, "seed": ["data=isbi2015"]}


def saved_bytes(net: torch.nn.Module, size: tuple[int, int], n: int) -> int:
    """Bytes saved for backward by one forward pass of `n` samples (each storage counted once)."""
    storages: dict[int, int] = {}

    def pack(t: torch.Tensor) -> torch.Tensor:
        storages[t.untyped_storage().data_ptr()] = t.untyped_storage().nbytes()
        return t

    with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t), torch.autocast("cpu", dtype=torch.bfloat16):
        net(torch.randn(n, net.down[0][0].in_channels, *size))
    return sum(storages.values())


def estimate(experiment: str, overrides: list[str]) -> tuple[float, float]:
    """(MiB saved per sample, GiB for the process) of one training of `experiment`."""
    with initialize_config_dir(CONF, version_base="1.3"):
        cfg = compose("train", overrides=[f"experiment={experiment}", *overrides])
    data = OmegaConf.to_container(cfg.data, resolve=True)
    patch = data.get("patch")
    size = tuple(patch["size"]) if patch else tuple(data["input_size"])
    samples = data["batch_size"] * (cfg.data.source.num_landmarks if patch else 1)
    model = OmegaConf.to_container(cfg.model, resolve=True)
    net = build({**model, "in_channels": 2 if patch and patch.get("context", 1) > 1 else 1}, "model")
    per_sample = saved_bytes(net, size, 2) - saved_bytes(net, size, 1)
    return per_sample / 2**20, per_sample * samples * ALLOCATOR / 2**30 + PER_PROCESS_GIB


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("experiments", nargs="*", help="experiment names (default: the GPU session's)")
    args = ap.parse_args()
    cases = {e: [] for e in args.experiments} if args.experiments else SESSION
    for name, overrides in cases.items():
        mib, gib = estimate(name.split()[0], overrides)
        print(f"{name:28s} {mib:7.1f} MiB saved per sample   {gib:5.1f} GiB per training")


if __name__ == "__main__":
    main()

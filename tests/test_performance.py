"""Speed switches keep the numbers: folded/NHWC inference, fused-optimizer resolution, the training callback."""

import numpy as np
import pytest
import torch
from conftest import TINY, compose
from torch import nn

from landmark_exp.cascade import load_predictor
from landmark_exp.data.images import read_grey
from landmark_exp.models.unet import UNet
from landmark_exp.performance import InferenceNet, fold_batchnorm, for_inference, optimizer_options


def _unet_with_statistics(seed: int = 0) -> UNet:
    """A small U-Net whose batch norms hold non-trivial running statistics and affine parameters."""
    torch.manual_seed(seed)
    net = UNet(1, 5, widths=(8, 16), bottleneck=16)
    for m in net.modules():
        if isinstance(m, nn.BatchNorm2d):
            m.running_mean.uniform_(-0.2, 0.2)
            m.running_var.uniform_(0.5, 2.0)
            m.weight.data.uniform_(0.5, 1.5)
            m.bias.data.uniform_(-0.2, 0.2)
    return net.eval()


def test_folding_batch_norm_removes_every_conv_bn_pair_and_keeps_the_output():
    net = _unet_with_statistics()
    folded = fold_batchnorm(net)
    x = torch.rand(3, 1, 32, 32)
    with torch.no_grad():
        torch.testing.assert_close(folded(x), net(x), atol=1e-5, rtol=1e-4)
    count = lambda m: sum(isinstance(c, nn.BatchNorm2d) for c in m.modules())  # noqa: E731
    # the spec bottleneck's first BN follows a ReLU (Conv+ReLU+BN): it cannot be folded into a conv
    assert count(net) == 2 * 2 * 2 + 2 and count(folded) == 1
    assert count(net) == 10  # the original is untouched


def test_tuned_inference_takes_and_returns_nchw_and_matches_eager():
    net = _unet_with_statistics(1)
    tuned = for_inference(net, "cpu", "tuned")
    assert isinstance(tuned, InferenceNet) and tuned.out_channels == 5
    x = torch.rand(2, 1, 48, 32)
    with torch.inference_mode():
        out, ref = tuned(x), for_inference(net, "cpu", "eager")(x)
    assert out.is_contiguous() and out.shape == ref.shape
    torch.testing.assert_close(out, ref, atol=1e-5, rtol=1e-4)
    with pytest.raises(ValueError, match="runtime"):
        for_inference(net, "cpu", "fast")


def test_tuned_and_eager_predictors_give_the_same_landmarks_to_a_thousandth_of_a_pixel(tiny_run):
    """In the network's pixel grid, where float rounding acts: this 1-epoch model's peaks are ~8 px wide and
    flat, the worst case for the sub-pixel fit; a trained model's agree far closer (docs/results.md)."""
    images = [read_grey(p) for p in sorted((tiny_run["root"] / "RawImage" / "Test1Data").glob("*.png"))]
    eager = load_predictor(tiny_run["ckpt"], "cpu", runtime="eager").predict(images)
    tuned = load_predictor(tiny_run["ckpt"], "cpu", runtime="tuned").predict(images)
    for a, b in zip(eager, tuned, strict=True):
        model_px = np.abs(a.xy - b.xy) * a.geometry.as_array()[None, 0:2]
        assert model_px.max() < 1e-3
        assert np.abs(a.confidence - b.confidence).max() < 1e-5


def test_fused_optimizer_auto_means_fused_on_cuda_only():
    adam = {"_target_": "torch.optim.Adam", "lr": 1e-3, "fused": "auto"}
    assert "fused" not in optimizer_options(adam, torch.device("cpu"))
    assert optimizer_options(adam, torch.device("cuda"))["fused"] is True
    assert optimizer_options({**adam, "fused": False}, torch.device("cuda")).get("fused") is None
    assert optimizer_options({**adam, "fused": True}, torch.device("cpu"))["fused"] is True
    rms = {"_target_": "torch.optim.RMSprop", "lr": 1e-3}  # no fused kernel: never asked for
    assert "fused" not in optimizer_options(rms, torch.device("cuda"))


def test_channels_last_training_switch_trains_nhwc_and_checkpoints_load_plainly(tmp_path, isbi_root):
    from landmark_exp.loading import load_module
    from landmark_exp.training import train

    cfg = compose("train", ["data=isbi2015", f"data.source.root={isbi_root}", f"paths.cache_dir={tmp_path}/cache",
                            *TINY, "logger=none", "callbacks.performance.channels_last=true",
                            "optimizer.fused=true"], tmp_path / "run")
    result = train(cfg)
    assert np.isfinite(result["mre"])
    module = load_module(tmp_path / "run" / "checkpoints" / "best.ckpt")
    assert module.net.down[0][0].weight.shape[1] == 1  # loads into the plain model, no wrapper keys


@pytest.mark.parametrize("capability,nhwc", [("AVX2", False), ("AVX512", True), ("DEFAULT", False)])
def test_channels_last_auto_is_nhwc_on_gpus_and_avx512_cpus_only(monkeypatch, capability, nhwc):
    from landmark_exp.performance import channels_last_default

    monkeypatch.setattr(torch.backends.cpu, "get_cpu_capability", lambda: capability)
    assert channels_last_default(torch.device("cpu")) is nhwc
    assert channels_last_default(torch.device("cuda")) is True


def test_the_performance_callback_puts_weights_and_batches_in_nhwc_when_asked(monkeypatch):
    from types import SimpleNamespace

    from landmark_exp.performance import PerformanceTuning

    monkeypatch.setattr(torch.backends.cpu, "get_cpu_capability", lambda: "AVX2")
    module = SimpleNamespace(net=_unet_with_statistics())
    trainer = SimpleNamespace(strategy=SimpleNamespace(root_device=torch.device("cpu")))
    auto = PerformanceTuning()  # auto: NCHW on an AVX2 CPU
    auto.setup(trainer, module, "fit")
    batch = {"image": torch.rand(2, 1, 16, 16)}
    auto.on_train_batch_start(trainer, module, batch, 0)
    assert not batch["image"].is_contiguous(memory_format=torch.channels_last) or batch["image"].shape[1] == 1
    assert module.net.down[0][0].weight.is_contiguous()
    on = PerformanceTuning(channels_last=True)
    on.setup(trainer, module, "fit")
    assert module.net.down[1][0].weight.is_contiguous(memory_format=torch.channels_last)
    batch = {"image": torch.rand(2, 3, 16, 16)}
    on.on_train_batch_start(trainer, module, batch, 0)
    assert batch["image"].is_contiguous(memory_format=torch.channels_last)


def test_a_checkpoint_runs_on_onnx_runtime_without_a_separate_export(tiny_run):
    from landmark_exp.data.records import CheckpointError

    images = [read_grey(p) for p in sorted((tiny_run["root"] / "RawImage" / "Test1Data").glob("*.png"))]
    onnx = load_predictor(tiny_run["ckpt"], "cpu", runtime="onnxruntime")
    assert onnx.backend == "onnxruntime"
    eager = load_predictor(tiny_run["ckpt"], "cpu", runtime="eager").predict(images)
    diff = np.concatenate([np.abs(a.xy - b.xy) * a.geometry.as_array()[None, 0:2]  # network pixels
                           for a, b in zip(eager, onnx.predict(images), strict=True)])
    # this barely trained model has broad, flat peaks where a 7x7 fit amplifies float rounding: most landmarks
    # agree to 1e-3 network px, none worse than 5e-3 (the trained CPU model: 1.1e-4 original px on all of Test1, docs/results.md)
    assert np.quantile(diff, 0.9) < 1e-3 and diff.max() < 5e-3
    with pytest.raises(CheckpointError, match="runtime='fast' is not one of"):
        load_predictor(tiny_run["ckpt"], "cpu", runtime="fast")


def test_auto_runtime_is_onnx_runtime_on_a_cpu_when_installed_and_tuned_without_it(tiny_run, monkeypatch):
    import importlib.util

    from landmark_exp.backends import pick_runtime

    assert load_predictor(tiny_run["ckpt"], "cpu", runtime="auto").backend == "onnxruntime"
    assert pick_runtime("eager", "cpu") == "eager"
    real = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec", lambda name, *a: None if name == "onnxruntime" else real(name, *a))
    assert pick_runtime("auto", "cpu") == "tuned"
    monkeypatch.undo()
    assert pick_runtime("auto", "cpu", images=3) == "tuned"  # the export would cost more than it saves
    assert pick_runtime("auto", "cpu", images=8) == "onnxruntime"

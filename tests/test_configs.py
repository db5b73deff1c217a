"""Every option of every config group composes, and what it names can be built."""

import re
from pathlib import Path

import numpy as np
import pytest
import torch
from conftest import ROOT, compose
from hydra.utils import instantiate

CONF = ROOT / "landmark_exp" / "conf"
GROUPS = ["data", "model", "loss", "optimizer", "scheduler", "heatmap", "trainer", "logger", "callbacks", "experiment"]


def _options(group: str) -> list[str]:
    return sorted(p.stem for p in (CONF / group).glob("*.yaml"))


@pytest.mark.parametrize("group,option", [(g, o) for g in GROUPS for o in _options(g)])
def test_every_group_option_composes(group, option, tmp_path):
    cfg = compose("train", [f"{group}={option}", "data.source.root=/nonexistent"] if group == "data" and option != "synthetic"
                  else [f"{group}={option}"], tmp_path)
    assert cfg[group] is not None if group != "experiment" else True


def test_required_groups_exist():
    for g in GROUPS + ["paths", "hydra"]:
        assert (CONF / g).is_dir(), g


def test_model_unet_is_the_spec_unet_with_31m_parameters(tmp_path):
    cfg = compose("train", ["model=unet"], tmp_path)
    net = instantiate(cfg.model)
    assert list(cfg.model.widths) == [64, 128, 256, 512] and cfg.model.bottleneck == 1024
    assert sum(p.numel() for p in net.parameters()) == 31_039_699
    assert net.out_channels == 19
    # the bottleneck follows the spec's order: Conv(1024) + ReLU + BN + Conv(1024) + BN
    kinds = [type(m).__name__ for m in net.bottleneck]
    assert kinds == ["Conv2d", "ReLU", "BatchNorm2d", "Conv2d", "BatchNorm2d"]
    assert net.bottleneck[0].out_channels == 1024 and net.bottleneck[3].out_channels == 1024
    assert [b[0].out_channels for b in net.down] == [64, 128, 256, 512]
    assert [b[0].out_channels for b in net.up_conv] == [512, 256, 128, 64]


def test_seed_experiment_is_the_seed_decks_setup(tmp_path):
    cfg = compose("train", ["experiment=seed"], tmp_path)
    assert cfg.model._target_.endswith("UNet") and list(cfg.model.widths) == [64, 128, 256, 512]
    assert cfg.model.out_channels == 1 and cfg.model.activation == "sigmoid"
    assert list(cfg.data.input_size) == [256, 256]
    assert cfg.loss._target_.endswith("DiceLoss") and cfg.optimizer._target_ == "torch.optim.Adam"
    assert cfg.data.random_split is not None and cfg.trainer.max_epochs == 150


def test_gpu_first_stage_uses_the_sigma_chosen_on_validation_and_best_builds_on_it(tmp_path):
    """Sigma 1.5 won the H200 session's validation rule (docs/results.md "ISBI 2015 on one H200"); the best setup's
    first stage is the seed setup, so its Test1 cascades were scored on exactly these first stages."""
    seed = compose("train", ["experiment=isbi2015_seed"], tmp_path)
    best = compose("train", ["experiment=isbi2015_best"], tmp_path)
    assert seed.heatmap.sigma == 1.5 and list(seed.data.input_size) == [256, 256]
    assert seed.model == best.model and seed.heatmap == best.heatmap and seed.data == best.data


def test_gpu_second_stage_is_the_cpu_second_stage_with_the_spec_unet(tmp_path):
    """The CPU second stage's test-time choices were validated for its geometry only: the GPU one must keep it."""
    gpu = compose("train", ["experiment=isbi2015_refine"], tmp_path)
    cpu = compose("train", ["experiment=isbi2015_cpu_refine"], tmp_path)
    assert gpu.data.patch == cpu.data.patch and list(gpu.data.input_size) == list(cpu.data.input_size)
    assert gpu.heatmap == cpu.heatmap and gpu.trainer.max_epochs == cpu.trainer.max_epochs
    assert list(gpu.model.widths) == [64, 128, 256, 512] and gpu.trainer.accelerator == "gpu"


def _mm_per_px(cfg) -> float:
    """Millimetres per model pixel of an ISBI 2015 config (0.1 mm/px originals, 2400 px high)."""
    return float(cfg.data.source.spacing) * 2400 / cfg.data.input_size[0]


def _session_arm(name: str) -> list[str]:
    """The overrides benchmarks/gpu_session.sh gives a second-stage arm (e.g. R20="...")."""
    text = (ROOT / "benchmarks" / "gpu_session.sh").read_text()
    return re.search(rf'^{name}="(.*?)"', text, re.S | re.M)[1].replace("\\\n", " ").split()


def test_full_resolution_stages_keep_every_validated_length_in_millimetres(tmp_path):
    """The full-resolution session changes the pixel size only: blobs, decoding windows, patches, jitter and
    test-time shifts stay the millimetres that the 256 px first stage and the 0.4 mm/px second stage validated."""
    seed, full = (compose("train", [f"experiment={e}"], tmp_path) for e in ("isbi2015_seed", "isbi2015_full"))
    assert list(full.data.input_size) == [512, 512] and full.model == seed.model
    for key in ("sigma", "window"):
        assert full.heatmap[key] * _mm_per_px(full) == pytest.approx(seed.heatmap[key] * _mm_per_px(seed))
    coarse = compose("train", ["experiment=isbi2015_refine"], tmp_path)
    for over, spacing in (([], 0.15), (_session_arm("R20"), 0.2)):
        fine = compose("train", ["experiment=isbi2015_full_refine", *over], tmp_path)
        a, b = _mm_per_px(coarse), _mm_per_px(fine)
        assert b == pytest.approx(spacing)
        assert fine.data.input_size[1] / fine.data.input_size[0] == pytest.approx(
            coarse.data.input_size[1] / coarse.data.input_size[0], rel=0.01)
        assert [n * b for n in fine.data.patch.size] == pytest.approx([n * a for n in coarse.data.patch.size])
        assert fine.data.patch.jitter * b == pytest.approx(coarse.data.patch.jitter * a)
        assert np.array(fine.data.patch.shifts) * b == pytest.approx(np.array(coarse.data.patch.shifts) * a, abs=0.06)
        assert fine.heatmap.sigma * b == pytest.approx(coarse.heatmap.sigma * a, rel=0.01)
        assert fine.heatmap.window * b == pytest.approx(coarse.heatmap.window * a, rel=0.05)
        assert fine.data.patch.views == coarse.data.patch.views and fine.data.patch.blend == coarse.data.patch.blend
        assert fine.model == coarse.model and fine.trainer.max_epochs == coarse.trainer.max_epochs


@pytest.mark.parametrize("option", _options("model"))
def test_models_build_offline_and_keep_the_input_size(option, tmp_path):
    over = [f"model={option}"] + (["model.widths=[4,8,8,8]", "model.bottleneck=8"] if "unet" == option[:4] else [])
    cfg = compose("train", over, tmp_path)
    net = instantiate(cfg.model).eval()
    with torch.no_grad():
        y = net(torch.rand(1, 1, 64, 64))
    assert y.shape == (1, 19, 64, 64) and 0 <= y.min() and y.max() <= 1


@pytest.mark.parametrize("option", _options("loss"))
def test_losses_are_lowest_for_the_target_and_ignore_masked_landmarks(option, tmp_path):
    loss = instantiate(compose("train", [f"loss={option}"], tmp_path).loss)
    from landmark_exp.heatmap.generator import gaussian_heatmaps

    c = torch.tensor([[[10.0, 12.0], [20.0, 5.0]]])
    target = gaussian_heatmaps(c, (32, 32), 2.0)
    wrong = gaussian_heatmaps(c + 4, (32, 32), 2.0)
    assert loss(target, target) < loss(wrong, target)
    both_wrong = torch.stack([wrong[0, 0], wrong[0, 1]])[None]
    mixed = torch.stack([target[0, 0], wrong[0, 1]])[None]
    w = torch.tensor([[1.0, 0.0]])
    assert loss(mixed, target, w) == pytest.approx(float(loss(target, target, w)), abs=1e-6)
    assert loss(both_wrong, target, w) > loss(mixed, target, w)


@pytest.mark.parametrize("option", _options("optimizer"))
def test_optimizers_and_schedulers_build(option, tmp_path):
    for sched in _options("scheduler"):
        cfg = compose("train", [f"optimizer={option}", f"scheduler={sched}"], tmp_path)
        p = [torch.nn.Parameter(torch.zeros(1))]
        opt = instantiate(cfg.optimizer, params=p)
        s = {k: v for k, v in cfg.scheduler.items() if k not in ("monitor", "interval", "frequency")}
        if s:
            instantiate(s, optimizer=opt)


def test_config_files_are_named_for_their_group():
    assert Path(CONF / "train.yaml").is_file() and Path(CONF / "evaluate.yaml").is_file()

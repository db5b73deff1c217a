"""Ensembles: several checkpoints as one model (mean heatmaps) in evaluate, predict and export."""

import json

import numpy as np
import pytest
import torch
from conftest import TINY, compose

from landmark_exp.cascade import load_predictor
from landmark_exp.data.records import CheckpointError
from landmark_exp.loading import load_module
from landmark_exp.models.ensemble import MeanOfNets, ShiftedMean, shift2d


@pytest.fixture(scope="module")
def second_member(tiny_run):
    """A second tiny model on tiny_run's data and splits, from another initialisation (seed 7, data seed 42)."""
    from landmark_exp.training import train

    tmp = tiny_run["dir"]
    train(compose("train", ["data=isbi2015", f"data.source.root={tiny_run['root']}", f"paths.cache_dir={tmp}/cache",
                            *TINY, "logger=none", "seed=7", "data.seed=42"], tmp / "member2"))
    return tmp / "member2" / "checkpoints" / "best.ckpt"


def test_mean_of_nets_is_the_mean_of_the_members_outputs():
    torch.manual_seed(0)
    members = [torch.nn.Conv2d(1, 3, 3, padding=1) for _ in range(3)]
    x = torch.rand(2, 1, 8, 8)
    expected = torch.stack([m(x) for m in members]).mean(0)
    torch.testing.assert_close(MeanOfNets(members)(x), expected)


def test_an_ensemble_of_one_checkpoint_twice_scores_exactly_as_the_checkpoint(tmp_path, tiny_run):
    from landmark_exp.evaluation import evaluate

    ckpt = tiny_run["ckpt"]
    common = [f"paths.cache_dir={tiny_run['dir']}/cache", "device=cpu", "overlays=0", "runtime=eager"]
    single = evaluate(compose("evaluate", [f"ckpt_path={ckpt}", *common], tmp_path / "single"))
    double = evaluate(compose("evaluate", [f"ckpt_path=[{ckpt},{ckpt}]", *common], tmp_path / "double"))
    assert double["mre"] == pytest.approx(single["mre"], abs=1e-9)
    assert json.loads((tmp_path / "double" / "metrics.json").read_text())["checkpoint"] == f"{ckpt}, {ckpt}"


@pytest.mark.parametrize("runtime", ["eager", "tuned", "onnxruntime"])
def test_ensemble_heatmaps_are_the_mean_of_its_members_heatmaps(tiny_run, second_member, runtime):
    a, b = tiny_run["ckpt"], second_member
    x = np.random.default_rng(0).random((3, 1, 32, 32)).astype(np.float32)
    ha = load_predictor(a, "cpu", runtime="eager").heatmaps(x)
    hb = load_predictor(b, "cpu", runtime="eager").heatmaps(x)
    assert float((ha - hb).abs().max()) > 1e-3  # the members really differ
    ensemble = load_predictor([a, b], "cpu", runtime=runtime)
    torch.testing.assert_close(ensemble.heatmaps(x).cpu(), (ha + hb) / 2, atol=1e-5, rtol=0)
    assert ensemble.info.source == f"{a}, {b}"


def test_ensemble_uses_the_members_mean_shape(tiny_run, second_member):
    ma, mb = load_module(tiny_run["ckpt"]), load_module(second_member)
    both = load_module([tiny_run["ckpt"], second_member])
    torch.testing.assert_close(both.mean_shape, (ma.mean_shape + mb.mean_shape) / 2)
    assert both.members == [str(tiny_run["ckpt"]), str(second_member)]


def test_members_of_another_kind_are_refused_naming_the_file_and_what_differs(tiny_run, tiny_refine):
    with pytest.raises(CheckpointError, match=rf"^{tiny_refine}: cannot join an ensemble with .*input size \[16, 16\] != \[32, 32\]"):
        load_module([tiny_run["ckpt"], tiny_refine])
    with pytest.raises(CheckpointError, match="an empty list"):
        load_module([])


def test_second_stages_join_across_shifts_and_jitter_but_not_across_working_resolutions_or_context(tmp_path, tiny_refine,
                                                                                                   tiny_context_refine):
    ckpt = torch.load(tiny_refine, map_location="cpu", weights_only=True)
    patch = ckpt["hyper_parameters"]["data"]["patch"]
    patch.update(shifts=[[0, 0], [0, 3]], jitter=5)  # inference and training choices: the outputs mean the same
    torch.save(ckpt, tmp_path / "shifted.ckpt")
    both = load_module([tiny_refine, tmp_path / "shifted.ckpt"])
    assert both.hparams["data"]["patch"].get("shifts") is None  # the first member's: one centred patch
    ckpt["hyper_parameters"]["data"]["input_size"] = [96, 80]  # patches of the same size from a finer image
    torch.save(ckpt, tmp_path / "finer.ckpt")
    with pytest.raises(CheckpointError, match=r"finer.ckpt: cannot join an ensemble with .*: patch \(second stage\) "
                                              r"\{'working size': \[96, 80\], 'size': \[16, 16\], 'context': 1\} != \{'working size': \[80, 64\]"):
        load_module([tiny_refine, tmp_path / "finer.ckpt"])
    with pytest.raises(CheckpointError, match=r"'context': 2\} != \{.*'context': 1\}"):  # another input channel
        load_module([tiny_refine, tiny_context_refine])


def test_exported_ensemble_predicts_what_the_pytorch_ensemble_predicts(tmp_path, tiny_run, second_member):
    from landmark_exp.export import export

    out = tmp_path / "ensemble.onnx"
    result = export(compose("export", [f"ckpt_path=[{tiny_run['ckpt']},{second_member}]", f"output={out}"], tmp_path / "x"))
    # random images through barely trained tiny nets give flat maps: the same bounds as a single model's export
    assert result["parity"]["heatmaps_max_abs_diff"] < 1e-5 and result["parity"]["coordinates_px_max_abs_diff"] < 1e-2
    assert json.loads((tmp_path / "x" / "export.json").read_text())["checkpoint"] == f"{tiny_run['ckpt']}, {second_member}"


def test_ensemble_export_without_an_output_file_is_refused(tmp_path, tiny_run, second_member, capsys):
    from landmark_exp.export import export

    with pytest.raises(SystemExit):
        export(compose("export", [f"ckpt_path=[{tiny_run['ckpt']},{second_member}]"], tmp_path / "x"))
    assert "an ensemble of checkpoints needs output=<file>.onnx" in capsys.readouterr().out


def test_validation_score_of_members_with_different_splits_is_flagged(tmp_path, tiny_run, capsys):
    from landmark_exp.evaluation import evaluate
    from landmark_exp.training import train

    tmp = tiny_run["dir"]
    train(compose("train", ["data=isbi2015", f"data.source.root={tiny_run['root']}", f"paths.cache_dir={tmp}/cache",
                            *TINY, "logger=none", "seed=3"], tmp_path / "other_split"))
    other = tmp_path / "other_split" / "checkpoints" / "best.ckpt"
    common = [f"paths.cache_dir={tmp}/cache", "device=cpu", "overlays=0"]
    evaluate(compose("evaluate", [f"ckpt_path=[{tiny_run['ckpt']},{other}]", "split=val", *common], tmp_path / "val"))
    assert "optimistic" in capsys.readouterr().out
    evaluate(compose("evaluate", [f"ckpt_path=[{tiny_run['ckpt']},{other}]", "split=test", *common], tmp_path / "test"))
    assert "optimistic" not in capsys.readouterr().out


def test_shift2d_moves_the_content_and_fills_zeros_without_wrapping():
    x = torch.arange(1.0, 10.0).view(1, 1, 3, 3)
    assert shift2d(x, 1, 0)[0, 0].tolist() == [[0, 0, 0], [1, 2, 3], [4, 5, 6]]
    assert shift2d(x, 0, -1)[0, 0].tolist() == [[2, 3, 0], [5, 6, 0], [8, 9, 0]]
    assert torch.equal(shift2d(shift2d(x, -2, 2), 2, -2)[0, 0, 2, 0], x[0, 0, 2, 0])


def test_test_time_shifts_leave_a_shift_equivariant_network_unchanged_inside():
    torch.manual_seed(0)
    net = torch.nn.Sequential(torch.nn.Conv2d(1, 3, 1), torch.nn.Sigmoid())  # pointwise: equivariant to any shift
    x = torch.rand(2, 1, 16, 16)
    tta = ShiftedMean(net, [[0, 0], [0, 3], [2, 0], [2, 3]])
    torch.testing.assert_close(tta(x)[..., 2:-2, 3:-3], net(x)[..., 2:-2, 3:-3])


@pytest.mark.parametrize("runtime", ["eager", "onnxruntime"])
def test_test_time_shifts_average_the_shifted_heatmaps_in_every_runtime(tiny_run, runtime):
    x = np.random.default_rng(0).random((2, 1, 32, 32)).astype(np.float32)
    plain = load_predictor(tiny_run["ckpt"], "cpu", runtime="eager")
    shifts = [[0, 0], [0, 4], [4, 0]]
    want = sum(shift2d(plain.heatmaps(shift2d(torch.from_numpy(x), dy, dx).numpy()), -dy, -dx) for dy, dx in shifts) / 3
    got = load_predictor(tiny_run["ckpt"], "cpu", runtime=runtime, tta_shifts=shifts).heatmaps(x)
    torch.testing.assert_close(got, want, atol=1e-5, rtol=0)


def test_test_time_shifts_are_refused_for_a_second_stage_and_an_exported_model(tmp_path, tiny_refine):
    with pytest.raises(CheckpointError, match="whole-image models"):
        load_module(tiny_refine, tta_shifts=[[0, 0], [0, 4]])
    (tmp_path / "m.onnx").write_bytes(b"")
    with pytest.raises(CheckpointError, match="export it with tta_shifts"):
        load_predictor(tmp_path / "m.onnx", "cpu", tta_shifts=[[0, 4]])


def test_a_second_stage_ensemble_of_one_checkpoint_twice_refines_exactly_as_the_checkpoint(tmp_path, tiny_run, tiny_refine):
    from landmark_exp.evaluation import evaluate

    common = [f"ckpt_path={tiny_run['ckpt']}", "device=cpu", "overlays=0", "runtime=eager"]
    single = evaluate(compose("evaluate", [*common, f"refine_ckpt={tiny_refine}"], tmp_path / "single"))
    double = evaluate(compose("evaluate", [*common, f"refine_ckpt=[{tiny_refine},{tiny_refine}]"], tmp_path / "double"))
    assert double["mre"] == pytest.approx(single["mre"], abs=1e-9)
    images = [np.random.default_rng(1).random((80, 64)).astype(np.float32)]
    a = load_predictor(tiny_run["ckpt"], "cpu", refine=tiny_refine, runtime="eager").predict(images)
    b = load_predictor(tiny_run["ckpt"], "cpu", refine=[tiny_refine, tiny_refine], runtime="eager").predict(images)
    np.testing.assert_allclose(a[0].xy, b[0].xy, atol=1e-9)

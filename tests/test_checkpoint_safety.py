"""Checkpoints load without running pickled code, and a checkpoint that does not fit the data says why in one line."""

import pytest
import torch
from conftest import compose

from landmark_exp.data.records import CheckpointError
from landmark_exp.evaluation import evaluate
from landmark_exp.loading import check_matches_data, load_module

RAN = []


class _Payload:
    """Unpickling this calls RAN.append: the code a malicious checkpoint would run."""

    def __reduce__(self):
        return (RAN.append, ("pickled code ran",))


def test_a_checkpoint_carrying_pickled_code_is_refused_without_running_it(tmp_path, tiny_run):
    ckpt = torch.load(tiny_run["ckpt"], weights_only=True)
    ckpt["hyper_parameters"]["extra"] = _Payload()
    torch.save(ckpt, tmp_path / "evil.ckpt")
    RAN.clear()
    with pytest.raises(CheckpointError, match="refused to load"):
        load_module(tmp_path / "evil.ckpt")
    assert RAN == []


def test_weights_that_do_not_fit_the_stored_model_config_are_a_clear_error(tmp_path, tiny_run):
    ckpt = torch.load(tiny_run["ckpt"], weights_only=True)
    ckpt["hyper_parameters"]["model"]["widths"] = [8, 8, 8, 8]
    torch.save(ckpt, tmp_path / "bad.ckpt")
    with pytest.raises(CheckpointError, match="weights do not fit"):
        load_module(tmp_path / "bad.ckpt")
    (tmp_path / "junk.ckpt").write_bytes(b"junk")
    with pytest.raises(CheckpointError, match="not a PyTorch checkpoint file"):
        load_module(tmp_path / "junk.ckpt")


def test_mismatched_landmark_count_input_size_and_names(tiny_run):
    module = load_module(tiny_run["ckpt"])
    names = list(module.landmark_names)
    check_matches_data(module, "m.ckpt", 19, names, (32, 32))  # the data it was trained on: fine
    with pytest.raises(CheckpointError, match="predicts 19 landmarks, the data has 18"):
        check_matches_data(module, "m.ckpt", 18, names[:18], (32, 32))
    with pytest.raises(CheckpointError, match=r"input size \[32, 32\] != data input size \[64, 64\]"):
        check_matches_data(module, "m.ckpt", 19, names, (64, 64))
    renamed = names[:4] + ["orbitale"] + names[5:]
    with pytest.raises(CheckpointError, match="first at landmark 5: checkpoint 'subspinale', data 'orbitale'"):
        check_matches_data(module, "m.ckpt", 19, renamed, (32, 32))


def test_evaluate_with_data_given_sees_the_images_as_the_model_was_trained_to(tmp_path, tiny_run):
    """data=... says where the images are; input size and normalisation come from the model, whatever data says."""
    cfg = compose("evaluate", [f"ckpt_path={tiny_run['ckpt']}", "data=isbi2015", f"data.source.root={tiny_run['root']}",
                               f"paths.cache_dir={tmp_path}/cache", "data.input_size=[48,48]", "device=cpu", "overlays=0"],
                  tmp_path / "eval")
    assert evaluate(cfg)["n_images"] == 4


@pytest.mark.parametrize("override, message", [
    ("data.source.num_landmarks=18", "checkpoint predicts 19 landmarks, the data has 18"),
])
def test_evaluate_on_mismatched_data_stops_with_one_line(tmp_path, tiny_run, capsys, override, message):
    cfg = compose("evaluate", [f"ckpt_path={tiny_run['ckpt']}", "data=isbi2015", f"data.source.root={tiny_run['root']}",
                               f"paths.cache_dir={tmp_path}/cache", "data.input_size=[32,32]", override,
                               "device=cpu"], tmp_path / "eval")
    with pytest.raises(SystemExit):
        evaluate(cfg)
    out = capsys.readouterr().out
    line = next(ln for ln in out.splitlines() if "data error:" in ln)
    assert message in out and "Traceback" not in out and str(tiny_run["ckpt"]) in out.replace("\n", "")
    assert line.startswith("data error:")

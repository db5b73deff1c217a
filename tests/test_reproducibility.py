"""`seed=` fixes splits, augmentation and initialisation; a run directory says what produced it."""

from __future__ import annotations

import json
import subprocess

import pytest
import torch
from conftest import ROOT, TINY, compose
from hydra.utils import instantiate
from torch.utils.data import DataLoader

from landmark_exp.training import train


def _datamodule(tmp_path, isbi_root, seed: int):
    dm = instantiate(compose("train", ["data=isbi2015", f"data.source.root={isbi_root}", f"paths.cache_dir={tmp_path}/cache",
                                       "data.input_size=[32,32]", f"seed={seed}"], tmp_path).data)
    dm.setup("fit")
    return dm


def _images(ds, n: int = 6) -> torch.Tensor:
    return torch.stack([ds[i]["image"] for i in range(n)])


def test_splits_and_augmentation_are_functions_of_seed_epoch_and_sample(tmp_path, isbi_root):
    a, b, c = (_datamodule(tmp_path, isbi_root, s) for s in (1, 1, 2))
    assert [r.id for r in a.records["val"]] == [r.id for r in b.records["val"]] != [r.id for r in c.records["val"]]
    ta, tb = a.datasets["train"], b.datasets["train"]
    first = _images(ta)
    assert torch.equal(first, _images(tb))                 # same seed: same augmentation
    assert torch.equal(ta[3]["image"], first[3])           # not a stream: asking again gives the same sample
    ta.set_epoch(1)
    assert not torch.equal(_images(ta), first)             # a new epoch: new augmentation
    ta.set_epoch(0)
    # whoever loads it (main process or any worker, persistent or not) gets the same sample
    loader = DataLoader(ta, batch_size=3, num_workers=2, persistent_workers=True)
    assert torch.equal(torch.cat([b["image"] for b in loader])[:6], first)
    ta.set_epoch(1)  # seen by the persistent workers through shared memory
    tb.set_epoch(1)
    assert torch.equal(torch.cat([b["image"] for b in loader])[:6], _images(tb))
    cc = c.datasets["train"]
    ids = {r.id: i for i, r in enumerate(cc.records)}
    same = [(i, ids[r.id]) for i, r in enumerate(ta.records) if r.id in ids][:3]
    assert not all(torch.equal(ta[i]["image"], cc[j]["image"]) for i, j in same)  # another seed: other draws


@pytest.mark.slow
def test_two_runs_with_the_same_seed_give_identical_results_and_a_third_seed_does_not(tmp_path, isbi_root):
    base = ["data=isbi2015", f"data.source.root={isbi_root}", f"paths.cache_dir={tmp_path}/cache", *TINY, "logger=none",
            "trainer.max_epochs=2", "trainer.deterministic=true", "callbacks.progress_bar=null"]
    runs = [train(compose("train", [*base, f"seed={s}"], tmp_path / name)) for name, s in (("a", 7), ("b", 7), ("c", 8))]
    a, b, c = (json.loads((tmp_path / n / "metrics.json").read_text()) for n in "abc")
    assert {k: v for k, v in a.items() if k != "checkpoint"} == {k: v for k, v in b.items() if k != "checkpoint"}
    assert runs[0] == runs[1]
    wa, wb, wc = (torch.load(tmp_path / n / "checkpoints" / "last.ckpt", weights_only=True)["state_dict"] for n in "abc")
    assert all(torch.equal(wa[k], wb[k]) for k in wa)
    assert a["mre"] != c["mre"] and not all(torch.equal(wa[k], wc[k]) for k in wa)

    info = json.loads((tmp_path / "a" / "run_info.json").read_text())
    head = subprocess.run(["git", "-C", str(ROOT), "rev-parse", "HEAD"], capture_output=True, text=True).stdout.strip()
    assert info["git"]["commit"] == head and isinstance(info["git"]["dirty"], bool)
    assert info["packages"]["torch"] == torch.__version__.split("+")[0] or info["packages"]["torch"] == torch.__version__
    assert {"lightning", "hydra-core", "numpy", "albumentations"} <= set(info["packages"])
    assert info["command"] and info["python"] and info["started"]

"""A kill or error at any moment leaves each result file and checkpoint old or new, never truncated."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time

import pytest
import torch
from conftest import ROOT, compose

from landmark_exp.checkpoints import AtomicCheckpointIO
from landmark_exp.files import write_json
from landmark_exp.reports import write_results
from landmark_exp.training import build_trainer

WRITER = """
import sys, torch
from pathlib import Path
from landmark_exp.checkpoints import AtomicCheckpointIO
from landmark_exp.files import write_json
out, io = Path(sys.argv[1]), AtomicCheckpointIO()
versions = [(v, torch.full((300_000,), float(v))) for v in (1, 2)]  # 1.2 MB each
i = 0
while True:
    v, t = versions[i % 2]
    write_json(out / "metrics.json", {"version": v, "values": [v] * 200_000})
    io.save_checkpoint({"version": v, "w": t}, out / "last.ckpt")
    if i == 1:
        (out / "started").write_text("")
    i += 1
"""


@pytest.mark.parametrize("delay", [0.07, 0.23])
def test_sigkill_while_rewriting_leaves_complete_files(tmp_path, delay):
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    proc = subprocess.Popen([sys.executable, "-c", WRITER, str(tmp_path)], env=env, stderr=subprocess.PIPE, text=True)
    try:
        deadline = time.monotonic() + 120
        while not (tmp_path / "started").exists() and time.monotonic() < deadline and proc.poll() is None:
            time.sleep(0.01)
        assert proc.poll() is None, proc.stderr.read()
        time.sleep(delay)
        os.kill(proc.pid, signal.SIGKILL)
        proc.wait(timeout=30)
    finally:
        if proc.poll() is None:
            proc.kill()
    metrics = json.loads((tmp_path / "metrics.json").read_text())
    assert metrics["version"] in (1, 2) and metrics["values"] == [metrics["version"]] * 200_000
    ckpt = torch.load(tmp_path / "last.ckpt", weights_only=True)
    assert ckpt["version"] in (1, 2) and torch.equal(ckpt["w"], torch.full((300_000,), float(ckpt["version"])))


class _FailsWhenPickled:
    def __reduce__(self):
        raise RuntimeError("disk full, half-way through")


def test_checkpoint_write_failing_half_way_keeps_the_previous_checkpoint(tmp_path):
    io, path = AtomicCheckpointIO(), tmp_path / "checkpoints" / "last.ckpt"
    io.save_checkpoint({"epoch": 1, "w": torch.ones(1000)}, path)
    with pytest.raises(RuntimeError, match="half-way"):
        # torch.save has already streamed the tensor when it reaches the object that fails
        io.save_checkpoint({"epoch": 2, "w": torch.zeros(1000), "z": _FailsWhenPickled()}, path)
    assert torch.load(path, weights_only=True)["epoch"] == 1
    assert [p.name for p in path.parent.iterdir()] == ["last.ckpt"]  # no temporary file left behind


def test_result_files_failing_before_the_rename_keep_the_previous_version(tmp_path, monkeypatch):
    summary = {"mre": 1.5, "per_landmark": [{"landmark": 1, "name": "L1", "mre": 1.5}]}
    write_results(tmp_path, summary)
    before = {p.name: p.read_bytes() for p in tmp_path.iterdir()}

    def killed(*args):
        raise KeyboardInterrupt  # e.g. Ctrl-C after the new content was written, before it replaced the old

    monkeypatch.setattr(os, "replace", killed)
    with pytest.raises(KeyboardInterrupt):
        write_results(tmp_path, {**summary, "mre": 9.9})
    with pytest.raises(KeyboardInterrupt):
        write_json(tmp_path / "metrics.json", {"mre": 9.9})
    assert {p.name: p.read_bytes() for p in tmp_path.iterdir()} == before


def test_trainer_writes_checkpoints_through_the_atomic_writer(tmp_path):
    trainer = build_trainer(compose("train", ["trainer.accelerator=cpu", "logger=none"], tmp_path), logger=False)
    assert isinstance(trainer.strategy.checkpoint_io, AtomicCheckpointIO)


def test_result_files_are_readable_by_others_like_any_new_file(tmp_path):
    write_json(tmp_path / "m.json", {})
    umask = os.umask(0)
    os.umask(umask)
    assert (tmp_path / "m.json").stat().st_mode & 0o777 == 0o666 & ~umask

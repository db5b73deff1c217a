"""The command lines users type, run as subprocesses on tiny data."""

import json
import os
import subprocess
import sys
from pathlib import Path

import pandas as pd
import pytest
from conftest import NCHW, ROOT, TINY, write_isbi_fixture

pytestmark = pytest.mark.slow


def run(args: list[str], cwd: Path = ROOT, timeout: int = 300, env: dict | None = None) -> subprocess.CompletedProcess:
    proc = subprocess.run([sys.executable, *args], cwd=cwd, capture_output=True, text=True, timeout=timeout,
                          env={**os.environ, **env} if env else None)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    return proc


def _data(tmp_path: Path, n_test1: int = 4) -> list[str]:
    root = write_isbi_fixture(tmp_path / "isbi", n_test1=n_test1)
    return ["data=isbi2015", f"data.source.root={root}", f"paths.log_dir={tmp_path}/outputs", f"paths.cache_dir={tmp_path}/cache", *TINY]


def _only(pattern: str, base: Path) -> Path:
    found = sorted(base.glob(pattern))
    assert len(found) == 1, found
    return found[0]


def test_train_py_with_csv_logger_then_evaluate_py(tmp_path):
    proc = run(["train.py", *_data(tmp_path), "logger=csv", NCHW])
    assert "MRE (mm)" in proc.stdout and "mean-shape baseline" in proc.stdout
    rundir = _only("outputs/train/runs/*", tmp_path)
    assert (rundir / "csv" / "metrics.csv").is_file() and (rundir / ".hydra" / "config.yaml").is_file()
    # every validation epoch logs the weakest landmark's peak against the typical one's (dead-channel watch)
    weakest = pd.read_csv(rundir / "csv" / "metrics.csv")["val/weakest_peak"].dropna()
    assert len(weakest) >= 1 and ((weakest > 0) & (weakest <= 1)).all()
    # runtime=eager: the network exactly as train.py tested it, so the report is reproduced to the bit
    # (the default tuned runtime rounds differently, ~1e-6 mm: tests/test_performance.py)
    proc = run(["evaluate.py", f"ckpt_path={rundir}/checkpoints/best.ckpt", f"paths.log_dir={tmp_path}/outputs",
                "device=cpu", "runtime=eager"])
    evaldir = _only("outputs/evaluate/runs/*", tmp_path)
    a = json.loads((rundir / "metrics.json").read_text())
    b = json.loads((evaldir / "metrics.json").read_text())
    assert a["mre"] == pytest.approx(b["mre"], abs=1e-9)


def test_multirun_gives_one_directory_per_job_and_one_summary_table(tmp_path):
    run(["train.py", "-m", *_data(tmp_path), "trainer.max_epochs=1,2", "logger=none"])
    sweep = _only("outputs/train/multiruns/*", tmp_path)
    assert (sweep / "0" / "metrics.json").is_file() and (sweep / "1" / "metrics.json").is_file()
    table = pd.read_csv(sweep / "sweep_summary.csv")
    assert table["overrides"].str.contains("trainer.max_epochs=2").any()
    assert (table["status"] == "done").all() and table["mre"].notna().all()
    # rebuilt from the run directories alone
    (sweep / "sweep_summary.csv").unlink()
    run(["-m", "landmark_exp.sweep", str(sweep)])
    assert pd.read_csv(sweep / "sweep_summary.csv").shape[0] == 2


def test_cpu_ddp_with_two_processes_scores_the_whole_test_split(tmp_path):
    # 5 test images over 2 processes: the sampler pads to 6; metrics must count each image once
    run(["train.py", *_data(tmp_path, n_test1=5), "trainer=ddp_cpu", "trainer.devices=2", "trainer.accelerator=cpu",
         "logger=none"], timeout=600)
    rundir = _only("outputs/train/runs/*", tmp_path)
    a = json.loads((rundir / "metrics.json").read_text())
    assert a["n_images"] == 5
    run(["evaluate.py", f"ckpt_path={rundir}/checkpoints/best.ckpt", f"paths.log_dir={tmp_path}/outputs",
         "device=cpu"])
    b = json.loads((_only("outputs/evaluate/runs/*", tmp_path) / "metrics.json").read_text())
    # same images, same model: equal up to float32 batch-composition noise
    assert b["n_images"] == 5 and a["mre"] == pytest.approx(b["mre"], abs=1e-4)


def test_export_module_then_predict_py_and_the_console_script_on_the_onnx_model(tmp_path, tiny_run):
    onnx_path = tmp_path / "model.onnx"
    proc = run(["-m", "landmark_exp.export", f"ckpt_path={tiny_run['ckpt']}", f"output={onnx_path}",
                f"paths.log_dir={tmp_path}/outputs"])
    assert onnx_path.is_file() and "ONNX Runtime vs PyTorch on CPU" in proc.stdout
    folder = tiny_run["root"] / "RawImage" / "Test1Data"
    run(["predict.py", f"ckpt_path={onnx_path}", f"input={folder}", f"output_dir={tmp_path}/py", "device=cpu"])
    # what the `landmark-predict` console script runs, from another working directory (this checkout importable,
    # as after `pip install -e .`)
    run(["-c", "from landmark_exp.cli import predict; predict()", f"ckpt_path={tiny_run['ckpt']}",
         f"input={folder}/*.png", f"output_dir={tmp_path}/cli", f"paths.log_dir={tmp_path}/outputs"], cwd=tmp_path,
        env={"PYTHONPATH": str(ROOT)})
    a = pd.read_csv(tmp_path / "py" / "predictions.csv")
    b = pd.read_csv(tmp_path / "cli" / "predictions.csv")
    assert len(a) == len(b) == 4 * 19
    assert (a[["x_px", "y_px"]] - b[["x_px", "y_px"]]).abs().to_numpy().max() < 1e-2  # ONNX vs checkpoint
    assert (tmp_path / "py" / "011_overlay.jpg").is_file() and (tmp_path / "cli" / "summary.json").is_file()

"""Sweeps survive failing jobs; joblib and Optuna run real tiny jobs; the SLURM launcher config composes."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pandas as pd
import pytest
import yaml
from conftest import ROOT, TINY, write_isbi_fixture

from landmark_exp.registry import PLUGINS

pytestmark = pytest.mark.slow


def _sweep(tmp_path: Path, *args: str, multirun: bool = True, timeout: int = 400) -> tuple[subprocess.CompletedProcess, Path]:
    root = write_isbi_fixture(tmp_path / "isbi")
    env = {**os.environ, "PYTHONPATH": str(Path(__file__).parent), PLUGINS: "faults"}  # faults.py, registered
    cmd = [sys.executable, "train.py", *(["-m"] if multirun else []), "data=isbi2015", f"data.source.root={root}", f"paths.log_dir={tmp_path}/outputs",
           f"paths.cache_dir={tmp_path}/cache", *TINY, "logger=none", "callbacks.progress_bar=null",
           f"hydra.sweep.dir={tmp_path}/sweep", *args]
    return subprocess.run(cmd, cwd=ROOT, env=env, capture_output=True, text=True, timeout=timeout), tmp_path / "sweep"


def _table(sweep: Path) -> pd.DataFrame:
    return pd.read_csv(sweep / "sweep_summary.csv").set_index("job")


def test_failing_jobs_do_not_stop_the_sweep_and_are_listed_with_their_error(tmp_path):
    # bad override value (negative learning rate), simulated CUDA out-of-memory, and one good job, run in this order
    proc, sweep = _sweep(tmp_path, "loss._target_=faults.OutOfMemoryLoss,landmark_exp.losses.DiceLoss",
                         "optimizer.lr=-1,0.001")
    assert proc.returncode == 1, proc.stdout[-3000:] + proc.stderr[-3000:]
    table = _table(sweep)
    assert list(table["status"]) == ["failed", "failed", "failed", "done"]
    assert table.loc[0, "error"].endswith("optimizer: its config does not build (ValueError: Invalid learning rate: -1)")
    assert table.loc[1, "error"].startswith("OutOfMemoryError: CUDA out of memory") and "(simulated)" in table.loc[1, "error"]
    assert table.loc[3, "mre"] > 0 and table.loc[3, "best_val_mre"] > 0
    assert "3 of 4 jobs did not finish" in proc.stdout
    # the same table again, from the run directories alone
    (sweep / "sweep_summary.csv").unlink()
    subprocess.run([sys.executable, "-m", "landmark_exp.sweep", str(sweep)], cwd=ROOT, check=True, capture_output=True)
    pd.testing.assert_frame_equal(_table(sweep), table)


def test_joblib_launcher_runs_jobs_in_parallel_processes_and_records_a_diverged_one(tmp_path):
    proc, sweep = _sweep(tmp_path, "hydra/launcher=local", "hydra.launcher.n_jobs=2",
                         "loss._target_=landmark_exp.losses.DiceLoss,faults.NaNLoss")
    assert proc.returncode == 1, proc.stdout[-3000:] + proc.stderr[-3000:]
    assert "Joblib.Parallel(n_jobs=2" in proc.stdout
    table = _table(sweep)
    assert list(table["status"]) == ["done", "failed"]
    assert table.loc[1, "error"].startswith("NonFiniteError: non-finite loss (nan) at step 0 (epoch 0, batch 0)")
    infos = [json.loads((sweep / str(j) / "run_info.json").read_text()) for j in (0, 1)]
    assert infos[1]["job_command"].startswith("python train.py") and "faults.NaNLoss" in infos[1]["job_command"]


def test_optuna_search_minimises_the_validation_mre_the_jobs_return(tmp_path):
    proc, sweep = _sweep(tmp_path, "hparams_search=val_mre_optuna", "hydra.sweeper.n_trials=2",
                         "hydra.sweeper.sampler.n_startup_trials=2",
                         multirun=False)  # the config sets hydra.mode=MULTIRUN
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    table = _table(sweep)
    assert len(table) == 2 and (table["status"] == "done").all()
    assert table["overrides"].str.contains("optimizer.lr=").all() and table["overrides"].str.contains("heatmap.sigma=").all()
    best = yaml.safe_load((sweep / "optimization_results.yaml").read_text())
    assert best["best_value"] == pytest.approx(table["best_val_mre"].min(), rel=1e-5)
    assert set(best["best_params"]) == {"optimizer.lr", "optimizer.weight_decay", "heatmap.sigma"}


def test_slurm_launcher_config_composes_for_submitit(tmp_path):
    from hydra import compose, initialize_config_dir
    from hydra.core.global_hydra import GlobalHydra

    GlobalHydra.instance().clear()
    with initialize_config_dir(str(ROOT / "landmark_exp" / "conf"), version_base="1.3"):
        cfg = compose("train", ["hydra/launcher=slurm", "hydra.launcher.partition=gpu"], return_hydra_config=True)
    GlobalHydra.instance().clear()
    launcher = cfg.hydra.launcher
    assert launcher._target_.endswith("SlurmLauncher") and launcher.partition == "gpu" and launcher.gpus_per_node == 1


def test_a_job_without_a_test_split_is_listed_done_with_its_validation_mre(tmp_path, isbi_root):
    from conftest import compose

    from landmark_exp.reports import collect_sweep
    from landmark_exp.training import train

    job = tmp_path / "sweep" / "0"
    (job / ".hydra").mkdir(parents=True)
    (job / ".hydra" / "overrides.yaml").write_text("- test=false\n")
    result = train(compose("train", ["data=isbi2015", f"data.source.root={isbi_root}", f"paths.cache_dir={tmp_path}/cache",
                                     *TINY, "logger=none", "test=false"], job))
    row = collect_sweep(tmp_path / "sweep").iloc[0]
    assert row["status"] == "done" and row["best_val_mre"] == pytest.approx(result["val_mre"]) and result["val_mre"] > 0


def test_sigterm_stops_the_whole_sweep_not_just_the_running_job(tmp_path):
    """kill / a scheduler's preemption is a stop request: the next job must not start (exit status 143)."""
    root = write_isbi_fixture(tmp_path / "isbi")
    marker = tmp_path / "paused"
    env = {**os.environ, "PYTHONPATH": str(Path(__file__).parent), PLUGINS: "faults"}  # faults.py, registered
    cmd = [sys.executable, "train.py", "-m", "data=isbi2015", f"data.source.root={root}", f"paths.log_dir={tmp_path}/outputs",
           f"paths.cache_dir={tmp_path}/cache", *TINY, "logger=none", "callbacks.progress_bar=null",
           f"hydra.sweep.dir={tmp_path}/sweep", "optimizer.lr=0.001,0.002", "+callbacks.pause._target_=faults.PauseMidEpoch",
           "+callbacks.pause.epoch=0", "+callbacks.pause.batch=0", "+callbacks.pause.seconds=3",
           f"+callbacks.pause.marker={marker}"]
    proc = subprocess.Popen(cmd, cwd=ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    try:
        deadline = time.monotonic() + 240
        while not marker.exists() and proc.poll() is None and time.monotonic() < deadline:
            time.sleep(0.05)
        assert marker.exists(), "the first job never reached its pause"
        os.kill(proc.pid, signal.SIGTERM)
        out, _ = proc.communicate(timeout=120)
    finally:
        if proc.poll() is None:
            proc.kill()
    assert proc.returncode == 143, out[-3000:]
    assert "interrupted by SIGTERM" in out
    assert "SIGTERM" in (tmp_path / "sweep" / "0" / "error.txt").read_text()
    assert not (tmp_path / "sweep" / "1").exists()

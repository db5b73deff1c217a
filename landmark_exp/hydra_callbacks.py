"""Hydra callbacks: the sweep table (and, for K-fold sweeps, the pooled cross-validation) at the end of a multirun."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from hydra.experimental.callback import Callback
from omegaconf import DictConfig


class SweepSummary(Callback):
    """Writes <sweep dir>/sweep_summary.csv (`python -m landmark_exp.sweep <sweep dir>` rebuilds it) and
    prints it when a multirun ends; a sweep over `data.fold` is also pooled (`python -m landmark_exp.crossval
    <sweep dir>`). Failed jobs recorded their error themselves (error.txt) and let the sweep go on: here they
    are counted, and the sweep exits with status 1 if any failed."""

    def on_multirun_end(self, config: DictConfig, **kwargs: Any) -> None:
        from landmark_exp.crossval import crossvalidate
        from landmark_exp.data.records import DataError
        from landmark_exp.fold_runs import find_runs
        from landmark_exp.pictures import write_sweep_plot
        from landmark_exp.reports import console, write_sweep_summary

        frame = write_sweep_summary(config.hydra.sweep.dir)
        write_sweep_plot(config.hydra.sweep.dir, frame)  # validation MRE against epochs, one line per job
        try:  # a problem with the fold runs is said, and does not undo the sweep
            if runs := find_runs([Path(config.hydra.sweep.dir)]):  # read once: every fold's predictions.csv
                crossvalidate([Path(config.hydra.sweep.dir)], runs=runs)
        except DataError as e:
            console.print(f"[bold red]cross-validation not pooled:[/] {e}", soft_wrap=True)
        bad = frame[frame["status"] != "done"] if not frame.empty else frame
        if not bad.empty:
            console.print(f"[bold red]{len(bad)} of {len(frame)} jobs did not finish:[/] "
                          + ", ".join(f"{r.job} ({r.status})" for r in bad.itertuples()), soft_wrap=True)
            raise SystemExit(1)

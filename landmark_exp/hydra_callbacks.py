"""Hydra callbacks: the sweep table (and, for K-fold sweeps, the pooled cross-validation) at the end of a multirun."""

from __future__ import annotations

from typing import Any

from hydra.experimental.callback import Callback
from omegaconf import DictConfig


class SweepSummary(Callback):
    """Writes <sweep dir>/sweep_summary.csv and prints it when a multirun ends.

    Jobs that failed were recorded by their own process (error.txt) and let the sweep go on;
    here they are counted, and the sweep exits with status 1 if any failed. Rebuild the
    table at any time with `python -m landmark_exp.sweep <sweep dir>`. A sweep over `data.fold` is
    also pooled into one out-of-fold score (`python -m landmark_exp.crossval <sweep dir>`).
    """

    def on_multirun_end(self, config: DictConfig, **kwargs: Any) -> None:
        from landmark_exp.reports import console, write_sweep_summary

        frame = write_sweep_summary(config.hydra.sweep.dir)
        from landmark_exp.pictures import write_sweep_plot

        write_sweep_plot(config.hydra.sweep.dir, frame)  # validation MRE against epochs, one line per job
        _crossvalidate(config.hydra.sweep.dir)
        bad = frame[frame["status"] != "done"] if not frame.empty else frame
        if not bad.empty:
            console.print(f"[bold red]{len(bad)} of {len(frame)} jobs did not finish:[/] "
                          + ", ".join(f"{r.job} ({r.status})" for r in bad.itertuples()), soft_wrap=True)
            raise SystemExit(1)


def _crossvalidate(sweep_dir: str) -> None:
    """Pool the sweep's fold runs, if it has any; a problem with them is said, and does not undo the sweep."""
    from pathlib import Path

    from landmark_exp.crossval import crossvalidate
    from landmark_exp.data.records import DataError
    from landmark_exp.fold_runs import find_runs
    from landmark_exp.reports import console

    try:
        runs = find_runs([Path(sweep_dir)])
        if runs:  # read once: every fold's predictions.csv
            crossvalidate([Path(sweep_dir)], runs=runs)
    except DataError as e:
        console.print(f"[bold red]cross-validation not pooled:[/] {e}", soft_wrap=True)

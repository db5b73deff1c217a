"""Hydra callbacks: the sweep table at the end of a multirun."""

from __future__ import annotations

from typing import Any

from hydra.experimental.callback import Callback
from omegaconf import DictConfig


class SweepSummary(Callback):
    """Writes <sweep dir>/sweep_summary.csv and prints it when a multirun ends.

    Jobs that failed were recorded by their own process (error.txt) and let the sweep go on;
    here they are counted, and the sweep exits with status 1 if any failed. Rebuild the
    table at any time with `python -m landmark_exp.sweep <sweep dir>`.
    """

    def on_multirun_end(self, config: DictConfig, **kwargs: Any) -> None:
        from landmark_exp.reports import console, write_sweep_summary

        frame = write_sweep_summary(config.hydra.sweep.dir)
        bad = frame[frame["status"] != "done"] if not frame.empty else frame
        if not bad.empty:
            console.print(f"[bold red]{len(bad)} of {len(frame)} jobs did not finish:[/] "
                          + ", ".join(f"{r.job} ({r.status})" for r in bad.itertuples()), soft_wrap=True)
            raise SystemExit(1)

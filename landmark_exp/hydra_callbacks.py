"""Hydra callbacks: the sweep table at the end of a multirun."""

from __future__ import annotations

from typing import Any

from hydra.experimental.callback import Callback
from omegaconf import DictConfig


class SweepSummary(Callback):
    """Writes <sweep dir>/sweep_summary.csv and prints it when a multirun ends.

    Rebuild it at any time with `python -m landmark_exp.sweep <sweep dir>`.
    """

    def on_multirun_end(self, config: DictConfig, **kwargs: Any) -> None:
        from landmark_exp.reports import write_sweep_summary

        write_sweep_summary(config.hydra.sweep.dir)

"""Console scripts (`landmark-train`, `landmark-evaluate`, `landmark-predict`, ...; pyproject.toml lists
them): each composes the package's Hydra configs as the top-level scripts do (`landmark-predict ...` ==
`python predict.py ...`); outputs go under the current directory."""

from __future__ import annotations

import sys
from collections.abc import Callable
from importlib import import_module

from omegaconf import DictConfig

from landmark_exp.jobs import CONF_DIR, run_command


def train() -> None:
    from landmark_exp.resume import resume_argv
    from landmark_exp.training import train as fit

    def job(cfg: DictConfig) -> float | None:
        return fit(cfg).get("val_mre")  # as train.py: the objective of hparams_search sweeps

    sys.argv = resume_argv(sys.argv, CONF_DIR, "train")
    run_command("train", job)


def _command(config_name: str, module: str, job: str) -> Callable[[], None]:
    """A console script running `module.job` on conf/<config_name>.yaml (imported only when it runs)."""

    def main() -> None:
        run_command(config_name, getattr(import_module(f"landmark_exp.{module}"), job))

    return main


evaluate = _command("evaluate", "evaluation", "evaluate")
predict = _command("predict", "predict", "predict")
export = _command("export", "export", "export")
detector = _command("detector", "detector", "build")
adapt = _command("adapt", "adapt", "adapt")
datacheck = _command("datacheck", "datacheck", "datacheck")

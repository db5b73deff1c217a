"""Console scripts (`landmark-train`, `landmark-evaluate`, `landmark-predict`, `landmark-export`, `landmark-detector`,
`landmark-adapt`, `landmark-datacheck`).

Each composes the package's Hydra configs (landmark_exp/conf, installed with it) exactly as the top-level
scripts do (`python predict.py ...` == `landmark-predict ...`); outputs go under the current directory.
"""

from __future__ import annotations

import sys

from omegaconf import DictConfig

from landmark_exp.jobs import CONF_DIR, run_command


def train() -> None:
    from landmark_exp.resume import resume_argv
    from landmark_exp.training import train as fit

    def job(cfg: DictConfig) -> float | None:
        return fit(cfg).get("val_mre")  # as train.py: the objective of hparams_search sweeps

    sys.argv = resume_argv(sys.argv, CONF_DIR, "train")
    run_command("train", job)


def evaluate() -> None:
    from landmark_exp.evaluation import evaluate as job

    run_command("evaluate", job)


def predict() -> None:
    from landmark_exp.predict import predict as job

    run_command("predict", job)


def export() -> None:
    from landmark_exp.export import export as job

    run_command("export", job)


def detector() -> None:
    from landmark_exp.detector import build as job

    run_command("detector", job)


def adapt() -> None:
    from landmark_exp.adapt import adapt as job

    run_command("adapt", job)


def datacheck() -> None:
    from landmark_exp.datacheck import datacheck as job

    run_command("datacheck", job)

"""Millimetre report of a checkpoint: python evaluate.py ckpt_path=<run>/checkpoints/best.ckpt [data=...] [split=test]"""

import os
import sys
from pathlib import Path

import hydra
from omegaconf import DictConfig

os.environ.setdefault("LANDMARK_EXP_ROOT", str(Path(__file__).resolve().parent))


@hydra.main(version_base="1.3", config_path="landmark_exp/conf", config_name="evaluate")
def main(cfg: DictConfig) -> float | None:
    from landmark_exp.evaluation import evaluate

    return evaluate(cfg).get("mre")


if __name__ == "__main__":
    if any(a in ("--help", "-h") for a in sys.argv[1:]):  # this command's own options (Hydra's: --hydra-help)
        from landmark_exp.jobs import command_help

        sys.exit(print(command_help("evaluate")))
    main()

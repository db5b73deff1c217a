"""Train a landmark detector: python train.py [experiment=...] [group=option ...] [key=value ...]"""

import os
from pathlib import Path

import hydra
from omegaconf import DictConfig

os.environ.setdefault("LANDMARK_EXP_ROOT", str(Path(__file__).resolve().parent))


@hydra.main(version_base="1.3", config_path="conf", config_name="train")
def main(cfg: DictConfig) -> float | None:
    from landmark_exp.run import train

    return train(cfg).get("mre")


if __name__ == "__main__":
    main()

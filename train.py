"""Train a landmark detector: python train.py [experiment=...] [group=option ...] [key=value ...]

Continue an interrupted run: python train.py resume=latest | resume=<run dir> (see landmark_exp/resume.py)
"""

import os
import sys
from pathlib import Path

import hydra
from omegaconf import DictConfig

HERE = Path(__file__).resolve().parent
os.environ.setdefault("LANDMARK_EXP_ROOT", str(HERE))


@hydra.main(version_base="1.3", config_path="landmark_exp/conf", config_name="train")
def main(cfg: DictConfig) -> float | None:
    """Returns the best validation MRE: the objective of hyper-parameter sweeps (hparams_search=...)."""
    from landmark_exp.training import train

    return train(cfg).get("val_mre")


if __name__ == "__main__":
    if any(a in ("--help", "-h") for a in sys.argv[1:]):  # this command's own options (Hydra's: --hydra-help)
        from landmark_exp.jobs import command_help

        sys.exit(print(command_help("train")))
    from landmark_exp.resume import resume_argv

    sys.argv = resume_argv(sys.argv, HERE / "landmark_exp" / "conf", "train")
    main()

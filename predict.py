"""Landmarks, measurements and overlays for new images: python predict.py ckpt_path=<.ckpt | .onnx> input=<image | folder | glob>"""

import os
import sys
from pathlib import Path

import hydra
from omegaconf import DictConfig

os.environ.setdefault("LANDMARK_EXP_ROOT", str(Path(__file__).resolve().parent))


@hydra.main(version_base="1.3", config_path="landmark_exp/conf", config_name="predict")
def main(cfg: DictConfig) -> int:
    from landmark_exp.predict import predict

    return predict(cfg)["n_images"]


if __name__ == "__main__":
    if any(a in ("--help", "-h") for a in sys.argv[1:]):  # this command's own options (Hydra's: --hydra-help)
        from landmark_exp.jobs import command_help

        sys.exit(print(command_help("predict")))
    main()

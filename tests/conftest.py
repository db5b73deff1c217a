"""Shared fixtures: tiny datasets written in tmp_path, and the real configs composed for tests."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

ROOT = Path(__file__).resolve().parents[1]
os.environ.setdefault("LANDMARK_EXP_ROOT", str(ROOT))
REAL_DATA = ROOT.parent / "shared" / "data"


def write_isbi_fixture(root: Path, n_train: int = 10, n_test1: int = 4, size: tuple[int, int] = (80, 64),
                       k: int = 19, seed: int = 0, ext: str = ".png") -> Path:
    """A small ISBI-2015-layout dataset (height, width = size) with a bright dot at each landmark."""
    rng = np.random.default_rng(seed)
    h, w = size
    base = np.stack([rng.uniform(6, w - 7, k), rng.uniform(6, h - 7, k)], axis=1)
    yy, xx = np.mgrid[0:h, 0:w]
    for split, ids in (("TrainingData", range(1, n_train + 1)), ("Test1Data", range(n_train + 1, n_train + n_test1 + 1))):
        (root / "RawImage" / split).mkdir(parents=True, exist_ok=True)
        for i in ids:
            pts = np.clip(base + rng.normal(0, 2.0, base.shape), 1, [w - 2, h - 2]).round()
            img = np.full((h, w), 20.0)
            for x, y in pts:
                img += 200 * np.exp(-((xx - x) ** 2 + (yy - y) ** 2) / 4.0)
            Image.fromarray(np.clip(img, 0, 255).astype(np.uint8)).save(root / "RawImage" / split / f"{i:03d}{ext}")
            for doctor, off in (("400_senior", 0.0), ("400_junior", 1.0)):
                d = root / "AnnotationsByMD" / doctor
                d.mkdir(parents=True, exist_ok=True)
                q = np.clip(pts + off, 0, [w - 1, h - 1])
                (d / f"{i:03d}.txt").write_text("".join(f"{int(x)},{int(y)}\n" for x, y in q))
    return root


@pytest.fixture
def isbi_root(tmp_path: Path) -> Path:
    return write_isbi_fixture(tmp_path / "isbi")


def compose(config_name: str, overrides: list[str], output_dir: Path):
    """The real Hydra config, composed as the entry point would, with the run directory in tmp_path."""
    from hydra import compose as hydra_compose
    from hydra import initialize_config_dir
    from hydra.core.global_hydra import GlobalHydra
    from omegaconf import open_dict

    GlobalHydra.instance().clear()
    with initialize_config_dir(str(ROOT / "landmark_exp" / "conf"), version_base="1.3"):
        cfg = hydra_compose(config_name, overrides=overrides, return_hydra_config=False)
    with open_dict(cfg):
        cfg.paths.output_dir = str(output_dir)
    GlobalHydra.instance().clear()
    return cfg


TINY = [
    "model.widths=[4,8,8,8]", "model.bottleneck=8", "trainer.max_epochs=1", "trainer.accelerator=cpu",
    "trainer.log_every_n_steps=1", "data.batch_size=4", "data.num_workers=0", "data.input_size=[32,32]",
]
# For a training run whose own test figures evaluate.py's eager runtime must reproduce to the bit: on AVX-512 CPUs
# train.py tests in NHWC by default (performance.channels_last_default), which rounds like the tuned runtime.
NCHW = "callbacks.performance.channels_last=false"


def write_dicom(path: Path, pixels: np.ndarray, photometric: str = "MONOCHROME2", bits_stored: int = 16,
                pixel_spacing: tuple[float, float] | None = None, imager_spacing: tuple[float, float] | None = None) -> Path:
    """A minimal single-frame DX DICOM file (explicit VR little endian); spacings as DICOM stores them: (row, column)."""
    from pydicom.dataset import Dataset, FileMetaDataset
    from pydicom.uid import ExplicitVRLittleEndian, SecondaryCaptureImageStorage, generate_uid

    meta = FileMetaDataset()
    meta.MediaStorageSOPClassUID = SecondaryCaptureImageStorage
    meta.MediaStorageSOPInstanceUID = generate_uid()
    meta.TransferSyntaxUID = ExplicitVRLittleEndian
    ds = Dataset()
    ds.file_meta = meta
    ds.SOPClassUID, ds.SOPInstanceUID, ds.Modality = meta.MediaStorageSOPClassUID, meta.MediaStorageSOPInstanceUID, "DX"
    ds.set_pixel_data(pixels, photometric_interpretation=photometric, bits_stored=bits_stored)
    if pixel_spacing is not None:
        ds.PixelSpacing = list(pixel_spacing)
    if imager_spacing is not None:
        ds.ImagerPixelSpacing = list(imager_spacing)
    path.parent.mkdir(parents=True, exist_ok=True)
    ds.save_as(path, enforce_file_format=True)
    return path


@pytest.fixture(scope="session")
def tiny_run(tmp_path_factory) -> dict[str, Path]:
    """One tiny model trained once per test session on the ISBI-layout fixture: {"ckpt", "root", "dir"}."""
    from landmark_exp.training import train

    tmp = tmp_path_factory.mktemp("tiny_run")
    root = write_isbi_fixture(tmp / "isbi")
    train(compose("train", ["data=isbi2015", f"data.source.root={root}", f"paths.cache_dir={tmp}/cache", *TINY,
                            "logger=none"], tmp / "run"))
    return {"ckpt": tmp / "run" / "checkpoints" / "best.ckpt", "root": root, "dir": tmp}


@pytest.fixture(scope="session")
def tiny_refine(tiny_run) -> Path:
    """A second-stage (patch) model for tiny_run's data, trained once per session: its best.ckpt."""
    from landmark_exp.training import train

    tmp = tiny_run["dir"]
    train(compose("train", ["data=isbi2015", f"data.source.root={tiny_run['root']}", f"paths.cache_dir={tmp}/cache", *TINY,
                            "logger=none", "data.input_size=[80,64]", "+data.patch.size=[16,16]", "+data.patch.jitter=3",
                            "trainer.max_epochs=2"], tmp / "fine"))
    return tmp / "fine" / "checkpoints" / "best.ckpt"


@pytest.fixture(scope="session")
def tiny_context_refine(tiny_run) -> Path:
    """tiny_refine with a context channel (data.patch.context=2: each patch also sees its 2x wider surroundings)."""
    from landmark_exp.training import train

    tmp = tiny_run["dir"]
    train(compose("train", ["data=isbi2015", f"data.source.root={tiny_run['root']}", f"paths.cache_dir={tmp}/cache", *TINY,
                            "logger=none", "data.input_size=[80,64]", "+data.patch.size=[16,16]", "+data.patch.jitter=3",
                            "+data.patch.context=2", "trainer.max_epochs=2"], tmp / "fine_context"))
    return tmp / "fine_context" / "checkpoints" / "best.ckpt"

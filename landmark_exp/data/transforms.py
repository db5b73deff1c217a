"""A split's samples (the batch keys are listed in `datamodule`) and their training augmentation: albumentations
transforms applied to image and landmarks together, in model-input pixels, after the cached resize.

Landmarks that leave the image are kept (never clipped) and flagged invisible, so the loss masks them.
Left-right flips are not offered: they mirror the face and swap no landmark pairs in a lateral cephalogram,
so they teach the model a face it never sees.
"""

from __future__ import annotations

import random
from collections.abc import Mapping, Sequence

import albumentations as A
import numpy as np
import torch
from torch.utils.data import Dataset

from landmark_exp.data.geometry import Geometry, to_model
from landmark_exp.data.records import Record


class Augmenter:
    """Wraps a list of albumentations transforms (built by Hydra from `data.augment`) into one keypoint pipeline."""

    def __init__(self, transforms: Sequence[A.BasicTransform] | Mapping[str, A.BasicTransform], seed: int | None = None) -> None:
        if isinstance(transforms, Mapping):
            transforms = [t for t in transforms.values() if t is not None]
        for t in transforms:
            if isinstance(t, A.HorizontalFlip | A.VerticalFlip | A.Transpose | A.D4):
                raise ValueError(
                    f"{type(t).__name__} mirrors the face and is not landmark-safe for cephalograms; remove it"
                )
        self.pipeline = A.Compose(
            list(transforms),
            keypoint_params=A.KeypointParams(format="xy", remove_invisible=False),
            seed=seed,
        )

    def reseed(self, *key: int) -> None:
        """Make the next call's random draws a function of `key` alone (e.g. seed, epoch, sample).

        All transforms then draw in turn from one stream (albumentations' `seed=` instead gives
        each transform its own copy of the same stream, so their draws are correlated).
        """
        seq = np.random.SeedSequence([int(k) % 2**64 for k in key])
        self.pipeline.set_random_state(np.random.default_rng(seq), random.Random(int(seq.generate_state(1)[0])))

    def __call__(self, image: np.ndarray, keypoints: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        out = self.pipeline(image=image, keypoints=keypoints)
        return out["image"], np.asarray(out["keypoints"], dtype=np.float64).reshape(-1, 2)[:, :2]


class LandmarkDataset(Dataset):
    """A split with its images already decoded and resized (see `ImageCache`).

    The randomness of sample i in epoch e is a function of (seed, e, i) alone: the same sample comes out whatever
    the number of DataLoader workers or which of them loads it, and exactly again when a run resumes at epoch e.
    The epoch lives in shared memory, so workers (persistent ones too) see `set_epoch`, which
    `checkpoints.TrainingState` calls.
    """

    def __init__(self, records: list[Record], images: list[np.ndarray], geometries: list[Geometry],
                 augment: Augmenter | None = None, seed: int = 0) -> None:
        self.records, self.images, self.geometries, self.augment = records, images, geometries, augment
        self.seed = int(seed)
        self._epoch = torch.zeros(1, dtype=torch.int64).share_memory_()

    def set_epoch(self, epoch: int) -> None:
        self._epoch[0] = int(epoch)

    def sample_key(self, i: int) -> tuple[int, int, int]:
        return self.seed % 2**64, int(self._epoch[0]), int(i)

    def __len__(self) -> int:
        return len(self.records)

    def __getitem__(self, i: int) -> dict[str, torch.Tensor]:
        geom = self.geometries[i].as_array()
        image = self.images[i].astype(np.float32)
        keypoints = to_model(self.records[i].landmarks, geom)
        if self.augment is not None:
            self.augment.reseed(*self.sample_key(i))
            image, keypoints = self.augment(image, keypoints)
        return self.sample(i, np.ascontiguousarray(image)[None], keypoints, visible_mask(keypoints, image.shape[:2]),
                           geom)

    def sample(self, i: int, image: np.ndarray, keypoints: np.ndarray, visible: np.ndarray, geometry: np.ndarray
               ) -> dict[str, torch.Tensor]:
        """Sample i's batch entry from the model input, keypoints, visibility and geometry made of it."""
        rec = self.records[i]
        return {
            "image": torch.from_numpy(image),
            "keypoints": torch.from_numpy(keypoints.astype(np.float32)),
            "visible": torch.from_numpy(visible),
            "landmarks": torch.from_numpy(rec.landmarks),
            "geometry": torch.from_numpy(geometry),
            "spacing": torch.tensor(rec.spacing, dtype=torch.float64),
            "index": torch.tensor(i, dtype=torch.int64),
        }


def visible_mask(keypoints: np.ndarray, size: tuple[int, int]) -> np.ndarray:
    """True where a model-pixel landmark lies on the image (pixel centres 0..W-1, edges at -0.5 and W-0.5)."""
    h, w = size
    x, y = keypoints[:, 0], keypoints[:, 1]
    return (x >= -0.5) & (x < w - 0.5) & (y >= -0.5) & (y < h - 0.5) & np.isfinite(x) & np.isfinite(y)

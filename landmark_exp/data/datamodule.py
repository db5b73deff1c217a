"""Records -> cached, resized images -> batches. Splits, seeds and loaders live here.

Every batch is a dict:
  image      (B, 1, H, W) float32    model input
  keypoints  (B, K, 2)    float32    landmarks in model pixels (after augmentation)
  visible    (B, K)       bool       landmark still on the image after augmentation
  landmarks  (B, K, 2)    float64    ground truth in original pixels (never augmented)
  geometry   (B, 4)       float64    original -> model map (see data/geometry.py)
  spacing    (B, 2)       float64    mm per original pixel (x, y)
  index      (B,)         int64      position in the split (dedupes DDP padding)
"""

from __future__ import annotations

import random
from collections.abc import Mapping, Sequence

import lightning as L
import numpy as np
import torch
from torch.utils.data import DataLoader

from landmark_exp.data.geometry import Geometry, to_model
from landmark_exp.data.images import ImageCache, same_files
from landmark_exp.data.patches import (
    PatchDataset,
    context_channels,
    patch_blend,
    patch_context,
    patch_shifts,
    patch_views,
)
from landmark_exp.data.records import DataError, Record, whole_number
from landmark_exp.data.sources import Source
from landmark_exp.data.transforms import Augmenter, LandmarkDataset


class LandmarkDataModule(L.LightningDataModule):
    """Builds train/val/test from a `Source`.

    Split modes: named splits of the source (`train_splits`, `val_split`, `test_split`), with validation carved
    from training by `val_fraction` when `val_split` is None; or `random_split: [train, val, test]` fractions over
    the pooled `train_splits` (the seed deck's random split); or K-fold cross-validation, `folds: K, fold: i`: the
    shuffled pool dealt into K folds of near-equal size, fold i validates and the others train, so K runs score
    every training image once out of fold (`python -m landmark_exp.crossval`). All are seeded by `seed`.
    """

    def __init__(self, source: Source, input_size: Sequence[int] = (256, 256), letterbox: bool = False,
                 normalize: str = "dtype", train_splits: Sequence[str] = ("train",), val_split: str | None = None,
                 test_split: str | None = "test1", val_fraction: float = 0.15,
                 random_split: Sequence[float] | None = None, seed: int = 42, batch_size: int = 8,
                 eval_batch_size: int | None = None, num_workers: int = 0, cache_dir: str | None = None,
                 augment: Sequence | Mapping | None = None, pin_memory: bool = False, patch: Mapping | None = None,
                 folds: int | None = None, fold: int = 0) -> None:
        super().__init__()
        self.source = source
        self.train_splits = [train_splits] if isinstance(train_splits, str) else list(train_splits)
        self.val_split, self.test_split = val_split, test_split
        self.val_fraction = float(val_fraction)
        self.random_split = list(random_split) if random_split is not None else None
        self.seed = int(seed)
        self.folds, self.fold = (int(folds) if folds is not None else None), int(fold)
        if self.folds is not None:
            if self.folds < 2:
                raise DataError(f"data.folds must be at least 2 (or null for no cross-validation), got {self.folds}")
            if not 0 <= self.fold < self.folds:
                raise DataError(f"data.fold must be in 0..{self.folds - 1} for data.folds={self.folds}, got {self.fold}")
            if self.val_split is not None or self.random_split is not None:
                raise DataError("data.folds carves validation from the training pool: it cannot be combined "
                                 f"with data.val_split ({self.val_split}) or data.random_split ({self.random_split})")
        self.batch_size = whole_number(batch_size, "data.batch_size", 1)
        self.eval_batch_size = whole_number(batch_size if eval_batch_size is None else eval_batch_size, "data.eval_batch_size", 1)
        self.num_workers = whole_number(num_workers, "data.num_workers", 0)
        self.input_size = (whole_number(input_size[0], "data.input_size", 8), whole_number(input_size[1], "data.input_size", 8))
        self.pin_memory = pin_memory
        self.cache = ImageCache(self.input_size, letterbox, normalize, cache_dir)
        # second-stage mode: samples are K patches of `patch.size` cut from the cached image around each
        # landmark (see data/patches.py); `input_size` is then the working resolution they are cut from
        self.patch = dict(patch) if patch else None
        if self.patch is not None:
            size = self.patch.get("size")
            if size is None or len(size) != 2 or min(size) < 8:
                raise DataError(f"data.patch.size must be [height, width] of at least 8 pixels, got {size}")
            self.patch["size"] = (int(size[0]), int(size[1]))
            self.patch["context"] = patch_context(self.patch.get("context"))
            # what a cascade applies with this second stage: a malformed value stops training, not a later evaluation
            patch_shifts(self.patch.get("shifts"))
            patch_views(self.patch.get("views"))
            patch_blend(self.patch.get("blend"))
        self.augment = Augmenter(augment, seed=self.seed) if augment else None
        self.records: dict[str, list[Record]] = {}
        self.datasets: dict[str, LandmarkDataset] = {}

    # -- what the rest of the package asks of the data --------------------------------------------
    @property
    def num_landmarks(self) -> int:
        return self.source.num_landmarks

    @property
    def landmark_names(self) -> list[str]:
        return self.source.landmark_names

    @property
    def model_input_size(self) -> tuple[int, int]:
        """(h, w) of what the network sees: the resized image, or a patch in second-stage mode."""
        return self.patch["size"] if self.patch else self.input_size

    @property
    def input_channels(self) -> int:
        """Channels of the network input: 1, or 2 for a second stage with a context channel (data.patch.context)."""
        return context_channels(self.patch["context"]) if self.patch else 1

    def same_images_as_training(self, split: str) -> list[tuple[str, str]]:
        """(id, training id) for each image of `split` whose file is byte-identical to a training image's: a score
        on that split then includes images the model was trained on (under other annotations)."""
        if split == "train" or split not in self.records or "train" not in self.records:
            return []
        here, train = self.records[split], self.records["train"]
        pairs = same_files([r.image_path for r in here], [r.image_path for r in train])
        return [(here[i].id, train[j].id) for i, j in pairs]

    def mean_shape(self) -> torch.Tensor:
        """Mean training landmark position in model pixels (K, 2): the baseline and the single-channel prior.

        In second-stage mode each landmark sits, before refinement, at its patch's centre: that is the
        decoder's prior and the baseline (so the report shows what refinement bought)."""
        if self.patch:
            h, w = self.patch["size"]
            return torch.tensor([[(w - 1) / 2, (h - 1) / 2]] * self.num_landmarks, dtype=torch.float64)
        ds = self.datasets["train"]
        shapes = [to_model(r.landmarks, g.as_array()) for r, g in zip(ds.records, ds.geometries, strict=True)]
        return torch.from_numpy(np.mean(shapes, axis=0))

    # -- Lightning hooks ----------------------------------------------------------------------------
    def prepare_data(self) -> None:
        self.source.prepare()

    def setup(self, stage: str | None = None) -> None:
        if self.datasets:
            return
        self.source.prepare()  # idempotent; covers use without a Trainer
        for name, records in self.split_records().items():
            records, images, geoms = self._decode(records)
            self.records[name] = records
            augment = self.augment if name == "train" else None
            if self.patch:
                self.datasets[name] = PatchDataset(records, images, geoms, self.patch["size"],
                                                   self.patch.get("jitter", 0.0), augment, random=name == "train",
                                                   seed=self.seed, context=self.patch["context"])
            else:
                self.datasets[name] = LandmarkDataset(records, images, geoms, augment, seed=self.seed)

    def split_records(self) -> dict[str, list[Record]]:
        """Each split's records (files and annotations, no pixels decoded): what evaluate scores a predictor on."""
        if not self.records:
            self.records = self._carve()
        return self.records

    def _carve(self) -> dict[str, list[Record]]:
        pool = [r for s in self.train_splits for r in self.source.load(s)]
        _check_unique(pool)
        rng = random.Random(self.seed)
        if self.random_split is not None:
            fr = np.asarray(self.random_split, dtype=float)
            if len(fr) != 3 or (fr < 0).any() or fr.sum() <= 0:
                raise DataError(f"random_split must be 3 non-negative fractions, got {self.random_split}")
            rng.shuffle(pool)
            n_val = round(len(pool) * fr[1] / fr.sum())
            n_test = round(len(pool) * fr[2] / fr.sum())
            out = {"train": pool[n_val + n_test :], "val": pool[:n_val], "test": pool[n_val : n_val + n_test]}
        else:
            if self.val_split is not None:
                train, val = pool, self.source.load(self.val_split)
            elif self.folds is not None:
                val, train = self._fold_split(pool, rng)
            else:
                rng.shuffle(pool)
                n_val = max(1, round(len(pool) * self.val_fraction))
                val, train = sorted(pool[:n_val], key=_key), sorted(pool[n_val:], key=_key)
            out = {"train": train, "val": val}
            if self.test_split is not None:
                out["test"] = self.source.load(self.test_split)
        for name, recs in out.items():
            if not recs:
                raise DataError(f"split {name!r} is empty (source {getattr(self.source, 'root', self.source)})")
        return out

    def _fold_split(self, pool: list[Record], rng: random.Random) -> tuple[list[Record], list[Record]]:
        """(val, train) for fold `fold` of `folds`: the pool, sorted by id then shuffled by the seed, dealt
        round-robin, so the K folds are disjoint, cover the pool and differ in size by at most one."""
        if self.folds > len(pool):
            raise DataError(f"data.folds={self.folds} is more than the {len(pool)} images of the training pool "
                            f"(splits {self.train_splits})")
        order = sorted(pool, key=_key)
        rng.shuffle(order)
        val = [r for j, r in enumerate(order) if j % self.folds == self.fold]
        train = [r for j, r in enumerate(order) if j % self.folds != self.fold]
        return sorted(val, key=_key), sorted(train, key=_key)

    def _decode(self, records: list[Record]) -> tuple[list[Record], list[np.ndarray], list[Geometry]]:
        """The split's images; one whose pixels cannot be decoded (the source read only its header) stops the
        run, or with on_bad_sample=skip is left out of its split and listed with the source's skipped samples."""
        # landmarks were already checked against the image size by the source (from the file header)
        decoded = self.cache.get_many(records)
        for d in decoded:
            if isinstance(d, DataError):
                self.source.bad_sample(str(d))  # raises unless on_bad_sample=skip
        kept = [(r, d) for r, d in zip(records, decoded, strict=True) if not isinstance(d, DataError)]
        if not kept:
            raise DataError(f"no image of {len(records)} could be decoded (first: {decoded[0]})")
        return [r for r, _ in kept], [img for _, (img, _) in kept], [self.cache.geometry(hw) for _, (_, hw) in kept]

    def dataloader(self, split: str) -> DataLoader:
        if split not in self.datasets:
            raise DataError(f"no {split!r} split in this data configuration (have {sorted(self.datasets)})")
        train = split == "train"
        return DataLoader(self.datasets[split], batch_size=self.batch_size if train else self.eval_batch_size,
                          shuffle=train, drop_last=train and len(self.datasets[split]) > self.batch_size,
                          num_workers=self.num_workers, persistent_workers=self.num_workers > 0,
                          pin_memory=self.pin_memory)

    def train_dataloader(self) -> DataLoader:
        return self.dataloader("train")

    def val_dataloader(self) -> DataLoader:
        return self.dataloader("val")


def _key(r: Record) -> str:
    return r.id


def _check_unique(records: list[Record]) -> None:
    seen: dict[str, Record] = {}
    for r in records:
        if (first := seen.setdefault(r.id, r)) is not r:
            raise DataError(f"{r.image_path}: duplicate image id {r.id!r} (also {first.image_path})")

"""The LightningModule: wires model, heatmap targets, loss, decoding and millimetre metrics.

It is built from plain config dicts (model, loss, optimizer, scheduler, heatmap)
and saves them as hyper-parameters, so a checkpoint alone rebuilds the model
without unpickling code (`load_module`).
"""

from __future__ import annotations

import inspect
import pickle
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import lightning as L
import numpy as np
import torch

from landmark_exp.data.geometry import to_original
from landmark_exp.data.patches import patch_context
from landmark_exp.data.records import CheckpointError, landmark_index
from landmark_exp.heatmap.decoder import Decoding, prior_sigma_pixels
from landmark_exp.heatmap.generator import gaussian_heatmaps, single_channel
from landmark_exp.metrics import THRESHOLDS_MM, LandmarkPredictions, radial_errors_mm, summarize
from landmark_exp.performance import optimizer_options
from landmark_exp.registry import RegistryError, build, check

SCHEDULER_KEYS = ("monitor", "interval", "frequency")


def landmark_sigmas(sigma: float, overrides: dict | None, names: list[str]) -> list[float]:
    """(K,) target sigmas in model pixels: `sigma` for every landmark, except those named (or numbered from 1)
    in `overrides`, e.g. {gonion: 2.0}: a landmark on a weak edge may need a wider target than a sharp one."""
    out = [float(sigma)] * len(names)
    for key, value in (overrides or {}).items():
        v = float(value)
        if not v > 0:
            raise ValueError(f"heatmap.landmark_sigma.{key} must be > 0, got {value}")
        out[landmark_index(key, names, "heatmap.landmark_sigma")] = v
    return out


class LandmarkModule(L.LightningModule):
    def __init__(
        self,
        model: dict,
        loss: dict,
        optimizer: dict,
        scheduler: dict | None = None,
        heatmap: dict | None = None,
        num_landmarks: int = 19,
        landmark_names: list[str] | None = None,
        input_size: list[int] | tuple[int, int] = (256, 256),
        data: dict | None = None,
        log_images_every_n_epochs: int = 5,
        num_log_images: int = 4,
    ) -> None:
        super().__init__()
        self.save_hyperparameters()
        # built from the registry only: a checkpoint's stored config names classes, it never runs code
        self.net = build(model, "model")
        self.loss_fn = build(loss, "loss")
        heatmap = heatmap or {}
        self.sigma = float(heatmap.get("sigma", 2.0))
        self.decode_method = heatmap.get("decoder", "quadratic")
        self.decode_window = int(heatmap.get("window", 2))
        self.num_landmarks = num_landmarks
        self.landmark_names = list(landmark_names or [f"L{i + 1}" for i in range(num_landmarks)])
        # per-landmark target widths: heatmap.sigma for all, but landmark_sigma {name or number: sigma} for some
        self.landmark_sigma = landmark_sigmas(self.sigma, heatmap.get("landmark_sigma"), self.landmark_names)
        # what the target generator takes, built once (not in every training step): a float when all are equal
        self._target_sigma: float | torch.Tensor = (
            self.sigma if len(set(self.landmark_sigma)) == 1 else torch.tensor(self.landmark_sigma))
        self.input_size = (int(input_size[0]), int(input_size[1]))
        # broad shape prior for choosing peaks: configured as a fraction of the input diagonal (None: off)
        self.prior_sigma_px = prior_sigma_pixels(heatmap.get("prior_sigma"), self.input_size)
        out = getattr(self.net, "out_channels", num_landmarks)
        if out not in (num_landmarks, 1):
            raise ValueError(
                f"the model has {out} output channels but the data has {num_landmarks} landmarks "
                "(use out_channels = number of landmarks, or 1 for a single mask)"
            )
        self.single_channel = out == 1 and num_landmarks > 1
        # mean training shape in model pixels: the single-mask decoder's prior and the baseline predictor
        self.register_buffer("mean_shape", torch.zeros(num_landmarks, 2, dtype=torch.float64))
        self.val_predictions = LandmarkPredictions()
        self.test_predictions = LandmarkPredictions()
        self.test_results: dict[str, Any] = {}
        self._log_batch: dict[str, torch.Tensor] | None = None
        self.members: list[str] = []  # the checkpoint(s) it was loaded from; several: an ensemble
        # how each member carved its data splits: (data seed, folds, fold); members that differ trained on
        # each other's validation images
        self.member_splits: list[tuple] = []
        self.decoding()  # a decoding setting that cannot work fails here, not at the first image

    def forward(self, image: torch.Tensor) -> torch.Tensor:
        return self.net(image)

    def targets(self, batch: dict[str, torch.Tensor]) -> tuple[torch.Tensor, torch.Tensor | None]:
        heat = gaussian_heatmaps(batch["keypoints"], self.input_size, self._target_sigma, batch["visible"])
        if self.single_channel:
            return single_channel(heat), None
        return heat, batch["visible"]

    def decoding(self) -> Decoding:
        """How this model's heatmaps become coordinates (also what an exported model carries along)."""
        # an all-zero mean shape means "never set" (a module built outside train.py): no prior then
        prior_sigma = self.prior_sigma_px if bool(self.mean_shape.any()) else None
        return Decoding(self.decode_method, self.decode_window, self.single_channel, self.mean_shape, prior_sigma,
                        max(self.landmark_sigma))

    def predict_coordinates(self, heatmaps: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Model-pixel (B, K, 2) coordinates and (B, K) confidences from the network's output."""
        return self.decoding()(heatmaps)

    def _shared_step(self, batch: dict[str, torch.Tensor]) -> tuple[torch.Tensor, torch.Tensor]:
        flat = _flatten_patches(batch)
        pred = self(flat["image"])
        target, weight = self.targets(flat)
        loss = self.loss_fn(pred, target, weight)
        if batch["image"].ndim == 5:
            # second stage: patch j of an image is read for landmark j only (its centre's landmark)
            b, k = batch["image"].shape[:2]
            j = torch.arange(k, device=pred.device)
            pred = pred.view(b, k, *pred.shape[1:])[:, j, j]
        return pred, loss

    def on_train_epoch_start(self) -> None:
        if self.trainer.optimizers:
            self.log("train/lr", self.trainer.optimizers[0].param_groups[0]["lr"])

    def training_step(self, batch: dict[str, torch.Tensor], batch_idx: int) -> torch.Tensor:
        _, loss = self._shared_step(batch)
        self.log("train/loss", loss, prog_bar=True, on_step=True, on_epoch=True, batch_size=len(batch["image"]))
        return loss

    def _eval_step(self, batch: dict[str, torch.Tensor], metric: LandmarkPredictions, stage: str) -> torch.Tensor:
        pred, loss = self._shared_step(batch)
        self.log(f"{stage}/loss", loss, on_epoch=True, sync_dist=True, batch_size=len(batch["image"]))
        xy, peak = self.predict_coordinates(pred)
        orig = to_original(xy.to(batch["geometry"].dtype), batch["geometry"])
        metric.update(batch["index"], orig, batch["landmarks"], batch["spacing"], batch["geometry"], peak)
        return xy

    def validation_step(self, batch: dict[str, torch.Tensor], batch_idx: int) -> None:
        xy = self._eval_step(batch, self.val_predictions, "val")
        if batch_idx == 0:
            n = self.hparams.num_log_images
            if batch["image"].ndim == 5:  # the first image's first n patches, each with its own landmark
                j = torch.arange(min(n, batch["image"].shape[1]), device=xy.device)
                self._log_batch = {"image": batch["image"][0, j].detach(), "true": batch["keypoints"][0, j, j][:, None],
                                   "pred": xy[0, j][:, None]}
            else:
                self._log_batch = {"image": batch["image"][:n].detach(), "true": batch["keypoints"][:n], "pred": xy[:n]}

    def test_step(self, batch: dict[str, torch.Tensor], batch_idx: int) -> None:
        self._eval_step(batch, self.test_predictions, "test")

    def _summary(self, metric: LandmarkPredictions) -> tuple[dict[str, np.ndarray], dict]:
        res = metric.compute()
        metric.reset()
        if not res:
            return res, {}
        errors = radial_errors_mm(res["pred"], res["true"], res["spacing"])
        res["errors"] = errors
        return res, summarize(errors, self.landmark_names)

    def _log_summary(self, stage: str, summary: dict) -> None:
        keys = ["mre", "median", "sd"] + [f"sdr_{t:g}" for t in THRESHOLDS_MM]
        # already gathered over all processes by the metric: identical on every rank, no further reduction
        for k in keys:
            self.log(f"{stage}/{k}", float(summary[k]), prog_bar=k == "mre", sync_dist=False)

    def on_validation_epoch_end(self) -> None:
        res, summary = self._summary(self.val_predictions)
        if summary:
            self._log_summary("val", summary)
            if res["peak"].shape[-1] > 1:
                from landmark_exp.reports import weakest_peak_ratio

                self.log("val/weakest_peak", weakest_peak_ratio(res["peak"]), sync_dist=False)
        self._log_images()

    def on_test_epoch_end(self) -> None:
        res, summary = self._summary(self.test_predictions)
        if not summary:
            return
        self._log_summary("test", summary)
        baseline = to_original(self.mean_shape.cpu().numpy()[None], res["geometry"])
        res["baseline_errors"] = radial_errors_mm(baseline, res["true"], res["spacing"])
        self.test_results = {**res, "summary": summary, "baseline": summarize(res["baseline_errors"], self.landmark_names),
                             "baseline_name": "patch centres" if res["geometry"].ndim == 3 else "mean-shape baseline"}

    def _log_images(self) -> None:
        every = self.hparams.log_images_every_n_epochs
        if self._log_batch is None or not every or self.current_epoch % every or not self.trainer.is_global_zero:
            return
        from lightning.pytorch.loggers import TensorBoardLogger

        from landmark_exp.reports import draw_overlay

        for logger in self.loggers:
            if isinstance(logger, TensorBoardLogger):
                b = self._log_batch
                for i in range(len(b["image"])):
                    img = draw_overlay(b["image"][i, 0].float().cpu().numpy(), b["true"][i].cpu().numpy(), b["pred"][i].cpu().numpy())
                    logger.experiment.add_image(f"val/overlay_{i}", img, self.current_epoch, dataformats="HWC")

    def configure_optimizers(self):
        opt = build(optimizer_options(self.hparams.optimizer, self.device), "optimizer", params=self.parameters())
        cfg = self.hparams.scheduler
        if not cfg or not cfg.get("_target_"):
            return opt
        cfg = dict(cfg)
        extra = {k: cfg.pop(k) for k in SCHEDULER_KEYS if k in cfg}
        return {"optimizer": opt, "lr_scheduler": {"scheduler": build(cfg, "scheduler", optimizer=opt), **extra}}


def _flatten_patches(batch: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """Second-stage batches hold K patches per image (B, K, C, h, w): the network sees B*K images."""
    if batch["image"].ndim != 5:
        return batch
    return {**batch, **{key: batch[key].flatten(0, 1) for key in ("image", "keypoints", "visible")}}


CheckpointPaths = str | Path | Sequence[str | Path]


def checkpoint_paths(path: CheckpointPaths) -> list[Path]:
    """One checkpoint, or a list of them (an ensemble; `ckpt_path=[a.ckpt,b.ckpt]` on the command line)."""
    paths = [Path(path)] if isinstance(path, str | Path) else [Path(p) for p in path]
    if not paths:
        raise CheckpointError("ckpt_path: an empty list of checkpoints")
    return paths


def _carving(data: dict) -> tuple:
    """How a run carved validation from its training pool: (data seed, folds, fold); no folds: (seed,)."""
    folds = data.get("folds")
    return (data.get("seed"),) if folds is None else (data.get("seed"), folds, data.get("fold", 0))


def load_module(path: CheckpointPaths, map_location: str | torch.device = "cpu", heatmap: dict | None = None,
                tta_shifts: Sequence[Sequence[int]] | None = None) -> LandmarkModule:
    """Rebuild a module from a checkpoint without executing pickled code (torch.load weights_only=True).

    A list of checkpoints is an ensemble: one module whose network averages the members' heatmaps
    (`models.ensemble.MeanOfNets`), decoded as the first member decodes, with the members' mean shape.
    `heatmap` overrides decoding settings (decoder, window, prior_sigma) for this use only, so decoding
    choices can be compared on one trained model. `tta_shifts` ([dy, dx] input pixels each) wraps the
    network in test-time augmentation (`models.ensemble.ShiftedMean`)."""
    paths = checkpoint_paths(path)
    modules = [_load_one(p, map_location, heatmap) for p in paths]
    module = modules[0]
    module.members = [str(p) for p in paths]
    module.member_splits = [_carving(m.hparams.get("data") or {}) for m in modules]
    from landmark_exp.models.ensemble import MeanOfNets, ShiftedMean

    if len(modules) > 1:
        for p, other in zip(paths[1:], modules[1:], strict=True):
            _check_same_kind(module, other, paths[0], p)
        module.net = MeanOfNets([m.net for m in modules]).eval()
        module.mean_shape.copy_(torch.stack([m.mean_shape for m in modules]).mean(0))
    if tta_shifts:
        if (module.hparams.get("data") or {}).get("patch"):
            raise CheckpointError(f"{paths[0]}: test-time shifts are for whole-image models, not a second stage")
        module.net = ShiftedMean(module.net, tta_shifts).eval()
    return module


def _check_same_kind(a: LandmarkModule, b: LandmarkModule, where_a: Path, where_b: Path) -> None:
    """Ensemble members must read the same input and mean the same thing by each output channel."""
    da, db = a.hparams.get("data") or {}, b.hparams.get("data") or {}
    facts = {
        "input size": (list(a.input_size), list(b.input_size)),
        "landmarks": (a.landmark_names, b.landmark_names),
        "single-mask output": (a.single_channel, b.single_channel),
        "heatmap sigma": (a.landmark_sigma, b.landmark_sigma),
        "letterbox": (bool(da.get("letterbox", False)), bool(db.get("letterbox", False))),
        "normalize": (da.get("normalize", "dtype"), db.get("normalize", "dtype")),
        # a second stage: the resolution its patches are cut from and their size (not the training jitter or
        # the test-time shifts, which do not change what an output means; the ensemble applies the first's shifts)
        "patch (second stage)": (_patch_kind(da), _patch_kind(db)),
    }
    for what, (x, y) in facts.items():
        if x != y:
            raise CheckpointError(f"{where_b}: cannot join an ensemble with {where_a}: {what} {y} != {x}")


def _patch_kind(data: dict) -> dict | None:
    patch = data.get("patch")
    if not patch:
        return None
    return {"working size": list(data.get("input_size") or []), "size": list(patch.get("size") or []),
            "context": patch_context(patch.get("context"))}


def _load_one(path: Path, map_location: str | torch.device, heatmap: dict | None) -> LandmarkModule:
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"{path}: checkpoint not found")
    with path.open("rb") as fh:
        magic = fh.read(2)
    if magic not in (b"PK", b"\x80\x02"):  # torch.save writes a zip archive (legacy: a protocol-2 pickle)
        raise CheckpointError(f"{path}: not a PyTorch checkpoint file (neither a zip archive nor a pickle)")
    try:
        ckpt = torch.load(path, map_location=map_location, weights_only=True)
    except pickle.UnpicklingError as e:
        # weights_only refuses any pickled object outside tensors and plain containers: never run its code
        reason = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
        raise CheckpointError(f"{path}: refused to load, it holds more than weights and plain data ({reason})") from None
    except Exception as e:  # torch.load raises many types (struct.error, EOFError, RuntimeError ...) on a bad file
        raise CheckpointError(f"{path}: not a readable PyTorch checkpoint ({type(e).__name__}: {_first_line(e)})") from None
    if not isinstance(ckpt, dict) or not isinstance(ckpt.get("hyper_parameters"), dict) \
            or not isinstance(ckpt.get("state_dict"), dict):
        raise CheckpointError(f"{path}: not a landmark_exp checkpoint (no hyper_parameters/state_dict)")
    hparams = dict(ckpt["hyper_parameters"])
    try:  # every class the stored config names, checked before any of them is built
        check(hparams, "hyper_parameters")
    except RegistryError as e:
        raise CheckpointError(f"{path}: {e}") from None
    unknown = sorted(str(k) for k in hparams if k not in _HPARAMS)
    if unknown:
        raise CheckpointError(f"{path}: hyper_parameters hold unknown keys {unknown}")
    bad = [k for k, v in ckpt["state_dict"].items() if not isinstance(v, torch.Tensor)]
    if bad:
        raise CheckpointError(f"{path}: state_dict entry {bad[0]!r} is not a tensor")
    broken = [k for k, v in ckpt["state_dict"].items() if v.is_floating_point() and not bool(torch.isfinite(v).all())]
    if broken:
        raise CheckpointError(f"{path}: the weights hold NaN or infinite values ({len(broken)} tensor(s), first "
                              f"{broken[0]!r}): the run that wrote it diverged")
    if heatmap:
        hparams["heatmap"] = {**(hparams.get("heatmap") or {}), **heatmap}
    try:
        module = LandmarkModule(**hparams)
    except (RuntimeError, TypeError, ValueError, KeyError) as e:
        raise CheckpointError(f"{path}: its stored config does not describe a valid model ({_first_line(e)})") from None
    try:
        module.load_state_dict(ckpt["state_dict"])
    except (RuntimeError, TypeError, ValueError) as e:
        raise CheckpointError(f"{path}: weights do not fit the model its config describes ({_first_line(e)})") from None
    return module.eval()


_HPARAMS = set(inspect.signature(LandmarkModule.__init__).parameters) - {"self"}


def _first_line(e: BaseException) -> str:
    """The informative line of an exception: load_state_dict's first line is only a header, the reason follows."""
    lines = [ln.strip() for ln in str(e).strip().splitlines() if ln.strip()]
    if len(lines) > 1 and lines[0].startswith("Error(s) in loading state_dict"):
        lines = lines[1:]
    return lines[0][:300] if lines else type(e).__name__


def check_matches_data(module: LandmarkModule, where: str | Path, num_landmarks: int, landmark_names: list[str],
                       input_size: tuple[int, int] | list[int]) -> None:
    """A checkpoint used on data it was not trained for is refused with one line saying what differs."""
    if module.num_landmarks != num_landmarks:
        raise CheckpointError(f"{where}: checkpoint predicts {module.num_landmarks} landmarks, the data has {num_landmarks}")
    if tuple(module.input_size) != tuple(input_size):
        raise CheckpointError(
            f"{where}: checkpoint input size {list(module.input_size)} != data input size {list(input_size)}"
        )
    if list(module.landmark_names) != list(landmark_names):
        i = next(i for i, (a, b) in enumerate(zip(module.landmark_names, landmark_names, strict=True)) if a != b)
        raise CheckpointError(
            f"{where}: landmark names differ from the data's, first at landmark {i + 1}: checkpoint "
            f"{module.landmark_names[i]!r}, data {landmark_names[i]!r}"
        )

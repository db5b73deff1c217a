"""The LightningModule: wires model, heatmap targets, loss, decoding and millimetre metrics. Built from plain
config dicts saved as hyper-parameters, so a checkpoint alone rebuilds it without unpickling code.
"""

from __future__ import annotations

from typing import Any

import lightning as L
import numpy as np
import torch

from landmark_exp.data.geometry import to_original
from landmark_exp.data.records import landmark_index
from landmark_exp.heatmap.decoder import Decoding, prior_sigma_pixels
from landmark_exp.heatmap.generator import gaussian_heatmaps, single_channel
from landmark_exp.metrics import THRESHOLDS_MM, LandmarkPredictions, radial_errors_mm, summarize
from landmark_exp.performance import optimizer_options
from landmark_exp.registry import build

SCHEDULER_KEYS = ("monitor", "interval", "frequency")
FORMAT_KEY = "landmark_exp_format"
# 1: checkpoints written before this key existed; 2: the same contents, the key written (landmark_exp.loading)
CHECKPOINT_VERSION = 2


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
    def __init__(self, model: dict, loss: dict, optimizer: dict, scheduler: dict | None = None,
                 heatmap: dict | None = None, num_landmarks: int = 19,
                 landmark_names: list[str] | None = None,
                 input_size: list[int] | tuple[int, int] = (256, 256), data: dict | None = None,
                 log_images_every_n_epochs: int = 5, num_log_images: int = 4) -> None:
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
        self.landmark_sigma = landmark_sigmas(self.sigma, heatmap.get("landmark_sigma"), self.landmark_names)
        # what the target generator takes, built once (not in every training step): a float when all are equal
        self._target_sigma: float | torch.Tensor = (
            self.sigma if len(set(self.landmark_sigma)) == 1 else torch.tensor(self.landmark_sigma))
        self.input_size = (int(input_size[0]), int(input_size[1]))
        # broad shape prior for choosing peaks: configured as a fraction of the input diagonal (None: off)
        self.prior_sigma_px = prior_sigma_pixels(heatmap.get("prior_sigma"), self.input_size)
        out = getattr(self.net, "out_channels", num_landmarks)
        if out not in (num_landmarks, 1):
            raise ValueError(f"the model has {out} output channels but the data has {num_landmarks} "
                             "landmarks (use out_channels = number of landmarks, or 1 for a single mask)")
        self.single_channel = out == 1 and num_landmarks > 1
        # mean training shape in model pixels: the single-mask decoder's prior and the baseline predictor
        self.register_buffer("mean_shape", torch.zeros(num_landmarks, 2, dtype=torch.float64))
        self.val_predictions = LandmarkPredictions()
        self.test_predictions = LandmarkPredictions()
        self.test_results: dict[str, Any] = {}
        self._log_batch: dict[str, torch.Tensor] | None = None
        self.members: list[str] = []  # the checkpoint(s) it was loaded from; several: an ensemble
        self.member_splits: list[tuple] = []  # how each member carved its data splits (loading._carving)
        self.decoding()  # a decoding setting that cannot work fails here, not at the first image

    def on_save_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        checkpoint[FORMAT_KEY] = CHECKPOINT_VERSION  # loading.checked_checkpoint reads and checks it

    def forward(self, image: torch.Tensor) -> torch.Tensor:
        return self.net(image)

    def targets(self, batch: dict[str, torch.Tensor]) -> tuple[torch.Tensor, torch.Tensor | None]:
        heat = gaussian_heatmaps(batch["keypoints"], self.input_size, self._target_sigma, batch["visible"])
        return (single_channel(heat), None) if self.single_channel else (heat, batch["visible"])

    def decoding(self) -> Decoding:
        """How this model's heatmaps become coordinates (also what an exported model carries along)."""
        # an all-zero mean shape means "never set" (a module built outside train.py): no prior then
        prior_sigma = self.prior_sigma_px if bool(self.mean_shape.any()) else None
        return Decoding(self.decode_method, self.decode_window, self.single_channel, self.mean_shape, prior_sigma,
                        max(self.landmark_sigma))

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
        xy, peak = self.decoding()(pred)  # model pixels
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
        res["errors"] = radial_errors_mm(res["pred"], res["true"], res["spacing"])
        return res, summarize(res["errors"], self.landmark_names)

    def _log_summary(self, stage: str, summary: dict) -> None:
        # already gathered over all processes by the metric: identical on every rank, no further reduction
        for k in ["mre", "median", "sd"] + [f"sdr_{t:g}" for t in THRESHOLDS_MM]:
            self.log(f"{stage}/{k}", float(summary[k]), prog_bar=k == "mre", sync_dist=False)

    def on_validation_epoch_end(self) -> None:
        res, summary = self._summary(self.val_predictions)
        if summary:
            self._log_summary("val", summary)
            if not self.single_channel:  # one map for all landmarks: no landmark has a channel of its own
                from landmark_exp.reports import weakest_peak_ratio

                self.log("val/weakest_peak", weakest_peak_ratio(res["peak"]), sync_dist=False)
        self._log_images()

    def on_test_epoch_end(self) -> None:
        res, summary = self._summary(self.test_predictions)
        if summary:
            self._log_summary("test", summary)
            self.test_results = {**res, "summary": summary}  # training.test_scores makes the Scores of it

    def _log_images(self) -> None:
        every = self.hparams.log_images_every_n_epochs
        if self._log_batch is None or not every or self.current_epoch % every or not self.trainer.is_global_zero:
            return
        from lightning.pytorch.loggers import TensorBoardLogger

        from landmark_exp.pictures import tensorboard_overlay

        for logger in self.loggers:
            if isinstance(logger, TensorBoardLogger):
                b = self._log_batch
                for i in range(len(b["image"])):
                    img = tensorboard_overlay(b["image"][i, 0].float().cpu().numpy(), b["true"][i].cpu().numpy(),
                                              b["pred"][i].cpu().numpy())
                    # stepped like the scalars, so the image of a step sits beside its validation MRE
                    logger.experiment.add_image(f"val/overlay_{i}", img, self.global_step, dataformats="HWC")

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

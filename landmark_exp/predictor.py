"""A trained model applied to decoded images, behind one interface for a checkpoint or an ONNX export.

Both backends (`backends.py`) share everything but the forward pass: the resize (`model_input`), the geometry
inverse and the decoding (carried in an export as metadata), so a checkpoint and its export agree to float
rounding. A second-stage model re-locates landmarks on patches (`Predictor.refine`); `cascade.py` chains them.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field, fields
from pathlib import Path

import numpy as np
import torch

from landmark_exp.data.geometry import Geometry, to_original
from landmark_exp.data.images import model_input
from landmark_exp.data.patches import (
    context_channels,
    cut_patches,
    patch_blend,
    patch_centres,
    patch_context,
    patch_origins,
    patch_shifts,
    patch_views,
    shift_centres,
    view_points,
)
from landmark_exp.data.records import CheckpointError
from landmark_exp.domain import DomainModel, descriptor
from landmark_exp.heatmap.decoder import Decoding, decode
from landmark_exp.heatmap.quality import describe_flags, heatmap_flags
from landmark_exp.module import LandmarkModule
from landmark_exp.reliability import Reliability
from landmark_exp.shape import ShapeModel

ONNX_METADATA_KEY = "landmark_exp"


@dataclass
class ModelInfo:
    """What prediction needs to know besides the weights; an ONNX export stores it as JSON metadata.

    For a second-stage model: `working_size`, the (h, w) the image is resized to before patches of
    `input_size` are cut; the test-time `patch_shifts` ([dy, dx] working pixels), `patch_views`
    ([angle, zoom]) and `patch_blend` (the first estimate's weight) a cascade applies unless told otherwise;
    `patch_context`, the context factor of its second input channel (1: none; data/patches.py:cut_patches)."""

    num_landmarks: int
    landmark_names: list[str]
    input_size: tuple[int, int]
    letterbox: bool = False
    normalize: str = "dtype"
    spacing: tuple[float, float] | None = None  # the training data's mm/px: default for images without their own
    decoding: Decoding = field(default_factory=Decoding)
    source: str = ""  # the checkpoint it came from
    working_size: tuple[int, int] | None = None
    patch_shifts: list[list[float]] | None = None
    patch_views: list[list[float]] | None = None
    patch_blend: float | None = None
    patch_context: int = 1

    @property
    def input_channels(self) -> int:
        return context_channels(self.patch_context)

    @classmethod
    def from_module(cls, module: LandmarkModule, source: str | Path = "") -> ModelInfo:
        data = dict(module.hparams.get("data") or {})
        patch = data.get("patch") or {}
        spacing = (data.get("source") or {}).get("spacing")
        if spacing is not None:
            spacing = (float(spacing), float(spacing)) if np.isscalar(spacing) else tuple(float(s) for s in spacing)
        working = data.get("input_size") if patch else None
        shifts, views = patch.get("shifts"), patch.get("views")
        return cls(num_landmarks=module.num_landmarks, landmark_names=list(module.landmark_names),
                   input_size=tuple(module.input_size), letterbox=bool(data.get("letterbox", False)),
                   normalize=str(data.get("normalize", "dtype")), spacing=spacing, decoding=module.decoding(),
                   source=str(source),
                   working_size=None if working is None else (int(working[0]), int(working[1])),
                   patch_shifts=[list(p) for p in patch_shifts(shifts)] if shifts else None,
                   patch_views=[list(v) for v in patch_views(views)] if views else None,
                   patch_blend=None if patch.get("blend") is None else patch_blend(patch["blend"]),
                   patch_context=patch_context(patch.get("context")))

    def to_dict(self) -> dict:
        """JSON-ready (json.dumps writes the tuples as lists)."""
        return {**{f.name: getattr(self, f.name) for f in fields(self)}, "decoding": self.decoding.to_dict()}

    @classmethod
    def from_dict(cls, d: dict) -> ModelInfo:
        def pair(key: str, kind: type) -> tuple | None:
            return None if d.get(key) is None else (kind(d[key][0]), kind(d[key][1]))

        return cls(num_landmarks=int(d["num_landmarks"]), landmark_names=list(d["landmark_names"]),
                   input_size=(int(d["input_size"][0]), int(d["input_size"][1])), letterbox=bool(d.get("letterbox")),
                   normalize=str(d.get("normalize", "dtype")), spacing=pair("spacing", float),
                   decoding=Decoding.from_dict(d.get("decoding") or {}), source=str(d.get("source", "")),
                   working_size=pair("working_size", int), patch_shifts=d.get("patch_shifts"),
                   patch_views=d.get("patch_views"), patch_blend=d.get("patch_blend"),
                   patch_context=patch_context(d.get("patch_context")))


@dataclass
class LandmarkPrediction:
    """One image's result, all in the original image's pixel grid (x = column, y = row)."""

    xy: np.ndarray  # (K, 2) landmarks
    confidence: np.ndarray  # (K,) heatmap value at the peak (1 = a confident sigmoid peak)
    spread: np.ndarray  # (K, 2) heatmap standard deviation around the peak, per axis, in original pixels
    geometry: Geometry
    # (K,) why a landmark cannot be trusted ("flat heatmap", "off the shape of the others", ...; "" when it can)
    flags: list[str] = field(default_factory=list)
    # (K,) each reliability signal (reliability.SIGNALS) measured on this image
    signals: dict[str, np.ndarray] = field(default_factory=dict)
    # (K,) a calibrated detector's reliability score: over 1 the landmark is flagged (None: not calibrated)
    reliability: np.ndarray | None = None

    def assess(self, reliability: Reliability | None) -> None:
        """Score the signals with a calibration and flag (with its reason) every landmark over 1."""
        self.signals.setdefault("peak", 1.0 - np.asarray(self.confidence, dtype=np.float64))
        if reliability is None:
            return
        self.reliability = reliability.score(self.signals)
        reasons = reliability.reasons(self.signals)
        flags = self.flags or [""] * len(self.xy)
        self.flags = [f or r for f, r in zip(flags, reasons or [""] * len(flags), strict=True)]


class Predictor:
    """Images -> landmarks, given `ModelInfo` and a forward pass (B, C, h, w) float32 -> (B, K or 1, h, w) heatmaps."""

    def __init__(self, info: ModelInfo, forward: Callable[[np.ndarray], torch.Tensor], backend: str, device: str) -> None:
        self.info, self._forward, self.backend, self.device = info, forward, backend, device
        self.data: dict | None = None  # the data config it was trained with (checkpoints; not an export)
        self.member_splits: list[tuple] = []  # how each member carved its validation split (loading._carving)
        # second-stage patches per forward pass: few for PyTorch on a CPU (cache-sized activations), else many
        # (ONNX Runtime on a CPU times the same from 38 to 475; a GPU wants large batches)
        self.patch_batch = 64 if str(device).startswith("cpu") and backend.startswith("pytorch") else 1024
        self.shape: ShapeModel | None = None  # a detector's shape model: checks (and repairs) whole-image estimates
        self.repair_z: float | None = None  # shape z over which a placement is searched again near the expected one
        self.reliability: Reliability | None = None  # a detector's calibration (a cascade's lives on the cascade)
        self.domain: DomainModel | None = None  # a detector's training images: is an image unlike all of them?

    def prepare(self, image: np.ndarray) -> tuple[np.ndarray, Geometry]:
        """A decoded image -> the (1, h, w) float32 network input and its original->model map."""
        geom = Geometry.for_resize(image.shape[:2], self.info.input_size, self.info.letterbox)
        return model_input(image, self.info.input_size, self.info.letterbox).astype(np.float32)[None], geom

    def heatmaps(self, batch: np.ndarray) -> torch.Tensor:
        return self._forward(np.ascontiguousarray(batch, dtype=np.float32))

    def patch_heatmaps(self, patches: np.ndarray, k: int) -> torch.Tensor:
        """(N, h, w) heatmaps of N second-stage patches, patch n read for landmark n % k only (its own channel),
        in chunks of `patch_batch`."""
        own = []
        for start in range(0, len(patches), self.patch_batch):
            heat = self.heatmaps(patches[start:start + self.patch_batch])  # (n, K or 1, h, w)
            j = torch.arange(start, start + len(heat))
            own.append(heat[j - start, j % k if heat.shape[1] > 1 else 0])
        return torch.cat(own)

    def predict(self, images: Sequence[np.ndarray],
                prepared: Sequence[tuple[np.ndarray, Geometry]] | None = None) -> list[LandmarkPrediction]:
        """Decoded greyscale images (any sizes) -> one `LandmarkPrediction` each, in one batch.
        `prepared`: their `prepare` results when already made (predict.py resizes in its reader threads)."""
        if self.info.working_size is not None:
            raise CheckpointError(f"{self.info.source}: a second-stage (patch) model needs first estimates: "
                                  "give it as refine_ckpt= next to a first-stage ckpt_path=")
        if not images:
            return []
        prepared = prepared or [self.prepare(im) for im in images]
        heat = self.heatmaps(np.stack([x for x, _ in prepared]))
        xy, peak = self.info.decoding(heat)
        spread = self.info.decoding.spread(heat, xy)
        flags = describe_flags(heatmap_flags(heat, self.info.decoding.sigma, self.info.decoding.single_channel))
        domain = (None if self.domain is None
                  else self.domain.distance(np.stack([descriptor(x) for x, _ in prepared])))
        out = []
        for i, (_, geom) in enumerate(prepared):
            g = geom.as_array()
            pred = LandmarkPrediction(xy=to_original(_numpy(xy[i]), g), confidence=_numpy(peak[i]),
                                      spread=_numpy(spread[i]) / g[None, 0:2], geometry=geom, flags=flags[i])
            if domain is not None:
                pred.signals["domain"] = np.full(len(pred.xy), domain[i])
            if self.shape is not None:
                self._check_shape(pred, heat[i])
            pred.assess(self.reliability)
            out.append(pred)
        return out

    def _check_shape(self, pred: LandmarkPrediction, heat: torch.Tensor) -> None:
        """The shape model's z per landmark (signal "shape"); over `repair_z`, the landmark is searched again on its
        heatmap near where the others put it, and placed there outright when its heatmap has nothing plausible."""
        check = self.shape.check(pred.xy)
        bad = np.flatnonzero(check.z > self.repair_z) if self.repair_z and not self.info.decoding.single_channel else []
        if len(bad):
            g = pred.geometry.as_array()
            for j in bad:
                centre = torch.as_tensor(pred.geometry.to_model(check.expected[j][None]), dtype=torch.float32)
                found, _ = decode(heat[None, j:j + 1], self.info.decoding.method, self.info.decoding.window,
                                  centre, max(3.0 * check.sd[j] * float(np.mean(g[0:2])), 1.0))
                pred.xy[j] = to_original(_numpy(found[0]), g)[0]
            again = self.shape.check(pred.xy)
            for j in bad:
                if again.z[j] > self.repair_z:
                    pred.xy[j] = again.expected[j]
                pred.flags = list(pred.flags or [""] * len(pred.xy))
                pred.flags[j] = pred.flags[j] or "re-placed from the other landmarks"
            check = self.shape.check(pred.xy)
        pred.signals["shape"] = check.z

    def working_input(self, image: np.ndarray) -> tuple[np.ndarray, Geometry]:
        """A second-stage model's view of a decoded image: resized to the working resolution its patches are cut
        from (float32, the values training cached) and its original->working map."""
        working = self.info.working_size
        if working is None:
            raise CheckpointError(f"{self.info.source}: not a second-stage (patch) model; it cannot refine")
        geom = Geometry.for_resize(image.shape[:2], working, self.info.letterbox)
        return model_input(image, working, self.info.letterbox).astype(np.float32), geom

    def refine(self, image: np.ndarray, centres: np.ndarray, shifts: Sequence[Sequence[float]] | None = None,
               views: Sequence[Sequence[float]] | None = None) -> LandmarkPrediction:
        """Second stage on a decoded image: `refine_working` on its `working_input`."""
        return self.refine_working(*self.working_input(image), centres, shifts, views)

    def refine_working(self, resized: np.ndarray, geom: Geometry, centres: np.ndarray,
                       shifts: Sequence[Sequence[float]] | None = None,
                       views: Sequence[Sequence[float]] | None = None, subpixel: bool = False) -> LandmarkPrediction:
        """Second stage: re-locate landmark j on a patch cut around centres[j] (original pixels), all K at once, from
        the image at the working resolution (`working_input`). One patch per shift ([dy, dx] working pixels)
        and view ([angle, zoom]) around each centre (None: the model's own, else one patch as cut); the
        estimates are the mean over all of them. `subpixel`: each patch centred exactly (read bilinearly), not
        on the nearest working pixel."""
        size = self.info.input_size
        g = geom.as_array()
        shifts = patch_shifts(shifts, self.info.patch_shifts)
        views = patch_views(views, self.info.patch_views)
        k = len(centres)
        half = np.array([(size[1] - 1) / 2, (size[0] - 1) / 2])
        per_shift = [geom.to_model(shift_centres(centres, s, g)) for s in shifts]  # working pixels
        per_shift = [c - half if subpixel else patch_origins(c, size) for c in per_shift]
        passes = [(o, v) for o in per_shift for v in views]  # every shift seen through every view
        patches = np.concatenate([cut_patches(resized, o, size, self.info.patch_context, v) for o, v in passes])
        own = self.patch_heatmaps(patches, k).reshape(len(passes), k, *size)  # (P, K, h, w)
        xy, peak = self.info.decoding(own)
        spread = _numpy(self.info.decoding.spread(own, xy)).mean(axis=0)
        seen = _numpy(xy) + np.stack([o for o, _ in passes])  # (P, K, 2), as each view saw them
        working_xy = np.stack([view_points(p, patch_centres(o, size), v, inverse=True)
                               for p, (o, v) in zip(seen, passes, strict=True)])
        centre = working_xy.mean(axis=0)
        # RMS distance of the passes' estimates from their mean (working pixels): where the views disagree
        passes = np.sqrt(((working_xy - centre) ** 2).sum(axis=-1).mean(axis=0))
        return LandmarkPrediction(xy=to_original(centre, g), confidence=_numpy(peak).mean(axis=0),
                                  spread=spread / g[None, 0:2], geometry=geom, signals={"passes": passes})


def _numpy(t: torch.Tensor) -> np.ndarray:
    return t.detach().cpu().double().numpy()

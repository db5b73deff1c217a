"""Patches around landmark estimates: the input of the coarse-to-fine second stage.

At 256x256 one model pixel of an ISBI image is ~0.76 x 0.94 mm. The second stage looks again, at a finer working
resolution (the cached image, e.g. 600x484 = 0.4 mm/px), at a small window around each landmark's first estimate.
A sample is one image's K patches; patch k is centred on landmark k's estimate:

- training: the ground truth plus uniform jitter of +/- `jitter` working pixels (so the network learns to find
  the landmark anywhere near the centre),
- validation/test after `train.py`: ground truth plus a fixed, seeded jitter,
- cascade inference: first-stage predictions, cut with the same `cut_patches` by `Predictor.refine_working`.

Each patch keeps all K landmarks as keypoints (those inside it are supervised, the rest masked), and carries its
own geometry (B, K, 4): a crop is a translation of the working grid, so original <-> patch pixels stay one exact
affine map.
"""

from __future__ import annotations

import cv2
import numpy as np
import torch

from landmark_exp.data.geometry import Geometry, to_model
from landmark_exp.data.records import DataError, Record, whole_number
from landmark_exp.data.transforms import Augmenter, LandmarkDataset, visible_mask


def crop(image: np.ndarray, x0: int, y0: int, size: tuple[int, int]) -> np.ndarray:
    """The (h, w) window whose top-left pixel is (x0, y0), zero where it leaves the image."""
    h, w = size
    H, W = image.shape[:2]
    out = np.zeros((h, w), dtype=image.dtype)
    xs, ys, xe, ye = max(x0, 0), max(y0, 0), min(x0 + w, W), min(y0 + h, H)
    if xe > xs and ye > ys:
        out[ys - y0 : ye - y0, xs - x0 : xe - x0] = image[ys:ye, xs:xe]
    return out


def patch_origins(centres: np.ndarray, size: tuple[int, int]) -> np.ndarray:
    """Integer top-left (x0, y0) of windows of `size` (h, w) whose centre pixel is nearest each (x, y) centre."""
    h, w = size
    return np.floor(centres - np.array([(w - 1) / 2, (h - 1) / 2]) + 0.5).astype(np.int64)


def patch_context(value: object) -> int:
    """The context factor of a second stage (`data.patch.context`): 1 (or null) is the patch alone; c > 1 adds a
    second input channel, the c-times-larger window around the same centre shrunk c times, so the network sees
    where the patch lies in the skull at the patch's cost."""
    if value is None:
        return 1
    return whole_number(value, "data.patch.context", note=" (1: no context channel)")


def context_channels(context: int) -> int:
    """Input channels of a second stage with this context factor: the patch, and its context when c > 1."""
    return 1 if context == 1 else 2


IDENTITY_VIEW = (0.0, 1.0)


def patch_centres(origins: np.ndarray, size: tuple[int, int]) -> np.ndarray:
    """(N, 2) working-pixel (x, y) centres of windows of `size` (h, w) at top-left `origins`: what a view turns
    and zooms about."""
    h, w = size
    return np.asarray(origins, dtype=np.float64) + np.array([(w - 1) / 2, (h - 1) / 2])


def _view_linear(view: tuple[float, float]) -> np.ndarray:
    """2x2 map of a (angle in degrees, zoom) view: working offsets from the centre -> patch offsets."""
    angle, zoom = view
    t = np.deg2rad(angle)
    return zoom * np.array([[np.cos(t), np.sin(t)], [-np.sin(t), np.cos(t)]])


def _warp(image: np.ndarray, centre: np.ndarray, out_hw: tuple[int, int], view: tuple[float, float]) -> np.ndarray:
    """The (h, w) window centred on `centre` (working x, y) as seen turned and zoomed by `view`, zero outside."""
    h, w = out_hw
    m = _view_linear(view)
    mat = np.hstack([m, (np.array([(w - 1) / 2, (h - 1) / 2]) - m @ centre)[:, None]])
    return cv2.warpAffine(np.ascontiguousarray(image, dtype=np.float32), mat, (w, h), flags=cv2.INTER_LINEAR,
                          borderMode=cv2.BORDER_CONSTANT, borderValue=0.0)


def view_points(xy: np.ndarray, centres: np.ndarray, view: tuple[float, float], inverse: bool = False) -> np.ndarray:
    """Working-pixel points (..., N, 2) as a `view` about `centres` (N, 2) shows them (`cut_patches(view=)`), or
    with `inverse` back from the view: how a turned or zoomed patch's estimate returns to the image."""
    if tuple(view) == IDENTITY_VIEW:  # the patch as cut (training, and most passes): nothing to turn
        return np.asarray(xy, dtype=np.float64)
    m = _view_linear(view)
    m = np.linalg.inv(m) if inverse else m
    return centres + (np.asarray(xy, dtype=np.float64) - centres) @ m.T


def cut_patches(image: np.ndarray, origins: np.ndarray, size: tuple[int, int], context: int = 1,
                view: tuple[float, float] = IDENTITY_VIEW) -> np.ndarray:
    """(N, C, h, w) network input for windows at `origins` (N, 2) top-left (x0, y0): channel 0 the window itself,
    and with context c > 1 channel 1 the (c*h, c*w) window with the same centre pixel, block-averaged c x c.
    `view` (angle in degrees, zoom): the windows turned and zoomed about their centres (bilinear), a test-time
    view (`refine_views`); their estimates return with `view_points(inverse=True)`. A fractional origin (a
    cascade's patch at its first estimate's exact position) is read bilinearly too; whole-pixel origins under
    the identity view are plain crops, exactly.
    Training (PatchDataset), evaluate and predict all cut their patches here, so they cannot disagree."""
    h, w = size
    origins = np.asarray(origins, dtype=np.float64)
    out = np.empty((len(origins), context_channels(context), h, w), dtype=np.float32)
    identity = tuple(view) == IDENTITY_VIEW
    wide_hw = (context * h, context * w)
    for n, ((x0, y0), centre) in enumerate(zip(origins, patch_centres(origins, size), strict=True)):
        turned = not (identity and x0 == int(x0) and y0 == int(y0))
        out[n, 0] = _warp(image, centre, size, view) if turned else crop(image, int(x0), int(y0), size)
        if context > 1:  # same centre: x0 + (w - 1) / 2 = X0 + (c w - 1) / 2
            wide = (_warp(image, centre, wide_hw, view) if turned else
                    crop(image, int(x0) - (context - 1) * w // 2, int(y0) - (context - 1) * h // 2, wide_hw))
            out[n, 1] = wide.astype(np.float32, copy=False).reshape(h, context, w, context).mean(axis=(1, 3))
    return out


def shift_centres(centres: np.ndarray, shift: tuple[float, float], geometry: np.ndarray) -> np.ndarray:
    """(K, 2) original-pixel centres moved by `shift` = (dy, dx) working pixels (geometry [ax, ay, bx, by]).

    Test-time shifts of the second stage (`refine_shifts`): the same first estimate, patches cut a few pixels
    off it, so each sees the landmark at another place and with other context; their estimates are averaged."""
    dy, dx = shift
    return np.asarray(centres, dtype=np.float64) + np.array([dx / geometry[0], dy / geometry[1]])


def _pairs(given: object, stored: object, default: tuple[float, float], what: str, example: str) -> list[tuple[float, float]]:
    """`given` pairs of numbers, else `stored`, else [`default`]; a malformed list is a one-line error naming `what`."""
    pairs = given if given else stored
    if not pairs:
        return [default]
    try:
        out = [(float(a), float(b)) for a, b in pairs]
    except (TypeError, ValueError):
        raise DataError(f"{what} must be a list of {example}, got {pairs!r}") from None
    if not out:
        raise DataError(f"{what} must hold at least one pair")
    return out


def patch_shifts(given: object, stored: object = None) -> list[tuple[float, float]]:
    """The (dy, dx) test-time shifts a cascade applies: `given` (`refine_shifts`; [[0,0]] turns stored shifts off),
    else `stored` (the second stage's `data.patch.shifts`, chosen on validation), else one centred patch."""
    return _pairs(given, stored, (0.0, 0.0), "refine_shifts", "(dy, dx) pairs in working pixels, e.g. [[0,0],[0,8]]")


def patch_views(given: object, stored: object = None) -> list[tuple[float, float]]:
    """The (angle in degrees, zoom) views a cascade looks through at each shifted patch: `given` (`refine_views`),
    else `stored` (`data.patch.views`), else the patch as cut. Turned and zoomed within the range the second stage
    was trained on (data.augment), it sees the landmark once more, differently; all estimates are averaged."""
    out = _pairs(given, stored, IDENTITY_VIEW, "refine_views", "(angle in degrees, zoom) pairs, e.g. [[0,1],[-5,1],[5,1]]")
    if not all(0.5 <= zoom <= 2.0 and abs(angle) <= 45 for angle, zoom in out):
        raise DataError(f"refine_views: each angle must be within +/-45 degrees and each zoom within 0.5-2, got {given or stored!r}")
    return out


def patch_blend(given: object, stored: object = None) -> float:
    """The weight of the first-stage estimate in a cascade's final position: `given` (`refine_blend`), else
    `stored` (`data.patch.blend`, chosen on validation), else 0. The two stages err partly independently, so a
    little of the first estimate pulls a wrong second one back."""
    value = stored if given is None else given
    if value is None:
        return 0.0
    try:
        blend = float(value)
    except (TypeError, ValueError):
        blend = float("nan")
    if not 0.0 <= blend <= 1.0:  # also NaN
        raise DataError(f"refine_blend must be a number from 0 (second stage alone) to 1 (first stage alone), got {value!r}")
    return blend


class PatchDataset(LandmarkDataset):
    """One image's K patches per sample, from images cached at the working resolution."""

    def __init__(self, records: list[Record], images: list[np.ndarray], geometries: list[Geometry],
                 size: tuple[int, int], jitter: float, augment: Augmenter | None = None, random: bool = False,
                 seed: int = 0, context: int = 1) -> None:
        super().__init__(records, images, geometries, augment, seed)
        self.size, self.jitter, self.random = size, float(jitter), random
        self.context = patch_context(context)

    def _centres(self, i: int, truth: np.ndarray) -> np.ndarray:
        """Where the K patches are cut: the truth, jittered. Training: new jitter each epoch, a function of
        (seed, epoch, sample); validation: fixed per sample."""
        seed = [*self.sample_key(i), 1] if self.random else (self.seed, i)
        return truth + np.random.default_rng(seed).uniform(-self.jitter, self.jitter, truth.shape)

    def __getitem__(self, i: int) -> dict[str, torch.Tensor]:
        geom = self.geometries[i].as_array()
        truth = to_model(self.records[i].landmarks, geom)  # (K, 2) working pixels
        k = len(truth)
        origins = patch_origins(self._centres(i, truth), self.size)
        if self.augment is not None:
            self.augment.reseed(*self.sample_key(i))  # the K patches then draw in turn from this sample's stream
        patches = cut_patches(self.images[i].astype(np.float32), origins, self.size, self.context)  # (K, C, h, w)
        keypoints = np.empty((k, k, 2), dtype=np.float32)
        for j, (x0, y0) in enumerate(origins):
            kp = truth - (x0, y0)
            if self.augment is not None:
                # the channels move together (one pixel transform for the patch and its context: rotation and
                # scale about the centre agree, a translation moves the context c times as far)
                one = patches.shape[1] == 1
                patch, kp = self.augment(patches[j, 0] if one else np.ascontiguousarray(patches[j].transpose(1, 2, 0)), kp)
                patches[j] = patch[None] if one else patch.transpose(2, 0, 1)
            keypoints[j] = kp
        visible = np.stack([visible_mask(kp, self.size) for kp in keypoints])
        geoms = np.tile(geom, (k, 1))
        geoms[:, 2:4] -= origins  # working = a * orig + b; patch = working - origin
        return self.sample(i, patches, keypoints, visible, geoms)

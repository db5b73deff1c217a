"""Original image pixels <-> model input pixels, exactly and invertibly.

Convention everywhere in landmark_exp: x = column, y = row, pixel centres at
integer coordinates (so pixel i covers [i - 0.5, i + 0.5]). Resizing an image of
width W to w maps x -> (x + 0.5) * w / W - 0.5 (what cv2.resize does to pixel
centres). A letterbox adds a constant offset. Every map is therefore a per-axis
affine `model = a * orig + b`, stored as (ax, ay, bx, by) so a batch of them is a
(B, 4) tensor that travels with the samples.
"""

from __future__ import annotations

from dataclasses import dataclass

import cv2
import numpy as np


@dataclass(frozen=True)
class Geometry:
    """Per-axis affine map from original pixels to model-input pixels."""

    ax: float
    ay: float
    bx: float
    by: float

    @classmethod
    def for_resize(cls, orig_hw: tuple[int, int], out_hw: tuple[int, int], letterbox: bool = False) -> Geometry:
        """The map that `resize_image(img, out_hw, letterbox)` applies to an image of `orig_hw`."""
        (nh, nw), (py, px) = _content_box(orig_hw, out_hw, letterbox)
        # the content is scaled by (nw / W, nh / H): with a letterbox these differ from the nominal
        # min(w / W, h / H) by the rounding to whole pixels
        sx, sy = nw / orig_hw[1], nh / orig_hw[0]
        return cls(sx, sy, 0.5 * sx - 0.5 + px, 0.5 * sy - 0.5 + py)

    def as_array(self) -> np.ndarray:
        return np.array([self.ax, self.ay, self.bx, self.by], dtype=np.float64)

    def to_model(self, xy: np.ndarray) -> np.ndarray:
        return to_model(xy, self.as_array())

    def to_original(self, xy: np.ndarray) -> np.ndarray:
        return to_original(xy, self.as_array())


def _content_box(orig_hw: tuple[int, int], out_hw: tuple[int, int], letterbox: bool
                 ) -> tuple[tuple[int, int], tuple[int, int]]:
    """(content height, width) and (top, left) padding: all of `out_hw`, or an aspect-preserving fit in whole
    pixels."""
    (H, W), (h, w) = orig_hw, out_hw
    if not letterbox:
        return (h, w), (0, 0)
    s = min(w / W, h / H)
    nh, nw = min(h, round(H * s)), min(w, round(W * s))
    return (nh, nw), ((h - nh) // 2, (w - nw) // 2)


def _coefficients(xy, geom):
    """(a, b) broadcastable to xy (..., K, 2): geom (..., 4) is one map per image, (..., K, 4) one per point
    (the patches of the second stage, see data/patches.py)."""
    if geom.ndim == xy.ndim:
        return geom[..., 0:2], geom[..., 2:4]
    return geom[..., None, 0:2], geom[..., None, 2:4]


def to_model(xy, geom):
    """Original px -> model px. Works on numpy arrays or tensors; geom (..., 4) broadcasts over (..., K, 2)."""
    a, b = _coefficients(xy, geom)
    return xy * a + b


def to_original(xy, geom):
    """Model px -> original px: the exact inverse of `to_model`."""
    a, b = _coefficients(xy, geom)
    return (xy - b) / a


def resize_image(image: np.ndarray, out_hw: tuple[int, int], letterbox: bool = False) -> np.ndarray:
    """Resize a 2-D float image to `out_hw` (area interpolation when shrinking), optionally letterboxed."""
    H, W = image.shape[:2]
    (nh, nw), (py, px) = _content_box((H, W), out_hw, letterbox)
    inner = cv2.resize(image, (nw, nh), interpolation=cv2.INTER_AREA if (nh < H and nw < W) else cv2.INTER_LINEAR)
    if not letterbox:
        return inner
    out = np.zeros(out_hw, dtype=image.dtype)
    out[py : py + nh, px : px + nw] = inner
    return out

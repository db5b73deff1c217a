"""Drawing primitives of the synthetic cephalogram: splines, ellipse arcs, teeth, and a canvas of float attenuation
layers drawn through the canonical -> image similarity at cv2's sub-pixel precision."""

from __future__ import annotations

import cv2
import numpy as np

_SHIFT = 4  # cv2 sub-pixel bits
_SCALE = float(1 << _SHIFT)


def rot(deg: float) -> np.ndarray:
    t = np.deg2rad(deg)
    return np.array([[np.cos(t), -np.sin(t)], [np.sin(t), np.cos(t)]])


def affine(src: np.ndarray, dst: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """2x2 matrix M and offset b with M @ src_i + b = dst_i for three point pairs."""
    sol = np.linalg.solve(np.hstack([src, np.ones((3, 1))]), dst)  # (3, 2)
    return sol[:2].T, sol[2]


def spline(points, closed: bool = False, samples: int = 8) -> np.ndarray:
    """Centripetal Catmull-Rom spline through `points` (it passes exactly through every point)."""
    P = np.asarray(points, dtype=np.float64)
    ext = np.vstack([P[-1], P, P[0], P[1]] if closed else [2 * P[0] - P[1], P, 2 * P[-1] - P[-2]])
    p0, p1, p2, p3 = (ext[i : len(ext) - 3 + i][:, None, :] for i in range(4))

    def knot(a, b):
        return np.maximum(np.linalg.norm(b - a, axis=-1, keepdims=True) ** 0.5, 1e-6)

    t0 = np.zeros_like(knot(p0, p1))
    t1 = t0 + knot(p0, p1)
    t2 = t1 + knot(p1, p2)
    t3 = t2 + knot(p2, p3)
    t = t1 + (t2 - t1) * np.linspace(0.0, 1.0, samples, endpoint=False)[None, :, None]
    a1 = ((t1 - t) * p0 + (t - t0) * p1) / (t1 - t0)
    a2 = ((t2 - t) * p1 + (t - t1) * p2) / (t2 - t1)
    a3 = ((t3 - t) * p2 + (t - t2) * p3) / (t3 - t2)
    b1 = ((t2 - t) * a1 + (t - t0) * a2) / (t2 - t0)
    b2 = ((t3 - t) * a2 + (t - t1) * a3) / (t3 - t1)
    out = (((t2 - t) * b1 + (t - t1) * b2) / (t2 - t1)).reshape(-1, 2)
    return out if closed else np.vstack([out, P[-1]])


def ellipse_points(center, axes, angle_deg: float = 0.0, a0: float = 0.0, a1: float = 360.0, n: int = 48):
    """Points on an ellipse arc (angles in degrees, image convention: y down)."""
    t = np.deg2rad(np.linspace(a0, a1, n))
    return np.asarray(center, np.float64) + np.stack([axes[0] * np.cos(t), axes[1] * np.sin(t)], 1) @ rot(angle_deg).T


def tooth(tip, apex, crown_w: float, crown_frac: float = 0.42, n: int = 12) -> tuple[np.ndarray, np.ndarray]:
    """Incisor outline from its incisal tip to its root apex; returns (whole tooth, crown) polygons."""
    tip, apex = np.asarray(tip, float), np.asarray(apex, float)
    length = np.linalg.norm(apex - tip)
    d = (apex - tip) / length
    perp = np.array([-d[1], d[0]])
    t = np.linspace(0.0, 1.0, 2 * n)
    half = np.where(t < crown_frac,
                    crown_w / 2 * (0.25 + 0.75 * np.sin(np.pi / 2 * np.minimum(t / crown_frac, 1.0)) ** 0.7),
                    crown_w / 2 * (1.0 - 0.85 * (t - crown_frac) / (1.0 - crown_frac)))
    centre = tip + np.outer(t * length, d)
    left, right = centre + half[:, None] * perp, centre - half[:, None] * perp
    k = int(np.searchsorted(t, crown_frac))
    return np.vstack([tip, left, apex, right[::-1]]), np.vstack([tip, left[:k], right[:k][::-1]])


def molar(occlusal_mid, along, towards_root, width: float, crown_h: float, root_h: float):
    """A premolar/molar (or vertebral body): rounded crown on the occlusal line plus a tapering root block."""
    c = np.asarray(occlusal_mid, float) + towards_root * crown_h / 2
    t = np.linspace(0.0, 2 * np.pi, 24, endpoint=False)
    u = np.sign(np.cos(t)) * np.abs(np.cos(t)) ** (2 / 3) * width / 2
    v = np.sign(np.sin(t)) * np.abs(np.sin(t)) ** (2 / 3) * crown_h / 2
    crown = c + np.outer(u, along) + np.outer(v, towards_root)
    base = c + towards_root * crown_h * 0.3
    root = np.array([base - along * width * 0.42, base + towards_root * root_h - along * width * 0.18,
                     base + towards_root * (root_h * 0.8), base + towards_root * root_h + along * width * 0.18,
                     base + along * width * 0.42])
    return crown, root


class Canvas:
    """Float attenuation layers ("soft", "bone"), drawn through the canonical -> image similarity."""

    def __init__(self, width: int, height: int, m: np.ndarray, b: np.ndarray, px_per_unit: float) -> None:
        self.w, self.h, self.m, self.b, self.ppu = width, height, m, b, px_per_unit
        self.scratch = np.zeros((height, width), np.uint8)
        self.layers = {name: np.zeros((height, width), np.float32) for name in ("soft", "bone")}

    def to_px(self, pts) -> np.ndarray:
        return np.asarray(pts, float).reshape(-1, 2) @ self.m.T + self.b

    def _commit(self, layer: str, density: float) -> None:
        """Add the scratch mask (only its drawn box, for speed) to a layer and clear it."""
        x, y, w, h = cv2.boundingRect(self.scratch)
        sub = self.scratch[y : y + h, x : x + w]
        self.layers[layer][y : y + h, x : x + w] += sub.astype(np.float32) * np.float32(density / 255.0)
        sub[...] = 0

    def fill(self, pts, density: float, layer: str = "bone") -> None:
        px = np.clip(self.to_px(pts), -4 * max(self.w, self.h), 5 * max(self.w, self.h))
        cv2.fillPoly(self.scratch, [np.round(px * _SCALE).astype(np.int32)], 255, cv2.LINE_AA, _SHIFT)
        self._commit(layer, density)

    def line(self, pts, width_units: float, density: float, closed: bool = False) -> None:
        px = np.round(self.to_px(pts) * _SCALE).astype(np.int32)
        cv2.polylines(self.scratch, [px], closed, 255, max(1, int(round(width_units * self.ppu))), cv2.LINE_AA,
                      _SHIFT)
        self._commit("bone", density)

    def ellipse(self, center, axes, density: float, angle: float = 0.0, ring: float | None = None) -> None:
        pts = ellipse_points(center, axes, angle, 0.0, 360.0, 40)
        self.fill(pts, density) if ring is None else self.line(pts, ring, density, closed=True)


def smooth_noise(rng: np.random.Generator, width: int, height: int, cell: int) -> np.ndarray:
    """Zero-mean, unit-ish smooth random field (low-res noise upsampled)."""
    small = rng.standard_normal((max(2, height // cell), max(2, width // cell))).astype(np.float32)
    return cv2.resize(small, (width, height), interpolation=cv2.INTER_CUBIC)

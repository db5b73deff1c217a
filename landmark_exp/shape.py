"""A statistical shape model of the landmarks: where each one should be, given the others.

Fitted on training landmarks (generalised Procrustes alignment, then a Gaussian over the aligned coordinates),
it scores each landmark of a configuration by the Mahalanobis distance `z` from its conditional distribution
given the landmarks still trusted (about 1-2 normally, large where anatomically impossible); the worst is set
aside and the check repeated, so one gross error cannot drag the others' scores. Plain numbers, stored in a
detector as lists: nothing in it is code.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from landmark_exp.data.records import CheckpointError

SHRINKAGE = 0.05  # share of the covariance pulled towards its mean variance: 150 shapes for 38 coordinates


def similarity(src: np.ndarray, dst: np.ndarray) -> tuple[float, np.ndarray, np.ndarray]:
    """Scale s, rotation R (2x2) and translation t minimising |s R src + t - dst| (Umeyama; no reflection)."""
    mu_s, mu_d = src.mean(axis=0), dst.mean(axis=0)
    a, b = src - mu_s, dst - mu_d
    u, sig, vt = np.linalg.svd(b.T @ a)
    d = np.diag([1.0, np.sign(np.linalg.det(u @ vt)) or 1.0])
    rot = u @ d @ vt
    var = (a ** 2).sum()
    s = float((sig * np.diag(d)).sum() / var) if var > 0 else 1.0
    return s, rot, mu_d - s * rot @ mu_s


@dataclass
class ShapeCheck:
    """One configuration checked: per landmark (K,) its distance from where the others put it, (K, 2) that
    expected position (in the checked coordinates) and whether it was set aside as an outlier."""

    z: np.ndarray
    expected: np.ndarray
    outlier: np.ndarray
    sd: np.ndarray  # (K,) the expected position's standard deviation (checked coordinates), for a search radius


@dataclass
class ShapeModel:
    mean: np.ndarray  # (K, 2) the aligned mean shape, in the training data's millimetres
    cov: np.ndarray  # (2K, 2K) covariance of the aligned coordinates (x1, y1, x2, y2, ...)
    count: int = 0  # training shapes it was fitted on

    @classmethod
    def fit(cls, shapes: np.ndarray, iterations: int = 10) -> ShapeModel:
        """Procrustes-align (N, K, 2) shapes (millimetres); their mean and a shrunk covariance."""
        shapes = np.asarray(shapes, dtype=np.float64)
        if shapes.ndim != 3 or len(shapes) < 3 or not np.isfinite(shapes).all():
            raise ValueError("a shape model needs at least 3 complete training shapes")
        size = float(np.mean([np.sqrt(((s - s.mean(0)) ** 2).sum()) for s in shapes]))
        mean = shapes[0] - shapes[0].mean(0)
        for _ in range(iterations):
            mean = mean * size / np.sqrt((mean ** 2).sum())
            aligned = np.stack([_apply(similarity(s, mean), s) for s in shapes])
            mean = aligned.mean(0) - aligned.mean(0).mean(0)
        flat = aligned.reshape(len(shapes), -1)
        cov = np.cov(flat, rowvar=False)
        target = np.trace(cov) / len(cov)
        cov = (1 - SHRINKAGE) * cov + SHRINKAGE * target * np.eye(len(cov))
        return cls(mean=mean, cov=cov, count=len(shapes))

    def updated(self, shapes: np.ndarray) -> ShapeModel:
        """This model with a new site's (N, K, 2) shapes (mm) taken in, pooled as a mixture in which the site
        weighs half from 10 shapes on (less with fewer): its own conventions, too few to stand alone."""
        aligned = np.stack([_apply(similarity(s, self.mean), s) for s in np.asarray(shapes, dtype=np.float64)])
        n = len(aligned)
        w = 0.5 * min(1.0, n / 10)
        site_mean = aligned.mean(0)
        site_cov = np.cov(aligned.reshape(n, -1), rowvar=False) if n > 1 else np.zeros_like(self.cov)
        mean = (1 - w) * self.mean + w * site_mean
        d0, d1 = (self.mean - mean).ravel(), (site_mean - mean).ravel()
        cov = (1 - w) * (self.cov + np.outer(d0, d0)) + w * (site_cov + np.outer(d1, d1))
        return ShapeModel(mean=mean - mean.mean(0), cov=cov, count=self.count + n)

    def check(self, xy: np.ndarray, z_limit: float = 4.0, max_outliers: int = 4) -> ShapeCheck:
        """Check a (K, 2) configuration (any pixel grid: the similarity alignment absorbs scale and rotation)."""
        xy = np.asarray(xy, dtype=np.float64)
        k = len(self.mean)
        inlier = np.isfinite(xy).all(axis=1)
        while True:
            z, expected, sd = self._scores(xy, inlier)
            candidates = np.where(inlier, z, -np.inf)
            worst = int(np.argmax(candidates))
            if candidates[worst] <= z_limit or (~inlier).sum() >= max_outliers or inlier.sum() <= k // 2:
                return ShapeCheck(z=z, expected=expected, outlier=~inlier, sd=sd)
            inlier = inlier.copy()
            inlier[worst] = False

    def _scores(self, xy: np.ndarray, inlier: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Each landmark against its conditional distribution given the other inliers, aligned on the inliers."""
        s, rot, t = similarity(xy[inlier], self.mean[inlier])
        aligned = _apply((s, rot, t), np.where(np.isfinite(xy), xy, 0.0)).reshape(-1)
        mu = self.mean.reshape(-1)
        k = len(self.mean)
        z, expected, sd = np.zeros(k), np.zeros((k, 2)), np.zeros(k)
        for j in range(k):
            given = np.repeat(inlier & (np.arange(k) != j), 2)
            own = np.zeros(2 * k, dtype=bool)
            own[2 * j:2 * j + 2] = True
            gain = np.linalg.solve(self.cov[np.ix_(given, given)], self.cov[np.ix_(given, own)]).T  # (2, G)
            e = mu[own] + gain @ (aligned[given] - mu[given])
            c = self.cov[np.ix_(own, own)] - gain @ self.cov[np.ix_(given, own)]
            r = aligned[own] - e
            z[j] = math.sqrt(max(float(r @ np.linalg.solve(c, r)), 0.0)) if np.isfinite(xy[j]).all() else np.inf
            expected[j] = e
            sd[j] = math.sqrt(max(float(np.linalg.eigvalsh(c).max()), 0.0)) / s
        back = (expected - t) @ rot / s  # inverse of the alignment: into the checked coordinates
        return z, back, sd

    def to_dict(self) -> dict:
        return {"mean": self.mean.tolist(), "cov": self.cov.tolist(), "count": self.count}

    @classmethod
    def from_dict(cls, d: object, where: str) -> ShapeModel:
        """A stored shape model, checked: shapes, finite, a covariance that can be inverted."""
        try:
            mean = np.asarray(d["mean"], dtype=np.float64)  # type: ignore[index]
            cov = np.asarray(d["cov"], dtype=np.float64)  # type: ignore[index]
            count = int(d.get("count", 0))  # type: ignore[union-attr]
        except (TypeError, KeyError, ValueError, AttributeError) as e:
            raise CheckpointError(f"{where}: shape model is not valid ({type(e).__name__}: {e})") from None
        k = len(mean)
        if mean.shape != (k, 2) or cov.shape != (2 * k, 2 * k) or not (np.isfinite(mean).all() and np.isfinite(cov).all()):
            raise CheckpointError(f"{where}: shape model has mean {mean.shape} and covariance {cov.shape}; "
                                  f"expected (K, 2) and (2K, 2K) finite numbers")
        if np.linalg.eigvalsh((cov + cov.T) / 2).min() <= 0:
            raise CheckpointError(f"{where}: shape model covariance is not positive definite")
        return cls(mean=mean, cov=cov, count=count)


def _apply(transform: tuple[float, np.ndarray, np.ndarray], points: np.ndarray) -> np.ndarray:
    s, rot, t = transform
    return s * points @ rot.T + t

"""Deterministic synthetic lateral cephalograms in the ISBI 2015 challenge layout.

Why: the product's default run must work with no download, and it should go through exactly the
same loader as the real data. So this module makes a small, X-ray-like dataset (skull facing right,
bright bone on a dark background) and writes it to disk as the challenge does::

    root/RawImage/TrainingData/001.png ...      (n_train images)
    root/RawImage/Test1Data/NNN.png ...         (n_test1 images, ids continue after training)
    root/AnnotationsByMD/400_senior/NNN.txt     (19 lines "x,y", integer pixels)
    root/AnnotationsByMD/400_junior/NNN.txt
    root/synthetic.json                         (parameters + GENERATOR_VERSION)

How: every case varies a hard-coded 19-point mean shape by a few smooth anatomical modes and a small
per-landmark jitter; `synthetic_drawing` draws the anatomy from those landmarks under a random pose.
Two "doctors" annotate the true position with independent noise (junior noisier and slightly biased,
most of all on soft-tissue pogonion). Pixel centres are at integer coordinates, x = column, y = row.
"""

from __future__ import annotations

import json
import os
import shutil
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import cv2
import numpy as np

from landmark_exp.data.drawing import rot
from landmark_exp.data.records import ISBI2015_LANDMARKS
from landmark_exp.data.synthetic_drawing import CANON_MM, CANON_SIZE, MEAN_SHAPE, draw, fit_scale

try:  # POSIX only; elsewhere concurrent generation is simply not guarded.
    import fcntl
except ImportError:  # pragma: no cover - Windows
    fcntl = None  # type: ignore[assignment]

# Bump whenever the drawn images or annotations change, so cached datasets are regenerated.
# 2: B point is the deepest point of a real chin concavity, the lower incisor root ends behind it.
GENERATOR_VERSION = 2

# Physical pixel spacing (mm/px) at the default 387x480 size: the real 1935x2400 frame at 0.1 mm/px,
# downscaled 5x. Other sizes rescale the same anatomy to fit: see `synthetic_spacing_mm`.
SYNTHETIC_SPACING_MM = 0.5
_DEFAULTS = {"n_train": 60, "n_test1": 30, "width": 387, "height": 480, "seed": 0}

# Landmark indices (0-based), order of ISBI2015_LANDMARKS.
S, N, OR, PO, A, B, POG, ME, GN, GO, LI, UI, UL, LL, SN, SP, PNS, ANS, AR = range(19)
_MANDIBLE = [B, POG, ME, GN, GO, LI, LL, SP]

# Annotation noise: per-axis SD in mm (senior, junior), scaled per landmark by how ill-defined it is.
_SENIOR_SD_MM, _JUNIOR_SD_MM = 0.8, 1.2
_NOISE_FACTOR = np.array(
    [0.6, 0.9, 1.3, 1.4, 1.2, 1.2, 0.8, 0.8, 0.8, 1.3, 0.6, 0.6, 1.0, 1.0, 0.9, 1.0, 1.0, 1.0, 1.1]
)
# Junior's systematic bias in mm in the anatomical frame (x anterior, y inferior).
_JUNIOR_BIAS_MM = {OR: (0.8, -0.5), A: (0.0, -0.8), GO: (-0.7, -0.4)}
# Soft-tissue pogonion is ambiguous along the chin contour: extra SD (senior, junior) and junior bias, mm.
_SP_TANGENT_SD_MM = (1.5, 3.0)
_SP_TANGENT_BIAS_MM = 1.5


def synthetic_spacing_mm(width: int = 387, height: int = 480) -> float:
    """Pixel spacing (mm/px) of a synthetic image of this size: the anatomy is scaled to fit the frame."""
    return CANON_MM / fit_scale(width, height)


def ensure_synthetic(root: Path | str, **params) -> Path:
    """Return `root`, generating it first unless `synthetic.json` already matches params and version.

    Built in a temporary sibling directory and renamed into place, so a killed run never leaves a half-written
    dataset; an existing `root` is replaced only if it is empty or has `synthetic.json`, so pointing this at real
    data cannot destroy it. Under an exclusive lock beside `root`, so of several processes (DDP ranks) calling it
    at once exactly one generates and the others reuse it.
    """
    root = Path(root).absolute()
    resolved = _resolve_params(params)
    if _matches(root, resolved):  # fast path, no lock needed for a complete, renamed-in dataset
        return root
    with _locked(root):
        if not _matches(root, resolved):
            _generate_unlocked(root, resolved)
    return root


def _resolve_params(params: dict) -> dict:
    """Fill in the defaults and validate, so equal datasets always have equal metadata."""
    unknown = set(params) - set(_DEFAULTS)
    if unknown:
        raise TypeError(f"unknown synthetic data parameter(s): {sorted(unknown)}; known: {sorted(_DEFAULTS)}")
    out = {**_DEFAULTS, **params}
    for k, v in out.items():
        if isinstance(v, bool) or not isinstance(v, (int, np.integer)):
            raise TypeError(f"synthetic data parameter {k!r} must be an int, got {v!r}")
        out[k] = int(v)
    if out["n_train"] < 1 or out["n_test1"] < 0:
        raise ValueError(f"need n_train >= 1 and n_test1 >= 0, got {out['n_train']}, {out['n_test1']}")
    if out["width"] < 64 or out["height"] < 64:
        raise ValueError(f"synthetic images must be at least 64x64, got {out['width']}x{out['height']}")
    return out


def _matches(root: Path, params: dict) -> bool:
    try:
        meta = json.loads((root / "synthetic.json").read_text())
    except (OSError, ValueError):
        return False
    return (isinstance(meta, dict) and meta.get("generator_version") == GENERATOR_VERSION
            and meta.get("params") == params and (root / "RawImage" / "TrainingData").is_dir()
            and (root / "AnnotationsByMD" / "400_senior").is_dir())


@contextmanager
def _locked(root: Path) -> Iterator[None]:
    """Exclusive inter-process lock on `.<root name>.lock` beside root (root itself gets swapped), released when
    the file closes."""
    root.parent.mkdir(parents=True, exist_ok=True)
    with open(root.parent / f".{root.name}.lock", "a+") as fh:
        if fcntl is not None:
            fcntl.flock(fh, fcntl.LOCK_EX)
        yield


def _generate_unlocked(root: Path, params: dict) -> None:
    if root.exists():
        if not root.is_dir():
            raise FileExistsError(f"{root}: exists and is not a directory")
        if any(root.iterdir()) and not (root / "synthetic.json").is_file():
            raise FileExistsError(f"{root}: not empty and not a synthetic dataset; refusing to overwrite it")
    parent = root.parent
    for stale in list(parent.glob(f".{root.name}.tmp-*")) + list(parent.glob(f".{root.name}.old-*")):
        shutil.rmtree(stale, ignore_errors=True)  # left by a killed run; we hold the lock
    tag = f"{os.getpid()}-{uuid.uuid4().hex[:8]}"
    tmp = parent / f".{root.name}.tmp-{tag}"
    old = parent / f".{root.name}.old-{tag}"
    try:
        _write_dataset(tmp, params)
        if root.exists():
            os.rename(root, old)
        os.rename(tmp, root)
        shutil.rmtree(old, ignore_errors=True)
    finally:
        if tmp.exists():
            shutil.rmtree(tmp, ignore_errors=True)


def _write_dataset(out: Path, params: dict) -> None:
    n_train = params["n_train"]
    dirs = {"train": out / "RawImage" / "TrainingData", "test1": out / "RawImage" / "Test1Data",
            "senior": out / "AnnotationsByMD" / "400_senior", "junior": out / "AnnotationsByMD" / "400_junior"}
    for d in dirs.values():
        d.mkdir(parents=True, exist_ok=True)
    for index in range(n_train + params["n_test1"]):
        image, senior, junior = _make_case(params["seed"], index, params["width"], params["height"])
        image_path = dirs["train" if index < n_train else "test1"] / f"{index + 1:03d}.png"
        if not cv2.imwrite(str(image_path), image):
            raise OSError(f"could not write {image_path}")
        for name, pts in (("senior", senior), ("junior", junior)):
            (dirs[name] / f"{index + 1:03d}.txt").write_text("".join(f"{int(x)},{int(y)}\n" for x, y in pts))
    meta = {"generator": "landmark_exp.data.synthetic", "generator_version": GENERATOR_VERSION, "params": params,
            "spacing_mm": synthetic_spacing_mm(params["width"], params["height"]),
            "landmarks": list(ISBI2015_LANDMARKS), "layout": "isbi2015"}
    (out / "synthetic.json").write_text(json.dumps(meta, indent=2) + "\n")


def _vary_shape(rng: np.random.Generator) -> tuple[np.ndarray, dict]:
    """Mean shape + smooth anatomical modes + per-landmark jitter, in canonical units (0.1 mm)."""
    L = MEAN_SHAPE.copy()
    # Cranial base length / shape: the face moves forward/back relative to sella, porion, articulare.
    dcb = rng.normal(0.0, 25.0)
    L[[N, OR]] += (dcb, 0.0)
    L[[A, ANS, UI, UL, SN, LI, B, POG, ME, GN, LL, SP]] += (0.7 * dcb, 0.0)
    L[PNS] += (0.4 * dcb, 0.0)
    L[S] += rng.normal(0.0, 10.0, 2)
    L[[PO, AR]] += rng.normal(0.0, 14.0, (2, 2))
    # Maxillary protrusion (A point, ANS, upper incisor, nose base and upper lip move together).
    L[[A, ANS, UI, UL, SN]] += (rng.normal(0.0, 22.0), 0.0)
    # Face height: the dento-alveolar part and the whole mandible move down.
    dz = rng.normal(0.0, 30.0)
    L[[UI, UL]] += (0.0, 0.45 * dz)
    L[_MANDIBLE] += (0.0, dz)
    # Mandible length and rotation about the condyle (clockwise opens the bite, chin goes back/down).
    condyle = L[AR] + (25.0, -55.0)
    turn = float(np.clip(rng.normal(0.0, 3.0), -7.0, 7.0))
    scale = float(np.clip(1.0 + rng.normal(0.0, 0.04), 0.9, 1.1))
    L[_MANDIBLE] = condyle + (L[_MANDIBLE] - condyle) @ (scale * rot(turn)).T
    # Incisor tips, lips and soft chin.
    L[UI] += (rng.normal(0.0, 10.0), rng.normal(0.0, 6.0))
    L[LI] += (rng.normal(0.0, 10.0), rng.normal(0.0, 6.0))
    lip = rng.normal(0.0, 20.0)
    L[UL] += (lip, 0.0)
    L[LL] += (0.9 * lip + rng.normal(0.0, 8.0), 0.0)
    L[SP] += (0.3 * lip + rng.normal(0.0, 15.0), rng.normal(0.0, 10.0))
    # Keep the lower incisor tip lingual to (behind) the upper one, as in a normal overjet.
    L[LI, 0] = min(L[LI, 0], L[UI, 0] - 6.0)
    L += rng.normal(0.0, 8.0, L.shape)  # ~0.8 mm per-landmark jitter
    # B point is the deepest point of the chin's anterior concavity: keep it at least 3 mm behind the lower
    # incisor tip - pogonion line, or the jitter flattens the concavity and B has no feature to be found by.
    chord = L[POG] - L[LI]
    back = np.array([-chord[1], chord[0]]) / np.linalg.norm(chord)
    L[B] += back * max(0.0, 30.0 - float((L[B] - L[LI]) @ back))
    aux = {
        "vault": float(1.0 + rng.normal(0.0, 0.035)),
        "nose": float(np.clip(1.0 + rng.normal(0.0, 0.12), 0.75, 1.3)),
        "ui_tilt": float(rng.normal(0.0, 4.0)),
        "li_tilt": float(rng.normal(0.0, 4.0)),
        "ghost": rng.normal(0.0, 1.0, 3),
    }
    return L, aux


def _pose(rng: np.random.Generator, width: int, height: int) -> tuple[np.ndarray, np.ndarray, float]:
    """The case's canonical -> image similarity (matrix, offset, pixels per canonical unit): scale +-5 %,
    rotation +-4 deg, translation +-4 % of the image size."""
    k = fit_scale(width, height)
    s = rng.uniform(0.95, 1.05)
    m = s * k * rot(rng.uniform(-4.0, 4.0))
    t = rng.uniform(-0.04, 0.04, 2) * np.array([width, height])
    return m, np.array([(width - 1) / 2.0, (height - 1) / 2.0]) + t - m @ (CANON_SIZE / 2.0), s * k


def _annotate(true_px: np.ndarray, view: tuple, chin_tangent: np.ndarray, size: tuple[int, int],
              rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    """Senior and junior annotations: the true position plus independent noise (junior also biased)."""
    m, _, ppu = view
    mm_to_px = ppu / CANON_MM  # (px per canonical unit) / (mm per canonical unit)
    turn = m / np.linalg.norm(m[:, 0])  # anatomical frame -> image frame
    out = []
    for k, sd in enumerate((_SENIOR_SD_MM, _JUNIOR_SD_MM)):
        noise = rng.normal(0.0, 1.0, true_px.shape) * (sd * _NOISE_FACTOR)[:, None] * mm_to_px
        if k:  # the junior
            for i, bias in _JUNIOR_BIAS_MM.items():
                noise[i] += turn @ np.array(bias) * mm_to_px
        along = rng.normal(0.0, _SP_TANGENT_SD_MM[k]) + (_SP_TANGENT_BIAS_MM if k else 0.0)
        noise[SP] += chin_tangent * along * mm_to_px
        out.append(np.clip(np.rint(true_px + noise), 0, np.array(size) - 1).astype(np.int64))
    return out[0], out[1]


def _make_case(seed: int, index: int, width: int, height: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """One image and its (senior, junior) integer annotations, fully determined by (seed, index)."""
    shape_rng, pose_rng, image_rng, annot_rng = (
        np.random.default_rng(s) for s in np.random.SeedSequence([int(seed), int(index)]).spawn(4)
    )
    L, aux = _vary_shape(shape_rng)
    view = _pose(pose_rng, width, height)
    image, chin_tangent = draw(L, aux, view, width, height, image_rng)
    true_px = L @ view[0].T + view[1]
    return (image, *_annotate(true_px, view, chin_tangent, (width, height), annot_rng))

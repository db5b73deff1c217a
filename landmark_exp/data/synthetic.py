"""Deterministic synthetic lateral cephalograms in the ISBI 2015 challenge layout.

Why: the product's default run must work with no download, and it should go through exactly the
same loader as the real data. So this module draws a small, X-ray-like dataset (skull facing right,
bright bone on a dark background) and writes it to disk as the challenge does::

    root/RawImage/TrainingData/001.png ...      (n_train images)
    root/RawImage/Test1Data/NNN.png ...         (n_test1 images, ids continue after training)
    root/AnnotationsByMD/400_senior/NNN.txt     (19 lines "x,y", integer pixels)
    root/AnnotationsByMD/400_junior/NNN.txt
    root/synthetic.json                         (parameters + GENERATOR_VERSION)

How: every image starts from a hard-coded 19-point mean shape (our own, normalised to the 1935x2400
challenge frame), varied by a few smooth anatomical modes, a global similarity and a small per-landmark
jitter. The anatomy (vault, sella, orbit, ear rod, maxilla, mandible, teeth, soft-tissue profile, ...)
is then drawn *from the varied landmarks*: each landmark is a corner, tip, centre or extremal point of
a drawn structure, so it can be localised from the image. Two "doctors" annotate the true position with
independent noise (junior noisier and slightly biased, most of all on soft-tissue pogonion).

Geometry is built in "canonical" units (0.1 mm, the real challenge's pixel) and mapped to the image by
one similarity transform; drawing is vectorised cv2 with sub-pixel (shift) coordinates. Pixel centres
are at integer coordinates, x = column, y = row, as in the annotation files.
"""

from __future__ import annotations

import inspect
import json
import os
import shutil
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import cv2
import numpy as np

from landmark_exp.data.records import ISBI2015_LANDMARKS

try:  # POSIX only; elsewhere concurrent generation is simply not guarded.
    import fcntl
except ImportError:  # pragma: no cover - Windows
    fcntl = None  # type: ignore[assignment]

__all__ = ["GENERATOR_VERSION", "SYNTHETIC_SPACING_MM", "ensure_synthetic", "generate", "synthetic_spacing_mm"]

# Bump whenever the drawn images or annotations change, so cached datasets are regenerated.
# 2: B point is the deepest point of a real chin concavity, the lower incisor root ends behind it.
GENERATOR_VERSION = 2

# Physical pixel spacing (mm/px) at the default 387x480 size: the real 1935x2400 frame at 0.1 mm/px,
# downscaled 5x. Other sizes rescale the same anatomy to fit: see `synthetic_spacing_mm`.
SYNTHETIC_SPACING_MM = 0.5

# The real challenge frame the mean shape is expressed in (width, height), 0.1 mm per unit.
_CANON_SIZE = np.array([1935.0, 2400.0])
_CANON_MM = 0.1

# Our own 19-point mean shape, normalised (x / 1935, y / 2400), order of ISBI2015_LANDMARKS.
_MEAN_SHAPE_NORM = np.array(
    [
        [0.419, 0.435],  # 1 sella: centre of the sella turcica
        [0.718, 0.406],  # 2 nasion: deepest point of the frontonasal concavity
        [0.656, 0.513],  # 3 orbitale: lowest point of the orbital rim
        [0.313, 0.510],  # 4 porion: top of the ear canal (ear-rod ring)
        [0.719, 0.640],  # 5 subspinale (A point): deepest point of the anterior maxilla
        [0.686, 0.783],  # 6 supramentale (B point): deepest point of the concavity infradentale-pogonion
        [0.697, 0.829],  # 7 pogonion: most anterior point of the bony chin, in front of B point
        [0.668, 0.854],  # 8 menton: lowest point of the symphysis
        [0.689, 0.846],  # 9 gnathion: between pogonion and menton on the chin contour
        [0.380, 0.725],  # 10 gonion: the mandibular angle
        [0.734, 0.708],  # 11 lower incisor tip
        [0.744, 0.713],  # 12 upper incisor tip
        [0.806, 0.678],  # 13 upper lip: most anterior point
        [0.794, 0.755],  # 14 lower lip: most anterior point
        [0.775, 0.626],  # 15 subnasale: columella / upper-lip junction
        [0.752, 0.855],  # 16 soft-tissue pogonion: most prominent point of the soft chin
        [0.501, 0.597],  # 17 posterior nasal spine: back tip of the palate
        [0.724, 0.604],  # 18 anterior nasal spine: front tip of the palate
        [0.347, 0.552],  # 19 articulare: ramus back border meets the cranial base
    ]
)
_MEAN_SHAPE = _MEAN_SHAPE_NORM * _CANON_SIZE  # canonical units

# Landmark indices (0-based), for readability of the drawing code.
S, N, OR, PO, A, B, POG, ME, GN, GO, LI, UI, UL, LL, SN, SP, PNS, ANS, AR = range(19)
_MANDIBLE = [B, POG, ME, GN, GO, LI, LL, SP]
# The lower incisor's root apex from B point (mandible frame): the root sits in the symphysis, its apex 5 mm
# behind B, so it neither covers the cortex where B is nor ends there (B would look like the tooth's far end).
_LI_APEX = np.array([-50.0, -15.0])

# Annotation noise: per-axis SD in mm (senior, junior), scaled per landmark by how ill-defined it is.
_SENIOR_SD_MM = 0.8
_JUNIOR_SD_MM = 1.2
_NOISE_FACTOR = np.array(
    [0.6, 0.9, 1.3, 1.4, 1.2, 1.2, 0.8, 0.8, 0.8, 1.3, 0.6, 0.6, 1.0, 1.0, 0.9, 1.0, 1.0, 1.0, 1.1]
)
# Junior's systematic bias in mm in the anatomical frame (x anterior, y inferior).
_JUNIOR_BIAS_MM = {OR: (0.8, -0.5), A: (0.0, -0.8), GO: (-0.7, -0.4)}
# Soft-tissue pogonion is ambiguous along the chin contour: extra SD (senior, junior) and junior bias, mm.
_SP_TANGENT_SD_MM = (1.5, 3.0)
_SP_TANGENT_BIAS_MM = 1.5

_SHIFT = 4  # cv2 sub-pixel bits
_SCALE = float(1 << _SHIFT)


# --------------------------------------------------------------------------------------------- public


def synthetic_spacing_mm(width: int = 387, height: int = 480) -> float:
    """Pixel spacing (mm/px) of a synthetic image of this size: the anatomy is scaled to fit the frame."""
    return _CANON_MM / _fit_scale(width, height)


def generate(root: Path | str, n_train: int = 60, n_test1: int = 30, width: int = 387, height: int = 480,
             seed: int = 0) -> Path:
    """Write the whole synthetic dataset under `root`, atomically, and return `root`.

    Built in a temporary sibling directory and renamed into place, so a killed run never leaves a
    half-written dataset. An existing `root` is replaced only if it is empty or was generated here
    (has `synthetic.json`), so pointing this at real data cannot destroy it.
    """
    root = Path(root).absolute()
    params = _resolve_params(
        {"n_train": n_train, "n_test1": n_test1, "width": width, "height": height, "seed": seed}
    )
    with _locked(root):
        _generate_unlocked(root, params)
    return root


def ensure_synthetic(root: Path | str, **params) -> Path:
    """Return `root`, generating it first unless `synthetic.json` already matches params and version.

    Safe when several processes (e.g. DDP ranks) call it at once: check and generation happen under an
    exclusive lock on a sibling lock file, so exactly one of them generates and the others reuse it.
    """
    root = Path(root).absolute()
    resolved = _resolve_params(params)
    if _matches(root, resolved):  # fast path, no lock needed for a complete, renamed-in dataset
        return root
    with _locked(root):
        if not _matches(root, resolved):
            _generate_unlocked(root, resolved)
    return root


# ----------------------------------------------------------------------------------- files & locking


def _resolve_params(params: dict) -> dict:
    """Fill in `generate`'s defaults and validate, so equal datasets always have equal metadata."""
    sig = inspect.signature(generate)
    defaults = {k: p.default for k, p in sig.parameters.items() if k != "root"}
    unknown = set(params) - set(defaults)
    if unknown:
        raise TypeError(f"unknown synthetic data parameter(s): {sorted(unknown)}; known: {sorted(defaults)}")
    out = {**defaults, **params}
    for k, v in out.items():
        if isinstance(v, bool) or not isinstance(v, (int, np.integer)):
            raise TypeError(f"synthetic data parameter {k!r} must be an int, got {v!r}")
        out[k] = int(v)
    if out["n_train"] < 1 or out["n_test1"] < 0:
        raise ValueError(f"need n_train >= 1 and n_test1 >= 0, got {out['n_train']}, {out['n_test1']}")
    if out["width"] < 64 or out["height"] < 64:
        raise ValueError(f"synthetic images must be at least 64x64, got {out['width']}x{out['height']}")
    return out


def _metadata(params: dict) -> dict:
    return {
        "generator": "landmark_exp.data.synthetic",
        "generator_version": GENERATOR_VERSION,
        "params": params,
        "spacing_mm": synthetic_spacing_mm(params["width"], params["height"]),
        "landmarks": list(ISBI2015_LANDMARKS),
        "layout": "isbi2015",
    }


def _matches(root: Path, params: dict) -> bool:
    try:
        meta = json.loads((root / "synthetic.json").read_text())
    except (OSError, ValueError):
        return False
    return (
        isinstance(meta, dict)
        and meta.get("generator_version") == GENERATOR_VERSION
        and meta.get("params") == params
        and (root / "RawImage" / "TrainingData").is_dir()
        and (root / "AnnotationsByMD" / "400_senior").is_dir()
    )


@contextmanager
def _locked(root: Path) -> Iterator[None]:
    """Exclusive inter-process lock on `.<root name>.lock` beside root (root itself gets swapped)."""
    root.parent.mkdir(parents=True, exist_ok=True)
    if fcntl is None:  # pragma: no cover
        yield
        return
    with open(root.parent / f".{root.name}.lock", "a+") as fh:
        fcntl.flock(fh.fileno(), fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(fh.fileno(), fcntl.LOCK_UN)


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
    try:
        _write_dataset(tmp, params)
        if root.exists():
            old = parent / f".{root.name}.old-{tag}"
            os.rename(root, old)
            os.rename(tmp, root)
            shutil.rmtree(old, ignore_errors=True)
        else:
            os.rename(tmp, root)
    finally:
        if tmp.exists():
            shutil.rmtree(tmp, ignore_errors=True)


def _write_dataset(out: Path, params: dict) -> None:
    n_train, n_test1 = params["n_train"], params["n_test1"]
    width, height, seed = params["width"], params["height"], params["seed"]
    dirs = {"train": out / "RawImage" / "TrainingData", "test1": out / "RawImage" / "Test1Data",
            "senior": out / "AnnotationsByMD" / "400_senior", "junior": out / "AnnotationsByMD" / "400_junior"}
    for d in dirs.values():
        d.mkdir(parents=True, exist_ok=True)
    for index in range(n_train + n_test1):
        image, senior, junior = _make_case(seed, index, width, height)
        image_id = f"{index + 1:03d}"
        image_dir = dirs["train"] if index < n_train else dirs["test1"]
        if not cv2.imwrite(str(image_dir / f"{image_id}.png"), image):
            raise OSError(f"could not write {image_dir / f'{image_id}.png'}")
        for name, pts in (("senior", senior), ("junior", junior)):
            text = "".join(f"{int(x)},{int(y)}\n" for x, y in pts)
            (dirs[name] / f"{image_id}.txt").write_text(text)
    (out / "synthetic.json").write_text(json.dumps(_metadata(params), indent=2) + "\n")


# ------------------------------------------------------------------------------------------- geometry


def _fit_scale(width: int, height: int) -> float:
    """Image pixels per canonical unit: the challenge frame fitted into the image (0.2 at 387x480)."""
    return float(min(width / _CANON_SIZE[0], height / _CANON_SIZE[1]))


def _rot(deg: float) -> np.ndarray:
    t = np.deg2rad(deg)
    c, s = np.cos(t), np.sin(t)
    return np.array([[c, -s], [s, c]])


def _affine(src: np.ndarray, dst: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """2x2 matrix M and offset b with M @ src_i + b = dst_i for three point pairs."""
    s = np.hstack([src, np.ones((3, 1))])
    sol = np.linalg.solve(s, dst)  # (3, 2)
    return sol[:2].T, sol[2]


def _vary_shape(rng: np.random.Generator) -> tuple[np.ndarray, dict]:
    """Mean shape + smooth anatomical modes + per-landmark jitter, in canonical units."""
    L = _MEAN_SHAPE.copy()
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
    rot = float(np.clip(rng.normal(0.0, 3.0), -7.0, 7.0))
    scale = float(np.clip(1.0 + rng.normal(0.0, 0.04), 0.9, 1.1))
    L[_MANDIBLE] = condyle + (L[_MANDIBLE] - condyle) @ (scale * _rot(rot)).T
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


def _catmull_rom(points, closed: bool = False, samples: int = 8) -> np.ndarray:
    """Centripetal Catmull-Rom spline through `points` (it passes exactly through every point)."""
    P = np.asarray(points, dtype=np.float64)
    if closed:
        ext = np.vstack([P[-1], P, P[0], P[1]])
    else:
        ext = np.vstack([2 * P[0] - P[1], P, 2 * P[-1] - P[-2]])
    p0, p1, p2, p3 = (ext[i : len(ext) - 3 + i][:, None, :] for i in range(4))

    def knot(a, b):
        return np.maximum(np.linalg.norm(b - a, axis=-1, keepdims=True) ** 0.5, 1e-6)

    t0 = np.zeros_like(knot(p0, p1))
    t1 = t0 + knot(p0, p1)
    t2 = t1 + knot(p1, p2)
    t3 = t2 + knot(p2, p3)
    u = np.linspace(0.0, 1.0, samples, endpoint=False)[None, :, None]
    t = t1 + (t2 - t1) * u
    a1 = ((t1 - t) * p0 + (t - t0) * p1) / (t1 - t0)
    a2 = ((t2 - t) * p1 + (t - t1) * p2) / (t2 - t1)
    a3 = ((t3 - t) * p2 + (t - t2) * p3) / (t3 - t2)
    b1 = ((t2 - t) * a1 + (t - t0) * a2) / (t2 - t0)
    b2 = ((t3 - t) * a2 + (t - t1) * a3) / (t3 - t1)
    c = ((t2 - t) * b1 + (t - t1) * b2) / (t2 - t1)
    out = c.reshape(-1, 2)
    return out if closed else np.vstack([out, P[-1]])


def _ellipse(center, axes, angle_deg: float = 0.0, a0: float = 0.0, a1: float = 360.0, n: int = 48):
    """Points on an ellipse arc (angles in degrees, image convention: y down)."""
    t = np.deg2rad(np.linspace(a0, a1, n))
    pts = np.stack([axes[0] * np.cos(t), axes[1] * np.sin(t)], axis=1)
    return np.asarray(center, dtype=np.float64) + pts @ _rot(angle_deg).T


def _tooth(tip, apex, crown_w: float, crown_frac: float = 0.42, n: int = 12) -> tuple[np.ndarray, np.ndarray]:
    """Incisor outline from its incisal tip to its root apex; returns (whole tooth, crown) polygons."""
    tip, apex = np.asarray(tip, float), np.asarray(apex, float)
    axis = apex - tip
    length = np.linalg.norm(axis)
    d = axis / length
    perp = np.array([-d[1], d[0]])
    t = np.linspace(0.0, 1.0, 2 * n)
    half = np.where(
        t < crown_frac,
        crown_w / 2 * (0.25 + 0.75 * np.sin(np.pi / 2 * np.minimum(t / crown_frac, 1.0)) ** 0.7),
        crown_w / 2 * (1.0 - 0.85 * (t - crown_frac) / (1.0 - crown_frac)),
    )
    centre = tip + np.outer(t * length, d)
    left, right = centre + half[:, None] * perp, centre - half[:, None] * perp
    whole = np.vstack([tip, left, apex, right[::-1]])
    k = int(np.searchsorted(t, crown_frac))
    crown = np.vstack([tip, left[:k], right[:k][::-1]])
    return whole, crown


def _molar(occlusal_mid, along, towards_root, width: float, crown_h: float, root_h: float):
    """A premolar/molar: rounded crown sitting on the occlusal line plus a tapering root block."""
    c = np.asarray(occlusal_mid, float) + towards_root * crown_h / 2
    t = np.linspace(0.0, 2 * np.pi, 24, endpoint=False)
    cu, su = np.cos(t), np.sin(t)
    u = np.sign(cu) * np.abs(cu) ** (2 / 3) * width / 2
    v = np.sign(su) * np.abs(su) ** (2 / 3) * crown_h / 2
    crown = c + np.outer(u, along) + np.outer(v, towards_root)
    base = c + towards_root * crown_h * 0.3
    root = np.array(
        [
            base - along * width * 0.42,
            base + towards_root * root_h - along * width * 0.18,
            base + towards_root * (root_h * 0.8),
            base + towards_root * root_h + along * width * 0.18,
            base + along * width * 0.42,
        ]
    )
    return crown, root


def _anatomy(L: np.ndarray, aux: dict) -> dict:
    """All drawn structures, in canonical units, built from the (varied) landmarks."""
    M0 = _MEAN_SHAPE
    # Local affine frames (mean -> this case) for the cranium, the maxilla and the mandible.
    cran = _affine(M0[[S, N, PO]], L[[S, N, PO]])
    maxi = _affine(M0[[PNS, ANS, OR]], L[[PNS, ANS, OR]])
    mand = _affine(M0[[AR, GO, ME]], L[[AR, GO, ME]])

    def mp(frame, pts):
        m, b = frame
        return np.asarray(pts, float) @ m.T + b

    def off(frame, base, d):
        return np.asarray(base, float) + np.asarray(d, float) @ frame[0].T

    g = {}
    vs = aux["vault"]
    # Cranial vault: ellipse arc from glabella over the top to the occiput, closed along the cranial base.
    glab = off(cran, L[N], [45.0, -120.0])
    arc = mp(cran, _ellipse([720.0, 770.0], [735.0 * vs, 705.0 * vs], 0.0, 7.0, -210.0, 64))
    base = _catmull_rom(
        [
            arc[-1],
            mp(cran, [120.0, 1340.0]),
            mp(cran, [300.0, 1470.0]),
            off(cran, L[AR], [-55.0, 95.0]),  # basion
            L[AR],  # articulare lies on the inferior surface of the cranial base
            mp(cran, [850.0, 1200.0]),
            mp(cran, [1000.0, 1175.0]),
            mp(cran, [1150.0, 1090.0]),
            mp(cran, [1280.0, 1055.0]),
            off(cran, L[N], [-55.0, 45.0]),
            L[N],
            glab,
        ],
        samples=6,
    )
    g["vault"] = np.vstack([arc, base[1:]])
    g["vault_arc"] = arc
    g["inner_table"] = mp(cran, _ellipse([720.0, 770.0], [665.0 * vs, 640.0 * vs], 0.0, 0.0, -200.0, 48))
    g["scalp_arc"] = mp(cran, _ellipse([720.0, 770.0], [790.0 * vs, 760.0 * vs], 0.0, 180.0, 365.0, 48))
    g["frontal_sinus"] = off(cran, L[N], [-50.0, -150.0])
    g["glabella"] = glab
    # Sella turcica: a round dark pocket in the sphenoid body with a bright floor, clinoids above.
    g["sella"] = L[S]
    g["sphenoid"] = off(cran, L[S], [55.0, 75.0])
    g["dorsum"] = np.vstack(
        [off(cran, L[S], [-80.0, 40.0]), off(cran, L[S], [-70.0, -75.0]), off(cran, L[S], [-40.0, -80.0])]
    )
    g["clinoid"] = np.vstack(
        [off(cran, L[S], [95.0, -20.0]), off(cran, L[S], [30.0, -62.0]), off(cran, L[S], [110.0, -60.0])]
    )
    g["planum"] = np.vstack(
        [off(cran, L[S], [90.0, -45.0]), mp(cran, [[1150.0, 1010.0]]), off(cran, L[N], [-60.0, 20.0])]
    )
    # Orbit: ellipse whose lowest point is orbitale. Ear rod: ring whose canal top is porion.
    g["orbit_c"] = off(cran, L[OR], [0.0, -150.0])
    g["ear_c"] = off(cran, L[PO], [0.0, 45.0])
    g["petrous"] = off(cran, L[PO], [120.0, -70.0])
    g["mastoid"] = off(cran, L[PO], [-40.0, 170.0])
    # Nasal bone from nasion.
    nasal_tip = off(cran, L[N], [80.0, 175.0])
    g["nasal"] = np.vstack([L[N], off(cran, L[N], [25.0, 10.0]), nasal_tip, off(cran, L[N], [-10.0, 40.0])])
    # Upper incisor, maxilla and palate.
    ui_apex = L[UI] + (_rot(aux["ui_tilt"]) @ (maxi[0] @ np.array([-95.0, -215.0])))
    g["ui"], g["ui_crown"] = _tooth(L[UI], ui_apex, 72.0)
    ud = (ui_apex - L[UI]) / np.linalg.norm(ui_apex - L[UI])
    ulab = np.array([ud[1], -ud[0]])  # labial (anterior) side of the upper incisor
    if ulab[0] < 0:
        ulab = -ulab
    prosthion = L[UI] + ud * 100.0 + ulab * 34.0
    pir = mp(maxi, [1240.0, 1330.0])
    g["midface"] = np.vstack(
        [
            L[N],
            _catmull_rom([nasal_tip, pir, off(maxi, L[ANS], [-60.0, -25.0]), L[ANS]], samples=6)[:-1],
            L[ANS],
            off(maxi, L[ANS], [-45.0, 25.0]),
            _catmull_rom([off(maxi, L[ANS], [-25.0, 30.0]), L[A], prosthion], samples=6)[1:-1],
            prosthion,
            L[UI] + ud * 95.0 - ulab * 40.0,
            mp(maxi, [[1250.0, 1660.0], [1130.0, 1650.0], [1030.0, 1630.0]]),
            off(maxi, L[PNS], [40.0, 60.0]),
            L[PNS],
            off(maxi, L[PNS], [-40.0, -120.0]),
            mp(cran, [[850.0, 1200.0], [1000.0, 1175.0], [1150.0, 1090.0], [1280.0, 1055.0]]),
            off(cran, L[N], [-55.0, 45.0]),
        ]
    )
    g["maxilla_front"] = _catmull_rom([L[ANS], off(maxi, L[ANS], [-45.0, 25.0]), L[A], prosthion], samples=8)
    g["palate"] = np.vstack(
        [
            L[PNS],
            off(maxi, L[PNS], [120.0, -12.0]),
            L[ANS],
            off(maxi, L[ANS], [-70.0, 38.0]),
            off(maxi, (L[PNS] + L[ANS]) / 2, [0.0, 65.0]),
            off(maxi, L[PNS], [40.0, 35.0]),
        ]
    )
    g["ptm"] = off(maxi, L[PNS], [0.0, -150.0])
    g["sinus"] = mp(maxi, [1180.0, 1360.0])
    g["zygoma"] = mp(maxi, [[1160.0, 1290.0], [1120.0, 1420.0], [1110.0, 1520.0]])
    # Mandible: one closed contour through articulare, gonion, menton, gnathion, pogonion and B point.
    li_apex = L[B] + (_rot(aux["li_tilt"]) @ (mand[0] @ _LI_APEX))
    g["li"], g["li_crown"] = _tooth(L[LI], li_apex, 62.0)
    ld = (li_apex - L[LI]) / np.linalg.norm(li_apex - L[LI])
    llab = np.array([-ld[1], ld[0]])
    if llab[0] < 0:
        llab = -llab
    infradentale = L[LI] + ld * 88.0 + llab * 30.0
    lingual = L[LI] + ld * 90.0 - llab * 40.0
    cont = [
        mp(mand, [705.0, 1222.0]),  # condyle top
        mp(mand, [752.0, 1262.0]),
        mp(mand, [835.0, 1365.0]),  # sigmoid notch
        mp(mand, [915.0, 1325.0]),  # coronoid tip
        mp(mand, [938.0, 1450.0]),
        mp(mand, [975.0, 1590.0]),
        mp(mand, [1030.0, 1680.0]),  # retromolar
        mp(mand, [1170.0, 1705.0]),
        lingual,
        infradentale,
        L[B],
        L[POG],
        L[GN],
        L[ME],
        mp(mand, [1180.0, 2003.0]),
        mp(mand, [900.0, 1826.0]),  # antegonial notch
        L[GO],
        mp(mand, [703.0, 1535.0]),
        L[AR],
        mp(mand, [662.0, 1272.0]),
    ]
    g["mandible"] = _catmull_rom(cont, closed=True, samples=8)
    g["condyle"] = mp(mand, [700.0, 1262.0])
    g["lower_border"] = _catmull_rom(
        [L[GO], mp(mand, [900.0, 1826.0]), mp(mand, [1180.0, 2003.0]), L[ME], L[GN], L[POG], L[B]], samples=8
    )
    g["alveolar_cortex"] = _catmull_rom([L[POG], L[B], infradentale], samples=8)[8:]  # thin, B up to Id
    g["ramus_border"] = _catmull_rom([mp(mand, [662.0, 1272.0]), L[AR], mp(mand, [703.0, 1535.0]), L[GO]])
    g["symphysis_in"] = _catmull_rom(
        [lingual, off(mand, lingual, [-20.0, 120.0]), off(mand, L[ME], [-110.0, -55.0]), L[ME]], samples=8
    )
    # Posterior teeth along the occlusal line (upper hang from the maxilla, lower stand on the mandible).
    contact = (L[UI] + L[LI]) / 2
    g["upper_occl"] = (contact - ulab * 80.0 - ud * 6.0, mp(maxi, [1040.0, 1668.0]))
    g["lower_occl"] = (contact - llab * 75.0 - ld * 6.0, mp(mand, [1040.0, 1652.0]))
    # Bilateral mandible: the far side projects slightly larger and shifted (double lower border).
    gh = aux["ghost"]
    shift = np.array([-18.0 + 8.0 * gh[1], 14.0 + 6.0 * gh[2]]) @ cran[0].T
    g["ghost"] = (g["lower_border"][:-10] - L[GO]) * (1.03 + 0.01 * gh[0]) + L[GO] + shift
    # Cervical spine and airway behind the ramus, hyoid below the mandible.
    g["spine"] = [off(cran, L[AR], [-150.0 - 20.0 * i, 300.0 + 230.0 * i]) for i in range(5)]
    g["airway"] = np.vstack(
        [
            off(maxi, L[PNS], [-50.0, 20.0]),
            off(maxi, L[PNS], [-20.0, 250.0]),
            off(mand, L[GO], [230.0, 250.0]),
            off(mand, L[GO], [170.0, 900.0]),
            off(mand, L[GO], [100.0, 900.0]),
            off(mand, L[GO], [140.0, 250.0]),
            off(maxi, L[PNS], [-110.0, 220.0]),
            off(maxi, L[PNS], [-130.0, 20.0]),
        ]
    )
    g["hyoid"] = off(mand, L[ME], [-380.0, 200.0])
    # Soft-tissue profile: forehead, nose, lips, chin and neck, through subnasale, both lips and soft pog.
    nose = aux["nose"]
    sn_base = L[SN]
    stomion = (L[UL] + L[LL]) / 2 + np.array([-55.0, 0.0]) @ maxi[0].T
    soft_chin_above = off(mand, L[SP], [-5.0, -80.0])
    soft_chin_below = off(mand, L[ME], [25.0, 90.0])
    g["soft_chin_above"], g["soft_chin_below"] = soft_chin_above, soft_chin_below
    face = _catmull_rom(
        [
            off(cran, glab, [65.0, 0.0]),
            off(cran, L[N], [62.0, 15.0]),
            off(maxi, sn_base, [80.0 * nose, -190.0 * nose]),
            off(maxi, sn_base, [150.0 * nose, -115.0 * nose]),  # pronasale
            off(maxi, sn_base, [125.0 * nose, -45.0 * nose]),
            off(maxi, sn_base, [55.0, -18.0]),
            L[SN],
            off(maxi, L[SN], [18.0, 55.0]),
            L[UL],
            off(maxi, L[UL], [-20.0, 60.0]),
            stomion,
            off(mand, L[LL], [-20.0, -50.0]),
            L[LL],
            off(mand, L[LL], [-40.0, 55.0]),
            off(mand, L[B], [75.0, 50.0]),  # labiomental fold
            soft_chin_above,
            L[SP],
            soft_chin_below,  # soft menton
            off(mand, L[ME], [-150.0, 140.0]),
            off(mand, L[GO], [320.0, 380.0]),  # throat
            off(mand, L[GO], [290.0, 600.0]),
            off(mand, L[GO], [260.0, 1200.0]),
        ],
        samples=8,
    )
    far = 4000.0
    g["profile"] = np.vstack(
        [g["scalp_arc"], face, [[face[-1][0], far], [-far, far], [-far, g["scalp_arc"][0][1]]]]
    )
    return g


# ------------------------------------------------------------------------------------------ rendering


class _Canvas:
    """Float attenuation layers, drawn through a canonical -> image similarity with sub-pixel cv2 calls."""

    def __init__(self, width: int, height: int, m: np.ndarray, b: np.ndarray, px_per_unit: float) -> None:
        self.w, self.h = width, height
        self.m, self.b = m, b
        self.ppu = px_per_unit
        self.scratch = np.zeros((height, width), np.uint8)
        self.layers = {name: np.zeros((height, width), np.float32) for name in ("soft", "bone")}

    def to_px(self, pts) -> np.ndarray:
        return np.asarray(pts, float).reshape(-1, 2) @ self.m.T + self.b

    def _bbox(self, px: np.ndarray, pad: float) -> tuple[int, int, int, int] | None:
        x0 = int(max(np.floor(px[:, 0].min() - pad), 0))
        y0 = int(max(np.floor(px[:, 1].min() - pad), 0))
        x1 = int(min(np.ceil(px[:, 0].max() + pad) + 1, self.w))
        y1 = int(min(np.ceil(px[:, 1].max() + pad) + 1, self.h))
        return None if x0 >= x1 or y0 >= y1 else (x0, y0, x1, y1)

    def _commit(self, layer: str, density: float, box) -> None:
        x0, y0, x1, y1 = box
        sub = self.scratch[y0:y1, x0:x1]
        self.layers[layer][y0:y1, x0:x1] += sub.astype(np.float32) * np.float32(density / 255.0)
        sub[...] = 0

    def fill(self, pts, density: float, layer: str = "bone") -> None:
        px = self.to_px(pts)
        px = np.clip(px, -4 * max(self.w, self.h), 5 * max(self.w, self.h))
        box = self._bbox(px, 2.0)
        if box is None:
            return
        cv2.fillPoly(self.scratch, [np.round(px * _SCALE).astype(np.int32)], 255, cv2.LINE_AA, _SHIFT)
        self._commit(layer, density, box)

    def line(
        self, pts, width_units: float, density: float, closed: bool = False, layer: str = "bone"
    ) -> None:
        px = self.to_px(pts)
        thick = max(1, int(round(width_units * self.ppu)))
        box = self._bbox(px, thick + 2.0)
        if box is None:
            return
        cv2.polylines(
            self.scratch, [np.round(px * _SCALE).astype(np.int32)], closed, 255, thick, cv2.LINE_AA, _SHIFT
        )
        self._commit(layer, density, box)

    def ellipse(
        self, center, axes, density: float, angle: float = 0.0, ring: float | None = None, layer: str = "bone"
    ) -> None:
        pts = _ellipse(center, axes, angle, 0.0, 360.0, 40)
        if ring is None:
            self.fill(pts, density, layer)
        else:
            self.line(pts, ring, density, closed=True, layer=layer)


def _similarity(rng: np.random.Generator, width: int, height: int) -> tuple[np.ndarray, np.ndarray, float]:
    """Global pose: scale +-5%, rotation +-4 deg, translation +-4% of the image size."""
    k = _fit_scale(width, height)
    s = rng.uniform(0.95, 1.05)
    theta = rng.uniform(-4.0, 4.0)
    t = rng.uniform(-0.04, 0.04, 2) * np.array([width, height])
    m = s * k * _rot(theta)
    centre_img = np.array([(width - 1) / 2.0, (height - 1) / 2.0])
    b = centre_img + t - m @ (_CANON_SIZE / 2.0)
    return m, b, s * k


def _smooth_noise(rng: np.random.Generator, width: int, height: int, cell: int) -> np.ndarray:
    """Zero-mean, unit-ish smooth random field (low-res noise upsampled)."""
    small = rng.standard_normal((max(2, height // cell), max(2, width // cell))).astype(np.float32)
    return cv2.resize(small, (width, height), interpolation=cv2.INTER_CUBIC)


def _render(g: dict, L: np.ndarray, cv: _Canvas, rng: np.random.Generator) -> np.ndarray:
    """Draw the anatomy as attenuation, then turn it into an 8-bit X-ray-like image."""
    w, h = cv.w, cv.h
    # Soft tissue (whole head and neck), thicker away from the profile edge.
    cv.fill(g["profile"], 1.0, "soft")
    cv.fill(g["airway"], -0.45, "soft")
    # Cranium.
    cv.fill(g["vault"], 0.75)
    cv.line(g["vault_arc"], 70.0, 0.45)
    cv.line(g["inner_table"], 22.0, 0.2)
    cv.ellipse(g["frontal_sinus"], (45.0, 75.0), -0.35, angle=-15.0)
    cv.ellipse(g["petrous"], (190.0, 70.0), 0.45, angle=-25.0)
    cv.ellipse(g["mastoid"], (90.0, 120.0), 0.3, angle=10.0)
    cv.line(g["planum"], 22.0, 0.45)
    # Sella: sphenoid body, dark fossa centred on sella with a bright floor, dorsum and clinoid.
    cv.ellipse(g["sphenoid"], (185.0, 150.0), 0.5, angle=-10.0)
    cv.ellipse(g["sella"], (62.0, 58.0), -0.75)
    cv.line(_ellipse(g["sella"], (70.0, 66.0), 0.0, -10.0, 190.0, 24), 20.0, 0.65)
    cv.fill(g["dorsum"], 0.6)
    cv.fill(g["clinoid"], 0.55)
    # Midface, orbit, sinus, pterygomaxillary fissure, zygoma, nasal bone.
    cv.fill(g["midface"], 0.45)
    cv.ellipse(g["sinus"], (150.0, 105.0), -0.3, angle=10.0)
    cv.ellipse(g["orbit_c"], (112.0, 150.0), -0.2)
    cv.ellipse(g["orbit_c"], (112.0, 150.0), 0.55, ring=22.0)
    cv.ellipse(g["ptm"], (28.0, 120.0), -0.35)
    cv.ellipse(g["ptm"], (34.0, 126.0), 0.35, ring=12.0)
    cv.line(g["zygoma"], 30.0, 0.35)
    cv.fill(g["nasal"], 0.55)
    cv.fill(g["palate"], 0.6)
    cv.line(g["maxilla_front"], 18.0, 0.4)
    # Ear rod: bright metal ring around a dark canal whose top is porion.
    cv.ellipse(g["ear_c"], (58.0, 45.0), -0.55)
    cv.ellipse(g["ear_c"], (85.0, 85.0), 0.9, ring=16.0)
    # Mandible (plus a faint far-side lower border) with dense cortices.
    cv.fill(g["mandible"], 0.6)
    cv.ellipse(g["condyle"], (50.0, 40.0), 0.3, angle=30.0)
    cv.line(g["lower_border"], 34.0, 0.55)
    cv.line(g["alveolar_cortex"], 16.0, 0.45)
    cv.line(g["ramus_border"], 22.0, 0.35)
    cv.line(g["symphysis_in"], 20.0, 0.35)
    cv.line(g["ghost"], 18.0, 0.22)
    # Teeth: posterior teeth first, incisors (brightest, enamel crowns) on top.
    for (p0, p1), sign in ((g["upper_occl"], -1.0), (g["lower_occl"], 1.0)):
        d = p1 - p0
        length = np.linalg.norm(d)
        along = d / length
        root_dir = np.array([-along[1], along[0]])
        if np.sign(root_dir[1]) != sign:
            root_dir = -root_dir
        widths = np.array([0.8, 0.85, 0.85, 1.15, 1.2])
        edges = np.concatenate([[0.0], np.cumsum(widths)]) / widths.sum() * length
        for i in range(len(widths)):
            mid = p0 + along * (edges[i] + edges[i + 1]) / 2
            crown, root = _molar(mid, along, root_dir, (edges[i + 1] - edges[i]) * 0.95, 70.0, 120.0)
            cv.fill(root, 0.55)
            cv.fill(crown, 0.95)
    for name in ("ui", "li"):
        cv.fill(g[name], 0.8)
        cv.fill(g[f"{name}_crown"], 0.55)
    # Neck.
    along, down = np.array([0.993, -0.12]), np.array([0.12, 0.993])
    for i, c in enumerate(g["spine"]):  # vertebral bodies: rounded boxes with a bright cortex
        body, _ = _molar(c, along, down, 170.0, 190.0 if i == 0 else 150.0, 0.0)
        cv.fill(body, 0.5)
        cv.line(body, 16.0, 0.3, closed=True)
    cv.ellipse(g["hyoid"], (55.0, 22.0), 0.45, angle=-15.0)
    if rng.random() < 0.5:  # nasion relator rod of the cephalostat, sometimes in view
        x = L[N][0] + rng.uniform(250.0, 380.0)
        cv.fill([[x, -100.0], [x + 45.0, -100.0], [x + 45.0, L[N][1] - 120.0], [x, L[N][1] - 120.0]], 0.9)

    soft = cv.layers["soft"]
    mask = (soft > 0.5).astype(np.uint8)
    dist = cv2.distanceTransform(mask, cv2.DIST_L2, 3)
    thickness = np.minimum(1.0, 0.45 + dist / max(4.0, 60.0 * cv.ppu)).astype(np.float32)
    soft_att = np.clip(soft, 0.0, 1.0) * thickness * np.float32(0.34)
    bone = np.clip(cv.layers["bone"], 0.0, None)
    texture = 1.0 + 0.10 * _smooth_noise(rng, w, h, 6) + 0.05 * _smooth_noise(rng, w, h, 2)
    att = soft_att + bone * texture
    sigma = max(0.5, 4.0 * cv.ppu)
    att = cv2.GaussianBlur(att, (0, 0), sigma * rng.uniform(0.8, 1.3))

    # Film response, exposure, vignetting and grain.
    gain = rng.uniform(0.8, 1.0)
    bg = rng.uniform(12.0, 30.0)
    img = bg + (250.0 - bg) * (1.0 - np.exp(-gain * att))
    yy, xx = np.mgrid[0:h, 0:w].astype(np.float32)
    r2 = ((xx - w * rng.uniform(0.4, 0.6)) / w) ** 2 + ((yy - h * rng.uniform(0.4, 0.6)) / h) ** 2
    img *= (1.0 - rng.uniform(0.25, 0.45) * r2) * (1.0 + 0.04 * _smooth_noise(rng, w, h, 40))
    img += rng.uniform(2.5, 4.5) * rng.standard_normal((h, w), dtype=np.float32)
    img = cv2.GaussianBlur(img, (0, 0), 0.5)
    return np.clip(np.rint(img), 0, 255).astype(np.uint8)


def _annotate(true_px: np.ndarray, g: dict, cv: _Canvas, rng: np.random.Generator):
    """Senior and junior annotations: the true position plus independent noise (junior also biased)."""
    mm_to_px = cv.ppu / _CANON_MM  # (px per canonical unit) / (mm per canonical unit)
    rot = cv.m / np.linalg.norm(cv.m[:, 0])  # anatomical frame -> image frame
    above, below = cv.to_px(g["soft_chin_above"])[0], cv.to_px(g["soft_chin_below"])[0]
    tangent = (below - above) / max(np.linalg.norm(below - above), 1e-6)
    out = []
    for who, sd in (("senior", _SENIOR_SD_MM), ("junior", _JUNIOR_SD_MM)):
        noise = rng.normal(0.0, 1.0, true_px.shape) * (sd * _NOISE_FACTOR)[:, None] * mm_to_px
        if who == "junior":
            for i, bias in _JUNIOR_BIAS_MM.items():
                noise[i] += rot @ np.array(bias) * mm_to_px
        k = 0 if who == "senior" else 1
        along = rng.normal(0.0, _SP_TANGENT_SD_MM[k]) + (_SP_TANGENT_BIAS_MM if k else 0.0)
        noise[SP] += tangent * along * mm_to_px
        pts = np.rint(true_px + noise)
        pts[:, 0] = np.clip(pts[:, 0], 0, cv.w - 1)
        pts[:, 1] = np.clip(pts[:, 1], 0, cv.h - 1)
        out.append(pts.astype(np.int64))
    return out[0], out[1]


def _make_case(seed: int, index: int, width: int, height: int):
    """One image and its (senior, junior) integer annotations, fully determined by (seed, index)."""
    shape_rng, pose_rng, image_rng, annot_rng = (
        np.random.default_rng(s) for s in np.random.SeedSequence([int(seed), int(index)]).spawn(4)
    )
    L, aux = _vary_shape(shape_rng)
    g = _anatomy(L, aux)
    m, b, ppu = _similarity(pose_rng, width, height)
    cv = _Canvas(width, height, m, b, ppu)
    image = _render(g, L, cv, image_rng)
    true_px = cv.to_px(L)
    senior, junior = _annotate(true_px, g, cv, annot_rng)
    return image, senior, junior

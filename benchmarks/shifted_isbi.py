"""A "simulated other-site" validation set built from ISBI 2015 training images, to choose robustness settings.

Robustness settings (augmentation strength, normalisation, ...) must be chosen on images that look like another
clinic's, without tuning to the real second-site images. This tool takes exactly the validation images that a
training run with `seed=<seed>` carves from ISBI training data (the default `data=isbi2015` config, composed and
built as train.py builds it, so the images were never trained on) and writes `--variants` shifted copies of each,
every copy a deterministic function of (seed, image id, variant), each combining the shifts another site brings:

- framing: a window of 72-88 % of the image's width and height (the anatomy fills ~1.15-1.4x more of the frame),
  placed at random but holding every landmark at least 3 % of the window from its edges, rotated by -6..6 degrees
  about its centre (the rotation is taken before the crop; where a window corner would leave the image its border
  pixels are repeated), resized to a width of 1100-1600 px (aspect kept). Landmarks follow exactly; the spacing of
  each copy is 0.1 * crop width / new width mm/px (column `spacing`);
- intensity: gamma 0.7-1.4, contrast x0.75-1.3 and brightness -0.1..0.1 of the range, an S-shaped tone curve
  (half the copies), a linear brightness ramp (soft-tissue filter) of 0-25 % of the range, mostly brighter towards
  the face;
- hardware in view, drawn on the 8-bit image: a bright vertical ruler with millimetre ticks in front of the face
  (the nasion relator) and a bright ring of radius 4-7 mm whose centre is 5-15 mm from porion (an ear rod),
  neither within 2 mm of a landmark;
- detector: Gaussian blur sigma 0-1.5 px, Gaussian noise of 0-4 % of the range, JPEG quality 85-95.

Output (`--out`, refused when not empty unless `--overwrite`): images/<id>_v<k>.jpg, labels.csv in the package's
images + CSV layout (`image_path,1_x,1_y,...,19_x,19_y,spacing`), shifts.csv (every drawn parameter per copy)
and README.md. Commands (from the repository root; seed 42: 22 images x 3 variants = 66 copies):

    OMP_NUM_THREADS=1 python -m benchmarks.shifted_isbi --root ../shared/data/isbi2015 --out /tmp/isbi_shifted
    python -m landmark_exp.datacheck data=csv data.source.root=/tmp/isbi_shifted data.source.csv=labels.csv \\
        data.source.splits=null data.source.spacing_column=spacing 'data.train_splits=[all]' data.test_split=null \\
        hydra.run.dir=/tmp/isbi_shifted_datacheck
    python evaluate.py ckpt_path=<run>/checkpoints/best.ckpt data=csv data.source.root=/tmp/isbi_shifted \\
        data.source.csv=labels.csv data.source.splits=null data.source.spacing_column=spacing \\
        'data.train_splits=[all]' data.input_size=<the checkpoint's, e.g. [192,160]> split=all \\
        hydra.run.dir=/tmp/isbi_shifted_eval

`split=all` scores the whole CSV (the source's split "all"); `data.train_splits=[all]` only gives the data module
a pool to carve (an empty one is refused); `data.input_size` must be the checkpoint's (data=csv replaces its
stored data config). Use the same `--seed` as the training runs compared, so none of these images was trained on.
"""

from __future__ import annotations

import argparse
import math
import re
import sys
import zlib
from dataclasses import dataclass
from pathlib import Path

import cv2
import numpy as np
import pandas as pd

from landmark_exp.data.images import read_grey
from landmark_exp.data.records import DataError, Record

PORION, NASION = 3, 1  # 0-based ISBI 2015 landmark indices (the ring is placed by porion, the ruler by nasion)


@dataclass(frozen=True)
class ShiftConfig:
    """The ranges each copy's shifts are drawn from (defaults: the real 1935x2400 ISBI images); tests shrink the
    output width for tiny fixture images, where hardware is left out (`hardware_min_side`)."""

    crop_fraction: tuple[float, float] = (0.72, 0.88)
    aspect_jitter: float = 0.04  # the window's height fraction differs from its width fraction by up to this
    margin: float = 0.03  # landmarks at least this fraction of the window from its edges
    rotation_deg: float = 6.0
    out_width: tuple[int, int] = (1100, 1600)
    gamma: tuple[float, float] = (0.7, 1.4)
    contrast: tuple[float, float] = (0.75, 1.3)
    brightness: float = 0.1
    s_curve_probability: float = 0.5
    ramp: tuple[float, float] = (0.0, 0.25)
    blur_sigma: tuple[float, float] = (0.0, 1.5)
    noise: tuple[float, float] = (0.0, 0.04)
    jpeg_quality: tuple[int, int] = (85, 95)
    ring_radius_mm: tuple[float, float] = (4.0, 7.0)  # cephalostat ear rods: ~5 mm on the second site, ~6 on ISBI
    ring_offset_mm: tuple[float, float] = (5.0, 15.0)
    ruler_width_mm: tuple[float, float] = (4.0, 7.0)
    clearance_mm: float = 2.0  # hardware stays this far from every landmark
    hardware_min_side: int = 400  # smaller outputs get no hardware (no room for it)


@dataclass
class Shifted:
    """One generated copy: its pixels, landmarks, spacing and every parameter drawn (a row of shifts.csv)."""

    image: np.ndarray
    landmarks: np.ndarray
    spacing: float
    params: dict


def rng_for(seed: int, image_id: str, variant: int) -> np.random.Generator:
    """A generator fixed by (seed, id, variant) alone, so one copy never depends on which others were made."""
    return np.random.default_rng([seed, zlib.crc32(image_id.encode()), variant])


def rotation(angle_deg: float) -> np.ndarray:
    a = math.radians(angle_deg)
    return np.array([[math.cos(a), -math.sin(a)], [math.sin(a), math.cos(a)]])


def place_window(landmarks: np.ndarray, image_hw: tuple[int, int], angle: float, size: tuple[int, int],
                 margin: float, rng: np.random.Generator, tries: int = 100) -> tuple[np.ndarray, tuple[int, int], bool]:
    """(window centre in source pixels, window (w, h), inside) for a window of `size` rotated by `angle` about its
    centre that holds every landmark `margin` x its size from its edges. The centre is drawn uniformly among those
    that hold the landmarks, preferring ones whose corners stay inside the image; a window too small for the
    landmarks is grown to the smallest that holds them."""
    H, W = image_hw
    rot = rotation(angle)
    q = landmarks @ rot.T  # landmarks in the rotated frame (centre-independent part)
    w, h = size
    span = q.max(axis=0) - q.min(axis=0)
    # grow a window whose inner part (without margins) is narrower than the landmarks' extent
    w = max(w, math.ceil((span[0] + 1) / (1 - 2 * margin)) + 2)
    h = max(h, math.ceil((span[1] + 1) / (1 - 2 * margin)) + 2)
    half = np.array([(w - 1) / 2, (h - 1) / 2])
    m = np.array([margin * w, margin * h])
    lo, hi = q.max(axis=0) - half + m, q.min(axis=0) + half - m
    corners = np.array([[sx * (w / 2), sy * (h / 2)] for sx in (-1, 1) for sy in (-1, 1)]) @ rot  # rot^T applied
    best, best_out = None, np.inf
    for _ in range(tries):
        v = rng.uniform(lo, hi)
        c = rot.T @ v
        pts = c + corners
        out = (np.maximum(0, -0.5 - pts) + np.maximum(0, pts - [W - 0.5, H - 0.5])).sum()
        if out < best_out:
            best, best_out = c, out
        if out == 0:
            break
    return best, (w, h), best_out == 0


def window_affine(centre: np.ndarray, angle: float, size: tuple[int, int]) -> np.ndarray:
    """2x3 map from source pixels to window pixels (pixel centres at integers): rotate about `centre`."""
    rot = rotation(angle)
    w, h = size
    offset = np.array([(w - 1) / 2, (h - 1) / 2]) - rot @ centre
    return np.hstack([rot, offset[:, None]])


def reframe(image: np.ndarray, landmarks: np.ndarray, spacing: float, cfg: ShiftConfig,
            rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray, float, dict]:
    """Rotation, crop and resize of a float image; landmarks mapped exactly; the new spacing in mm/px."""
    H, W = image.shape
    angle = float(rng.uniform(-cfg.rotation_deg, cfg.rotation_deg))
    f = float(rng.uniform(*cfg.crop_fraction))
    fh = float(np.clip(f * rng.uniform(1 - cfg.aspect_jitter, 1 + cfg.aspect_jitter), *cfg.crop_fraction))
    centre, (w, h), inside = place_window(landmarks, (H, W), angle, (round(f * W), round(fh * H)), cfg.margin, rng)
    M = window_affine(centre, angle, (w, h))
    crop = cv2.warpAffine(image, M, (w, h), flags=cv2.INTER_LINEAR, borderMode=cv2.BORDER_REPLICATE)
    new_w = int(rng.integers(cfg.out_width[0], cfg.out_width[1] + 1))
    new_h = max(1, round(h * new_w / w))
    out = cv2.resize(crop, (new_w, new_h), interpolation=cv2.INTER_AREA if new_w < w else cv2.INTER_CUBIC)
    u = landmarks @ M[:, :2].T + M[:, 2]
    scale = np.array([new_w / w, new_h / h])
    pts = (u + 0.5) * scale - 0.5  # what cv2.resize does to pixel centres
    new_spacing = spacing * w / new_w
    params = {"angle_deg": angle, "crop_centre_x": centre[0], "crop_centre_y": centre[1], "crop_w": w, "crop_h": h,
              "crop_inside_image": inside, "out_w": new_w, "out_h": new_h, "spacing": new_spacing}
    return np.clip(out, 0.0, 1.0), pts, new_spacing, params


def s_curve(x: np.ndarray, k: float) -> np.ndarray:
    """A logistic tone curve through (0, 0), (0.5, 0.5), (1, 1): more mid-tone contrast."""
    lo, hi = 1 / (1 + math.exp(k / 2)), 1 / (1 + math.exp(-k / 2))
    return (1 / (1 + np.exp(-k * (x - 0.5))) - lo) / (hi - lo)


def tone(image: np.ndarray, landmarks: np.ndarray, cfg: ShiftConfig, rng: np.random.Generator) -> tuple[np.ndarray, dict]:
    """Exposure and processing: gamma, contrast/brightness, an optional S curve, a soft-tissue-filter ramp."""
    g = float(math.exp(rng.uniform(math.log(cfg.gamma[0]), math.log(cfg.gamma[1]))))
    c = float(rng.uniform(*cfg.contrast))
    b = float(rng.uniform(-cfg.brightness, cfg.brightness))
    use_s = bool(rng.random() < cfg.s_curve_probability)
    k, mix = float(rng.uniform(3, 8)), float(rng.uniform(0.3, 1.0))
    strength = float(rng.uniform(*cfg.ramp))
    # the filter sits in front of the face: brighter towards it (three copies in four), the ramp's direction
    # within 30 degrees of the horizontal
    front = _front(landmarks)
    towards = front if rng.random() < 0.75 else -front
    phi = math.radians(rng.uniform(-30, 30))
    x = np.clip(image, 0, 1) ** g
    x = np.clip((x - 0.5) * c + 0.5 + b, 0, 1)
    if use_s:
        x = (1 - mix) * x + mix * s_curve(x, k)
    h, w = x.shape
    yy, xx = np.mgrid[0:h, 0:w].astype(np.float32)
    t = towards * math.cos(phi) * xx / max(w - 1, 1) + math.sin(phi) * yy / max(h - 1, 1)
    t = (t - t.min()) / max(float(t.max() - t.min()), 1e-6)
    x = np.clip(x + strength * (t - 0.5), 0, 1)
    return x, {"gamma": g, "contrast": c, "brightness": b, "s_curve_k": k if use_s else 0.0,
               "s_curve_mix": mix if use_s else 0.0, "ramp": strength, "ramp_towards": "front" if towards == front
               else "back", "ramp_tilt_deg": math.degrees(phi)}


def _front(landmarks: np.ndarray) -> int:
    """+1 when the face looks right (nasion in front of porion, as in ISBI images), -1 when it looks left."""
    if len(landmarks) <= max(PORION, NASION):
        return 1
    return 1 if landmarks[NASION, 0] >= landmarks[PORION, 0] else -1


def _clear(mask: np.ndarray, landmarks: np.ndarray, radius: float) -> bool:
    """No drawn pixel of `mask` within `radius` px of a landmark."""
    h, w = mask.shape
    r = math.ceil(radius)
    yy, xx = np.mgrid[-r:r + 1, -r:r + 1]
    disk = xx ** 2 + yy ** 2 <= radius ** 2
    for x, y in landmarks:
        cx, cy = round(x), round(y)
        x0, x1, y0, y1 = cx - r, cx + r + 1, cy - r, cy + r + 1
        sub = mask[max(0, y0):min(h, y1), max(0, x0):min(w, x1)]
        d = disk[max(0, y0) - y0:sub.shape[0] + max(0, y0) - y0, max(0, x0) - x0:sub.shape[1] + max(0, x0) - x0]
        if (sub[d] > 0).any():
            return False
    return True


def draw_ruler(canvas: np.ndarray, landmarks: np.ndarray, spacing: float, cfg: ShiftConfig,
               rng: np.random.Generator, tries: int = 50) -> dict:
    """A nasion relator's ruler: a bright vertical bar from near the top edge to about nasion height, in front of
    the face near the image's front edge, with darker millimetre ticks (long every 5 mm). Returns its placement
    ({} when no place keeps it `clearance_mm` from every landmark)."""
    h, w = canvas.shape
    mm = 1 / spacing
    front = _front(landmarks)
    clearance = cfg.clearance_mm * mm
    nasion_y = landmarks[NASION, 1] if len(landmarks) > NASION else h / 3
    for _ in range(tries):
        bw = max(3, round(rng.uniform(*cfg.ruler_width_mm) * mm))
        top = round(rng.uniform(-0.05, 0.1) * h)
        bottom = round(min(h - 1, max(top + 30 * mm, nasion_y + rng.uniform(-15, 10) * mm)))
        rows = (landmarks[:, 1] > top - clearance - bw) & (landmarks[:, 1] < bottom + clearance + bw)
        if front > 0:
            start = (landmarks[rows, 0].max() if rows.any() else 0) + clearance + 1
            lo, hi = max(start, w - bw - 0.12 * w), w - bw - 2
        else:
            start = (landmarks[rows, 0].min() if rows.any() else w) - clearance - bw - 1
            lo, hi = 2, min(start, 0.12 * w)
        if hi < lo:
            continue
        x0 = round(rng.uniform(lo, hi))
        mask = np.zeros_like(canvas)
        cv2.rectangle(mask, (x0, top), (x0 + bw - 1, bottom), 255, -1)
        if not _clear(mask, landmarks, clearance):
            continue
        level = int(rng.integers(215, 251))
        cv2.rectangle(canvas, (x0, top), (x0 + bw - 1, bottom), level, -1)
        tick = max(1, round(0.25 * mm))
        edge = x0 if front > 0 else x0 + bw - 1  # ticks from the edge facing the face
        for i, y in enumerate(np.arange(bottom - 2 * mm, max(top, 0), -mm)):
            length = (0.6 if i % 5 == 0 else 0.35) * bw
            x_end = edge + front * length
            cv2.line(canvas, (edge, round(y)), (round(x_end), round(y)), int(level * 0.55), tick)
        return {"ruler_x": x0, "ruler_top": top, "ruler_bottom": bottom, "ruler_width": bw}
    return {}


def draw_ring(canvas: np.ndarray, landmarks: np.ndarray, spacing: float, cfg: ShiftConfig,
              rng: np.random.Generator, tries: int = 200) -> dict:
    """An ear rod: a bright ring of radius 4-7 mm centred 5-15 mm from porion, `clearance_mm` from every
    landmark ({} when no draw keeps that clearance)."""
    if len(landmarks) <= PORION:
        return {}
    mm = 1 / spacing
    porion = landmarks[PORION]
    for _ in range(tries):
        r = rng.uniform(*cfg.ring_radius_mm) * mm
        d = rng.uniform(*cfg.ring_offset_mm) * mm
        a = rng.uniform(0, 2 * math.pi)
        cx, cy = porion[0] + d * math.cos(a), porion[1] + d * math.sin(a)
        thick = max(2, round(rng.uniform(1.0, 1.8) * mm))
        mask = np.zeros_like(canvas)
        cv2.circle(mask, (round(cx), round(cy)), round(r), 255, thick, lineType=cv2.LINE_AA)
        if not _clear(mask, landmarks, cfg.clearance_mm * mm):
            continue
        level = int(rng.integers(225, 256))
        cv2.circle(canvas, (round(cx), round(cy)), round(r), level, thick, lineType=cv2.LINE_AA)
        return {"ring_x": cx, "ring_y": cy, "ring_radius_mm": r / mm, "ring_offset_mm": d / mm}
    return {}


def shift_image(image: np.ndarray, landmarks: np.ndarray, spacing: float, seed: int, image_id: str, variant: int,
                cfg: ShiftConfig = ShiftConfig()) -> Shifted:
    """One shifted copy of a float [0, 1] image (its JPEG quality is in params, applied when saved)."""
    rng = rng_for(seed, image_id, variant)
    params: dict = {"source_id": image_id, "variant": variant}
    x, pts, new_spacing, p = reframe(image.astype(np.float32), landmarks, spacing, cfg, rng)
    params |= p
    x, p = tone(x, pts, cfg, rng)
    params |= p
    canvas = np.clip(np.rint(x * 255), 0, 255).astype(np.uint8)
    hardware = min(canvas.shape) >= cfg.hardware_min_side
    # each part draws from its own generator, so the copy's other shifts do not depend on whether it fits
    ruler_rng, ring_rng = (np.random.default_rng(s) for s in rng.integers(2**62, size=2))
    ruler = draw_ruler(canvas, pts, new_spacing, cfg, ruler_rng) if hardware else {}
    ring = draw_ring(canvas, pts, new_spacing, cfg, ring_rng) if hardware else {}
    params |= {"ruler": bool(ruler), "ring": bool(ring), **ruler, **ring}
    sigma = float(rng.uniform(*cfg.blur_sigma))
    noise = float(rng.uniform(*cfg.noise))
    out = canvas.astype(np.float32)
    if sigma > 0.05:
        out = cv2.GaussianBlur(out, (0, 0), sigma)
    out += rng.normal(0, noise * 255, out.shape).astype(np.float32)
    params |= {"blur_sigma": sigma, "noise": noise,
               "jpeg_quality": int(rng.integers(cfg.jpeg_quality[0], cfg.jpeg_quality[1] + 1))}
    return Shifted(np.clip(np.rint(out), 0, 255).astype(np.uint8), pts, new_spacing, params)


def validation_records(root: Path, seed: int) -> list[Record]:
    """The validation split a training run with `seed=<seed>` and `data=isbi2015` carves: the real config composed
    and built through the registry as train.py builds it (no image cache, nothing decoded)."""
    from hydra import compose, initialize_config_dir
    from hydra.core.global_hydra import GlobalHydra

    import landmark_exp
    from landmark_exp.registry import build

    conf = Path(landmark_exp.__file__).resolve().parent / "conf"
    GlobalHydra.instance().clear()
    try:
        with initialize_config_dir(str(conf), version_base="1.3"):
            cfg = compose("train", overrides=["data=isbi2015", f"data.source.root={root}", f"seed={seed}",
                                              "data.cache_dir=null"])
    finally:
        GlobalHydra.instance().clear()
    dm = build(cfg.data, "data")
    return dm.split_records()["val"]


FIELDS = ["image_path"] + [f"{n}_{a}" for n in range(1, 20) for a in "xy"] + ["spacing"]
OURS = re.compile(r".+_v\d+\.jpg$")


def prepare_out(out: Path, overwrite: bool) -> None:
    """Refuse a non-empty folder unless `overwrite`; then only this tool's own files there are replaced."""
    if out.exists() and not out.is_dir():
        raise DataError(f"--out {out}: exists and is not a folder")
    if out.is_dir() and any(out.iterdir()):
        if not overwrite:
            raise DataError(f"--out {out}: not empty; choose an empty folder or add --overwrite")
        images = out / "images"
        if images.is_dir():
            for f in images.iterdir():
                if f.is_file() and OURS.match(f.name):
                    f.unlink()  # stale copies (e.g. of a run with more variants) would be unlisted images
    (out / "images").mkdir(parents=True, exist_ok=True)


def generate(root: Path, out: Path, seed: int = 42, variants: int = 3, cfg: ShiftConfig = ShiftConfig(),
             overwrite: bool = False) -> pd.DataFrame:
    """Write the shifted set into `out`; returns shifts.csv's table (one row per copy)."""
    if variants < 1:
        raise DataError(f"--variants must be at least 1, got {variants}")
    records = validation_records(root, seed)
    if records[0].landmarks.shape != (19, 2):
        raise DataError(f"{records[0].annotation_path}: {len(records[0].landmarks)} landmarks; this tool writes "
                        "ISBI 2015's 19")
    prepare_out(out, overwrite)
    ids = [r.id for r in records]
    print(f"validation images (seed {seed}, {len(ids)}): {' '.join(ids)}")
    rows, labels = [], []
    for rec in records:
        image = read_grey(rec.image_path)
        for k in range(variants):
            s = shift_image(image, rec.landmarks, float(rec.spacing[0]), seed, rec.id, k, cfg)
            name = f"{rec.id}_v{k}.jpg"
            if not cv2.imwrite(str(out / "images" / name), s.image,
                               [cv2.IMWRITE_JPEG_QUALITY, s.params["jpeg_quality"]]):
                raise DataError(f"{out / 'images' / name}: could not be written")
            labels.append([name, *(f"{v:.2f}" for v in s.landmarks.reshape(-1)), f"{s.spacing:.6f}"])
            rows.append({"image_path": name, **s.params})
    pd.DataFrame(labels, columns=FIELDS).to_csv(out / "labels.csv", index=False)
    table = pd.DataFrame(rows)
    table.to_csv(out / "shifts.csv", index=False, float_format="%.4f")
    (out / "README.md").write_text(readme(root, ids, seed, variants, cfg, table))
    print(f"{len(labels)} images written to {out} (labels.csv, shifts.csv, README.md)")
    return table


def readme(root: Path, ids: list[str], seed: int, variants: int, cfg: ShiftConfig, table: pd.DataFrame) -> str:
    """What the folder is, from which images, and each shift's range (the module docstring, as data)."""
    return f"""# Simulated other-site validation set (from ISBI 2015 training images)

Written by `python -m benchmarks.shifted_isbi --root {root} --seed {seed} --variants {variants}`.
Source: the {len(ids)} validation images that a training run with `seed={seed}` and `data=isbi2015` carves
from ISBI 2015 training data (val_fraction of the config): {' '.join(ids)}.
Each has {variants} shifted copies `images/<id>_v<k>.jpg`, each fixed by (seed, id, k). Do not score a model
trained with another seed on it: some of these images were in its training split.

Files: `labels.csv` (images + CSV layout: `image_path,1_x,1_y,...,19_x,19_y,spacing`; pixels of the copy,
x = column, y = row, pixel centres at integers; `spacing` mm/px of the copy), `shifts.csv` (every parameter
drawn for each copy), this README.

Shifts (in this order):
- framing: rotation {-cfg.rotation_deg:g}..{cfg.rotation_deg:g} degrees about the window centre, a window of
  {cfg.crop_fraction[0]:.0%}-{cfg.crop_fraction[1]:.0%} of the width and height (height fraction within
  {cfg.aspect_jitter:.0%} of the width's) holding every landmark at least {cfg.margin:.0%} of the window from
  its edges (where a window corner leaves the image its border pixels are repeated: in
  {int((~table.crop_inside_image).sum())} of {len(table)} copies), resized to a width of {cfg.out_width[0]}-{cfg.out_width[1]} px, aspect kept. spacing = 0.1 * crop
  width / new width ({table.spacing.min():.4f}-{table.spacing.max():.4f} mm/px here).
- intensity: gamma {cfg.gamma[0]:g}-{cfg.gamma[1]:g}; contrast x{cfg.contrast[0]:g}-{cfg.contrast[1]:g} about
  mid-grey and brightness +-{cfg.brightness:g} of the range; an S-shaped logistic tone curve (slope 3-8, mixed
  30-100 %) in {cfg.s_curve_probability:.0%} of copies; a linear brightness ramp (soft-tissue filter) of
  {cfg.ramp[0]:.0%}-{cfg.ramp[1]:.0%} of the range, brighter towards the face in 3 copies of 4, tilted up to
  30 degrees from the horizontal.
- hardware (8-bit, OpenCV, only on images of at least {cfg.hardware_min_side} px): a bright vertical ruler
  {cfg.ruler_width_mm[0]:g}-{cfg.ruler_width_mm[1]:g} mm wide with darker ticks every mm (long every 5 mm) from
  near the top edge to about nasion height, in front of the face near the front edge ({int(table.ruler.sum())}
  of {len(table)} copies); a bright ring (ear rod) of radius {cfg.ring_radius_mm[0]:g}-{cfg.ring_radius_mm[1]:g}
  mm centred {cfg.ring_offset_mm[0]:g}-{cfg.ring_offset_mm[1]:g} mm from porion ({int(table.ring.sum())} of
  {len(table)} copies); neither within {cfg.clearance_mm:g} mm of a landmark. (ISBI images already show their
  own ear rods and nasion relator; these are a second, differently placed set.)
- detector: Gaussian blur sigma {cfg.blur_sigma[0]:g}-{cfg.blur_sigma[1]:g} px, Gaussian noise std
  {cfg.noise[0]:.0%}-{cfg.noise[1]:.0%} of the range, JPEG quality {cfg.jpeg_quality[0]}-{cfg.jpeg_quality[1]}.

Score a checkpoint (data.input_size: the checkpoint's own):

    python evaluate.py ckpt_path=<run>/checkpoints/best.ckpt data=csv data.source.root=<this folder> \\
        data.source.csv=labels.csv data.source.splits=null data.source.spacing_column=spacing \\
        'data.train_splits=[all]' data.input_size=[192,160] split=all
"""


class _Parser(argparse.ArgumentParser):
    def error(self, message: str) -> None:  # type: ignore[override]
        """A wrong argument is one line and status 1, as every other error of this tool."""
        print(f"shifted_isbi: error: {message}", file=sys.stderr)
        sys.exit(1)


def main(argv: list[str] | None = None) -> int:
    ap = _Parser(prog="python -m benchmarks.shifted_isbi", description=__doc__.split("\n\n")[0])
    ap.add_argument("--root", required=True, type=Path, help="ISBI 2015 layout (RawImage/, AnnotationsByMD/)")
    ap.add_argument("--out", required=True, type=Path, help="output folder (empty, or --overwrite)")
    ap.add_argument("--seed", type=int, default=42, help="the training runs' seed: whose validation split")
    ap.add_argument("--variants", type=int, default=3, help="shifted copies per image")
    ap.add_argument("--overwrite", action="store_true", help="write into a non-empty --out")
    args = ap.parse_args(argv)
    try:
        generate(args.root, args.out, args.seed, args.variants, overwrite=args.overwrite)
    except (DataError, OSError) as e:
        print(f"shifted_isbi: error: {' '.join(str(e).split())}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())

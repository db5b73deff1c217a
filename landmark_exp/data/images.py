"""Image files -> normalised greyscale arrays at model resolution, decoded once.

Decoding a 2400x1935 X-ray costs tens of milliseconds and a training run reads each image hundreds of times:
`ImageCache` resizes once and keeps the result in memory and (optionally) on disk, keyed by the source
file's identity and the preprocessing, so a changed file or a new input size never reuses a stale entry.
"""

from __future__ import annotations

import functools
import hashlib
import os
from collections import deque
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from pathlib import Path
from typing import Any

import numpy as np

from landmark_exp.data.decoding import decode
from landmark_exp.data.geometry import Geometry, resize_image
from landmark_exp.data.records import DataError, Record
from landmark_exp.files import atomic_open

CACHE_VERSION = 2  # 2: colour JPEGs read as their own luma (Y) channel
NORMALIZATIONS = ("dtype", "minmax", "percentile")


def read_grey(path: Path | str, normalize: str = "dtype", *, max_pixels: int | None = None,
              min_side: int | None = None) -> np.ndarray:
    """Any common greyscale storage (8/16-bit, RGB with R=G=B, palette, DICOM) as float32 in [0, 1].

    "dtype" divides by the storage's maximum, so all images of one dataset share one scale; "minmax"
    stretches each image to [0, 1] (16-bit detectors that fill only 12 bits); "percentile" maps each
    image's 1st..99th percentile to [0, 1], so another scanner's exposure lands on the same scale and a few
    saturated pixels (a metal ruler, ear rods) do not decide it. `decoding.decode` says what is refused
    (None: its MAX_PIXELS and MIN_SIDE).
    """
    arr = decode(Path(path), max_pixels, min_side)
    if normalize == "dtype":
        return arr
    if normalize == "minmax":
        lo, hi = float(arr.min()), float(arr.max())
    elif normalize == "percentile":
        lo, hi = (float(v) for v in np.percentile(arr[::4, ::4], (1, 99)))
    else:
        raise ValueError(f"unknown normalize={normalize!r} (expected one of {', '.join(NORMALIZATIONS)})")
    out = (arr - lo) / (hi - lo if hi > lo else 1.0)
    return (out if normalize == "minmax" else np.clip(out, 0.0, 1.0)).astype(np.float32)


def read_ahead(paths: Sequence[Path], normalize: str = "dtype", workers: int | None = None,
               depth: int | None = None, then: Callable[[np.ndarray], Any] | None = None, *,
               max_pixels: int | None = None, min_side: int | None = None) -> Iterator[Any]:
    """`read_grey` for each path, in order, decoded `workers` at a time in threads up to `depth` files ahead,
    so the next images decode while the network runs (PIL and OpenCV release the GIL). `then` (e.g. the
    resize to the network input) runs on each image in the same thread, and its result is yielded instead.
    A file that cannot be read or is refused yields its DataError in its place, and the rest are still read.
    workers=1: one file at a time, no threads."""
    def read(path: Path) -> Any:
        try:
            image = read_grey(path, normalize, max_pixels=max_pixels, min_side=min_side)
            return image if then is None else then(image)
        except DataError as e:
            return e

    workers = workers or min(4, os.cpu_count() or 1)
    if workers <= 1:
        yield from map(read, paths)
        return
    depth = max(depth or 2 * workers, workers)
    with ThreadPoolExecutor(workers) as pool:
        pending: deque[Future] = deque(pool.submit(read, p) for p in paths[:depth])
        for nxt in paths[depth:]:
            yield pending.popleft().result()
            pending.append(pool.submit(read, nxt))
        while pending:
            yield pending.popleft().result()


def same_files(a: Sequence[Path | str], b: Sequence[Path | str]) -> list[tuple[int, int]]:
    """(i, j) for each a[i] whose bytes are those of b[j]: the same image under two names (ISBI 2015's training
    038 and 144 are Test1's 283 and 173). Only files whose sizes match are read, so this costs a stat per file."""
    def size(path: Path | str) -> int:
        try:
            return os.stat(path).st_size
        except OSError:
            return -1

    @functools.cache
    def digest(path: str) -> str:
        with open(path, "rb") as fh:
            return hashlib.file_digest(fh, "blake2b").hexdigest()

    by_size: dict[int, list[int]] = {}
    for j, path in enumerate(b):
        by_size.setdefault(size(path), []).append(j)
    return [(i, j) for i, path in enumerate(a) if (n := size(path)) >= 0 for j in by_size.get(n, [])
            if digest(str(path)) == digest(str(b[j]))]


def model_input(full: np.ndarray, input_size: tuple[int, int], letterbox: bool = False) -> np.ndarray:
    """The network's view of a decoded image: resized, stored as float16 (what training saw, so
    prediction on a new image matches evaluation on the same file bit for bit)."""
    return resize_image(full, input_size, letterbox).astype(np.float16)


class ImageCache:
    """Resized images in memory, backed by `cache_dir` (None: memory only)."""

    def __init__(self, input_size: tuple[int, int], letterbox: bool = False, normalize: str = "dtype",
                 cache_dir: Path | str | None = None) -> None:
        self.input_size = (int(input_size[0]), int(input_size[1]))
        self.letterbox = bool(letterbox)
        self.normalize = normalize
        self.cache_dir = Path(cache_dir) if cache_dir else None
        self._memory: dict[str, tuple[np.ndarray, tuple[int, int]]] = {}
        self.decoded = 0  # how many times an original file was decoded (benchmarks and tests read it)

    def key(self, path: Path) -> str:
        st = path.stat()
        ident = (f"{path.resolve()}|{st.st_size}|{st.st_mtime_ns}|{self.input_size}|{self.letterbox}|"
                 f"{self.normalize}|{CACHE_VERSION}")
        return hashlib.sha1(ident.encode()).hexdigest()

    def get(self, record: Record) -> tuple[np.ndarray, tuple[int, int]]:
        """(float16 image at input_size, original (height, width))."""
        path = Path(record.image_path)
        if not path.is_file():
            raise DataError(f"{path}: image file not found")
        k = self.key(path)
        hit = self._memory.get(k) or self._read_disk(k)
        if hit is None:
            full = read_grey(path, self.normalize)
            self.decoded += 1
            hit = (model_input(full, self.input_size, self.letterbox), (int(full.shape[0]), int(full.shape[1])))
            if self.cache_dir is not None:
                with atomic_open(self.cache_dir / f"{k}.npz") as fh:
                    np.savez(fh, image=hit[0], orig_hw=np.array(hit[1]))
        self._memory[k] = hit
        return hit

    def get_many(self, records: list[Record]) -> list[tuple[np.ndarray, tuple[int, int]] | DataError]:
        """`get` in threads (PIL and cv2 release the GIL); a file that cannot be read gives its DataError in
        its place, so the caller can raise it or skip that sample and say so."""
        def one(r: Record) -> tuple[np.ndarray, tuple[int, int]] | DataError:
            try:
                return self.get(r)
            except DataError as e:
                return e

        with ThreadPoolExecutor(min(8, os.cpu_count() or 1)) as pool:
            return list(pool.map(one, records))

    def geometry(self, orig_hw: tuple[int, int]) -> Geometry:
        return Geometry.for_resize(orig_hw, self.input_size, self.letterbox)

    def _read_disk(self, k: str) -> tuple[np.ndarray, tuple[int, int]] | None:
        if self.cache_dir is None or not (f := self.cache_dir / f"{k}.npz").is_file():
            return None
        try:
            with np.load(f) as z:
                return z["image"], (int(z["orig_hw"][0]), int(z["orig_hw"][1]))
        except Exception:  # a corrupt cache entry is rebuilt, never trusted
            return None

"""Image files -> normalised greyscale arrays at model resolution, decoded once.

Every reader goes through `read_grey`: PNG/JPEG/BMP/TIFF via Pillow and DICOM via
pydicom (16-bit, MONOCHROME1 inverted so bone is always bright); `dicom_spacing`
gives a DICOM's own pixel spacing.

Before the pixels reach the network each file is checked, and a bad one is refused with a one-line
`DataError` naming it: a header claiming more than `max_pixels` (a decompression bomb, refused from the
header, before a byte is decoded), a side shorter than `min_side` (landmarks on a 1x1 image are
meaningless), pixel data that ends early (PIL would zero-fill the missing rows), and NaN/inf pixels.

Decoding a 2400x1935 X-ray costs tens of milliseconds; a training run reads each
image hundreds of times. `ImageCache` resizes once and keeps the result in memory
and (optionally) on disk, keyed by the source file's identity and the
preprocessing, so a changed file or a new input size never reuses a stale entry.
"""

from __future__ import annotations

import hashlib
import math
import os
import tempfile
from collections import deque
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image, ImageFile, UnidentifiedImageError

from landmark_exp.data.geometry import Geometry, resize_image
from landmark_exp.data.records import DataError, Record

CACHE_VERSION = 2  # 2: colour JPEGs read as their own luma (Y) channel
DICOM_EXTENSIONS = (".dcm", ".dicom")
# pydicom raises many types for a broken file or an unsupported encoding; all are the file's problem
_DICOM_ERRORS = (OSError, ValueError, AttributeError, KeyError, IndexError, TypeError, NotImplementedError, RuntimeError, EOFError)
# what Pillow raises for a file it cannot decode; all are the file's problem
_PIL_ERRORS = (UnidentifiedImageError, OSError, SyntaxError, ValueError, EOFError, Image.DecompressionBombError)
MAX_PIXELS = 100_000_000  # 100 megapixels: far above any X-ray (43x43 cm at 0.1 mm is 18.5 MP), far below a bomb
MIN_SIDE = 2  # shorter side: a 1-pixel dot or line holds no anatomy (the issue asked 32; tests read 2x2 to 40x30 images)


def is_dicom(path: Path | str) -> bool:
    """A .dcm/.dicom name, or the 'DICM' magic after the 128-byte preamble (DICOM files often have no extension)."""
    path = Path(path)
    if path.suffix.lower() in DICOM_EXTENSIONS:
        return True
    try:
        with open(path, "rb") as fh:
            head = fh.read(132)
    except OSError:
        return False
    return len(head) == 132 and head[128:] == b"DICM"


NORMALIZATIONS = ("dtype", "minmax", "percentile")


def read_grey(path: Path | str, normalize: str = "dtype", *, max_pixels: int | None = None,
              min_side: int | None = None) -> np.ndarray:
    """Read any common greyscale storage (8/16-bit, RGB with R=G=B, palette) as float32 in [0, 1].

    normalize="dtype" divides by the storage's maximum (255 or 65535) so that all
    images of one dataset share one scale; "minmax" stretches each image to [0, 1]
    (useful for 16-bit detectors that fill only 12 bits); "percentile" maps each image's
    1st..99th percentile to [0, 1] (robust to another site's exposure).
    A file over `max_pixels` (None: MAX_PIXELS) or with a side under `min_side` (None: MIN_SIDE) is
    refused from its header, before decoding; so are pixel data that ends early and NaN/inf pixels.
    Every refusal is a one-line DataError "<path>: <reason>".
    """
    path = Path(path)
    max_pixels = MAX_PIXELS if max_pixels is None else int(max_pixels)
    min_side = MIN_SIDE if min_side is None else int(min_side)
    if not path.is_file():
        raise DataError(f"{path}: image file not found")
    arr = _read_dicom(path, max_pixels, min_side) if is_dicom(path) else _read_pil(path, max_pixels, min_side)
    if normalize == "minmax":
        lo, hi = float(arr.min()), float(arr.max())
        return ((arr - lo) / (hi - lo if hi > lo else 1.0)).astype(np.float32)
    if normalize == "percentile":
        # 1st..99th percentile to [0, 1]: another scanner's exposure and contrast land on the same scale,
        # and a few saturated pixels (a metal ruler, ear rods) do not decide it as they would for minmax
        lo, hi = (float(v) for v in np.percentile(arr[::4, ::4], (1, 99)))
        return np.clip((arr - lo) / (hi - lo if hi > lo else 1.0), 0.0, 1.0).astype(np.float32)
    if normalize != "dtype":
        raise ValueError(f"unknown normalize={normalize!r} (expected one of {', '.join(NORMALIZATIONS)})")
    return arr


def read_ahead(paths: Sequence[Path], normalize: str = "dtype", workers: int | None = None,
               depth: int | None = None, then: Callable[[np.ndarray], Any] | None = None, *,
               max_pixels: int | None = None, min_side: int | None = None) -> Iterator[Any]:
    """`read_grey` for each path, in order, decoded `workers` at a time in threads up to `depth` files ahead,
    so the next images decode while the network runs (PIL and OpenCV release the GIL). `then` (e.g. the
    resize to the network input) runs on each image in the same thread, and its result is yielded instead.
    A file that cannot be read, or that `read_grey`'s checks refuse (`max_pixels`, `min_side`, truncated,
    non-finite), yields its DataError in its place, and the rest are still read.
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


def _read_pil(path: Path, max_pixels: int, min_side: int) -> np.ndarray:
    """PNG/JPEG/BMP/TIFF as float32 in [0, 1], the size checked from the header before any pixel is decoded."""
    _own_pil_checks()
    try:
        with Image.open(path) as im:  # parses the header only
            _check_size(path, im.width, im.height, max_pixels, min_side)
            if im.format == "JPEG" and _has_neutral_chroma(path):
                im.draft("L", im.size)  # luma only, full size: the chroma IDCT, upsampling and colour conversion skipped
            fills = _row_fills(im.mode) if im.format == "PNG" else None
            if fills is not None and not _prefill(im, fills[0], _last_decoded_row(im)):
                fills = None
            im.load()
            if fills is not None:
                _check_rows_written(path, im, fills)
            return _to_grey_array(im, path)
    except DataError:
        raise
    except _PIL_ERRORS as e:
        what = "image data truncated, cannot read image" if "truncated" in str(e) else "cannot read image"
        raise DataError(f"{path}: {what} ({_one_line(e)})") from None


def _own_pil_checks() -> None:
    """Pillow's process-wide switches, set so that this module's checks are the ones that apply.

    MAX_IMAGE_PIXELS=None: Pillow's own bomb check would warn from 89 megapixels and raise a traceback-y
    DecompressionBombError from 179, with its own limit; `_check_size` refuses over `max_pixels` instead,
    from the same header. LOAD_TRUNCATED_IMAGES=False: a cut file raises instead of being zero-filled
    (a library that turned it on would otherwise make us read half an image). Set on every read, as
    another import may have changed them.
    """
    Image.MAX_IMAGE_PIXELS = None
    ImageFile.LOAD_TRUNCATED_IMAGES = False


def _check_size(path: Path | str, width: int, height: int, max_pixels: int, min_side: int) -> None:
    """Refuse an image by its header's size: over `max_pixels` (a bomb: a few KB that decode to GBs) or
    with a side under `min_side` (nothing to find landmarks in; predictions would fall outside it)."""
    pixels = width * height
    if pixels > max_pixels:
        raise DataError(f"{path}: {width} x {height} pixels ({pixels / 1e6:.1f} megapixels) is over the "
                        f"{max_pixels / 1e6:g}-megapixel limit (max_pixels)")
    if min(width, height) < min_side:
        raise DataError(f"{path}: {width} x {height} pixels is below the {min_side}-pixel minimum side (min_side)")


def _check_finite(path: Path | str, a: np.ndarray) -> None:
    """Refuse NaN/inf pixels (float TIFF or DICOM): they would reach the network as NaN heatmaps. One pass
    over float arrays only; integer pixels cannot be non-finite."""
    if a.dtype.kind == "f" and not np.isfinite(a).all():
        n = a.size - int(np.count_nonzero(np.isfinite(a)))
        raise DataError(f"{path}: {n} non-finite pixel values (NaN or infinity)")


def _row_fills(mode: str) -> tuple[int, int]:
    """Two distinct fill values for a mode's pixels (see `_check_rows_written`)."""
    if mode == "1":
        return 1, 0
    if mode.startswith("I"):
        return 0xA5A5, 0x5A5A
    return 0xA5, 0x5A


def _last_decoded_row(im: Image.Image) -> int:
    """The row a PNG decoder writes last: the bottom one, or in an Adam7-interlaced file the bottom odd row
    (pass 7, the last pass, fills the odd rows)."""
    h = im.height
    return h - 1 if not im.info.get("interlace") or h % 2 == 0 or h < 2 else h - 2


def _prefill(im: Image.Image, value: int, row: int | None = None) -> bool:
    """Give the decoder an image memory holding `value` (in one `row` only, or everywhere) instead of zeros;
    False where the mode cannot be filled. One row costs nothing; Pillow fills a whole 16-bit image
    pixel by pixel (13 ms for 2400x1935), so the whole fill is kept for the rare second decode."""
    bands = len(im.getbands())
    colour = value if bands == 1 else (value,) * bands
    try:
        if row is None:
            canvas = Image.new(im.mode, im.size, colour)
        else:
            canvas = Image.new(im.mode, im.size, None)  # None: zeroed memory, not a fill (color defaults to 0)
            canvas.paste(colour, (0, row, im.width, row + 1))
        im.im = canvas.im
    except (ValueError, TypeError, AttributeError):
        return False
    return True


def _check_rows_written(path: Path, im: Image.Image, fills: tuple[int, int]) -> None:
    """Refuse a PNG whose compressed data ends before its last row, which Pillow accepts silently.

    Pillow's PNG decoder stops without an error when the zlib stream ends early, leaving the remaining rows
    as they were in memory (zeros: a plausible black image). The row decoded last was pre-filled with
    fills[0]; still holding fills[0] everywhere means either a missing row or a real row of that one value.
    Only then (rare) is the file decoded again over fills[1]: rows holding both fills (zeros, then fills[1],
    for rows other than the last) are the ones the file does not have.
    """
    last = _last_decoded_row(im)
    if not _row_is(im, last, fills[0]):
        return
    with Image.open(path) as again:
        if not _prefill(again, fills[1]):
            return
        again.load()
        h = im.height
        first = (np.asarray(im) == 0).reshape(h, -1).all(axis=1)
        first[last] = True  # held fills[0]
        missing = first & (np.asarray(again) == fills[1]).reshape(h, -1).all(axis=1)
    if missing[last]:
        raise DataError(f"{path}: image data truncated, cannot read image "
                        f"({int(missing.sum())} of {h} pixel rows missing from the file)")


def _row_is(im: Image.Image, y: int, value: int) -> bool:
    return bool((np.asarray(im.crop((0, y, im.width, y + 1))) == value).all())


def _has_neutral_chroma(path: Path) -> bool:
    """Whether a colour JPEG is grey saved as RGB, so its luma channel alone is the image.

    X-rays are often saved as 3-channel JPEGs with R=G=B. Their chroma is constant 128, so the decoded
    RGB pixels equal the luma (Y) channel bit for bit, and decoding only Y is ~2x faster on a 2400x1935
    image. The test decodes the chroma at 1/8 scale (block means only, a few ms): neutral everywhere
    means grey. A truly colour JPEG (e.g. ISBI Test1 300.jpg) fails it and is read in full and converted
    as before. The one case this misreads, chroma that averages to exactly neutral in every block yet
    varies inside, is read as its luma, the grey convert("L") approximates to within rounding.
    """
    try:
        with Image.open(path) as probe:
            if probe.format != "JPEG" or probe.mode != "RGB":
                return False
            probe.draft("YCbCr", (max(1, probe.width // 8), max(1, probe.height // 8)))
            if probe.mode != "YCbCr":
                return False
            probe.load()
            _, cb, cr = probe.getextrema()
    except (OSError, SyntaxError, ValueError):  # not decodable this way: the full read reports or handles it
        return False
    return cb == (128, 128) and cr == (128, 128)


def _unit(a: np.ndarray, top: float) -> np.ndarray:
    """Integer pixels -> float32 in [0, 1], divided in place: one full-size float array, not two."""
    out = a.astype(np.float32)
    out /= np.float32(top)
    return out


def _to_grey_array(im: Image.Image, path: Path | str = "<image>") -> np.ndarray:
    if im.mode in ("I;16", "I;16B", "I;16L", "I;16N"):
        return _unit(np.asarray(im, dtype=np.uint16), 65535.0)
    if im.mode == "I":
        a = np.asarray(im, dtype=np.int64)
        top = 65535.0 if a.max() > 255 else 255.0
        return (a.astype(np.float32) / top).clip(0, 1)
    if im.mode == "F":
        a = np.asarray(im, dtype=np.float32)
        _check_finite(path, a)  # before the clip, which would turn inf into 0 or 1
        return a.clip(0, 1)
    if im.mode in ("RGB", "RGBA", "P", "PA", "LA", "1", "CMYK", "YCbCr"):
        if im.mode == "RGB":
            rgb = np.asarray(im)
            if np.array_equal(rgb[..., 0], rgb[..., 1]) and np.array_equal(rgb[..., 1], rgb[..., 2]):
                return _unit(rgb[..., 0], 255.0)
        im = im.convert("L")
    return _unit(np.asarray(im, dtype=np.uint8), 255.0)


def _one_line(e: BaseException) -> str:
    """An exception as `Type: message` on one line (pydicom's messages span several)."""
    return f"{type(e).__name__}: {' '.join(str(e).split())}"


def _dicom_dataset(path: Path, pixels: bool):
    import pydicom
    from pydicom.errors import InvalidDicomError

    try:
        return pydicom.dcmread(path, stop_before_pixels=not pixels)
    except (InvalidDicomError, *_DICOM_ERRORS) as e:
        raise DataError(f"{path}: cannot read DICOM ({_one_line(e)})") from None


def _read_dicom(path: Path, max_pixels: int, min_side: int) -> np.ndarray:
    """Stored values scaled by the stored bit depth's range (the DICOM analogue of 'dtype'), bright = dense.
    Size and frame count come from the header and are checked before the pixel data is decoded."""
    ds = _dicom_dataset(path, pixels=True)  # the pixel data's bytes are read, not decoded
    try:
        rows, columns = int(ds.get("Rows", 0) or 0), int(ds.get("Columns", 0) or 0)
        frames = int(ds.get("NumberOfFrames", 1) or 1)
    except _DICOM_ERRORS as e:
        raise DataError(f"{path}: cannot read DICOM ({_one_line(e)})") from None
    if rows and columns:  # absent: pydicom's decode below says what is missing
        _check_size(path, columns, rows, max_pixels, min_side)
    if frames > 1:
        raise DataError(f"{path}: multi-frame DICOM ({frames} frames) is not a single radiograph")
    try:
        arr = np.asarray(ds.pixel_array)
        photometric = str(ds.get("PhotometricInterpretation", "MONOCHROME2")).upper()
        samples = int(ds.get("SamplesPerPixel", 1))
        bits = int(ds.get("BitsStored", ds.get("BitsAllocated", 8 * arr.itemsize)))
        signed = int(ds.get("PixelRepresentation", 0)) == 1
    except _DICOM_ERRORS as e:
        # compressed transfer syntaxes need decoder plugins: pip install -e '.[dicom]' (pylibjpeg)
        raise DataError(f"{path}: cannot decode DICOM pixel data ({_one_line(e)})") from None
    _check_finite(path, arr)  # Float Pixel Data can hold NaN/inf
    if samples == 3 and arr.ndim == 3:  # colour: pydicom already converted YBR to RGB
        rgb = arr.astype(np.float32)
        same = np.array_equal(arr[..., 0], arr[..., 1]) and np.array_equal(arr[..., 1], arr[..., 2])
        grey = rgb[..., 0] if same else rgb @ np.array([0.299, 0.587, 0.114], dtype=np.float32)
        return (grey / float(2**bits - 1)).clip(0, 1).astype(np.float32)
    if arr.ndim != 2:
        raise DataError(f"{path}: DICOM pixel data of shape {arr.shape} is not a 2-D greyscale image")
    lo, hi = (-(2 ** (bits - 1)), 2 ** (bits - 1) - 1) if signed else (0, 2**bits - 1)
    grey = ((arr.astype(np.float64) - lo) / (hi - lo)).clip(0, 1)
    if photometric == "MONOCHROME1":  # 0 = white: invert so every image has bone bright
        grey = 1.0 - grey
    return grey.astype(np.float32)


def dicom_spacing(path: Path | str) -> tuple[tuple[float, float] | None, str]:
    """((x, y) mm/px, tag it came from), or (None, why not). PixelSpacing first, then ImagerPixelSpacing.

    DICOM stores spacing as (row, column) = (y, x). ImagerPixelSpacing is at the
    detector; it is used as is (no magnification correction), as the ISBI images were.
    """
    ds = _dicom_dataset(Path(path), pixels=False)
    for tag in ("PixelSpacing", "ImagerPixelSpacing"):
        value = ds.get(tag)
        if value is None:
            continue
        try:
            row, col = (float(v) for v in value)
        except (TypeError, ValueError):
            continue
        if all(math.isfinite(v) and v > 0 for v in (row, col)):
            return (col, row), tag
    return None, "no valid PixelSpacing or ImagerPixelSpacing"


def image_size(path: Path | str) -> tuple[int, int]:
    """(height, width) from the file header, without decoding the pixels."""
    path = Path(path)
    if path.is_file() and is_dicom(path):
        ds = _dicom_dataset(path, pixels=False)
        try:
            return int(ds.Rows), int(ds.Columns)
        except (AttributeError, TypeError, ValueError):
            raise DataError(f"{path}: DICOM without Rows/Columns") from None
    try:
        with Image.open(path) as im:
            return im.height, im.width
    except FileNotFoundError:
        raise DataError(f"{path}: image file not found") from None
    except (UnidentifiedImageError, OSError) as e:
        raise DataError(f"{path}: cannot read image ({type(e).__name__}: {e})") from None


def same_files(a: Sequence[Path | str], b: Sequence[Path | str]) -> list[tuple[int, int]]:
    """(i, j) for each a[i] whose bytes are those of b[j]: the same image under two names (ISBI 2015's training
    038 and 144 are Test1's 283 and 173). Only files whose sizes match are read, so this costs a stat per file."""
    def size(path: Path | str) -> int:
        try:
            return os.stat(path).st_size
        except OSError:
            return -1

    by_size: dict[int, list[int]] = {}
    for j, path in enumerate(b):
        by_size.setdefault(size(path), []).append(j)
    digests: dict[str, str] = {}

    def digest(path: Path | str) -> str:
        key = str(path)
        if key not in digests:
            with open(path, "rb") as fh:
                digests[key] = hashlib.file_digest(fh, "blake2b").hexdigest()
        return digests[key]

    pairs = []
    for i, path in enumerate(a):
        n = size(path)
        for j in by_size.get(n, []) if n >= 0 else []:
            if digest(path) == digest(b[j]):
                pairs.append((i, j))
    return pairs


def model_input(full: np.ndarray, input_size: tuple[int, int], letterbox: bool = False) -> np.ndarray:
    """The network's view of a decoded image: resized, stored as float16 (what training saw, so
    prediction on a new image matches evaluation on the same file bit for bit)."""
    return resize_image(full, input_size, letterbox).astype(np.float16)


class ImageCache:
    """Resized images in memory, backed by `cache_dir` (None: memory only)."""

    def __init__(
        self,
        input_size: tuple[int, int],
        letterbox: bool = False,
        normalize: str = "dtype",
        cache_dir: Path | str | None = None,
    ) -> None:
        self.input_size = (int(input_size[0]), int(input_size[1]))
        self.letterbox = bool(letterbox)
        self.normalize = normalize
        self.cache_dir = Path(cache_dir) if cache_dir else None
        self._memory: dict[str, tuple[np.ndarray, tuple[int, int]]] = {}
        self.decoded = 0  # how many times an original file was decoded (benchmarks and tests read it)

    def key(self, path: Path) -> str:
        st = path.stat()
        ident = f"{path.resolve()}|{st.st_size}|{st.st_mtime_ns}|{self.input_size}|{self.letterbox}|{self.normalize}|{CACHE_VERSION}"
        return hashlib.sha1(ident.encode()).hexdigest()

    def get(self, record: Record) -> tuple[np.ndarray, tuple[int, int]]:
        """(float16 image at input_size, original (height, width))."""
        path = Path(record.image_path)
        if not path.is_file():
            raise DataError(f"{path}: image file not found")
        k = self.key(path)
        hit = self._memory.get(k)
        if hit is not None:
            return hit
        hit = self._read_disk(k)
        if hit is None:
            full = read_grey(path, self.normalize)
            self.decoded += 1
            small = model_input(full, self.input_size, self.letterbox)
            hit = (small, (int(full.shape[0]), int(full.shape[1])))
            self._write_disk(k, hit)
        self._memory[k] = hit
        return hit

    def get_many(self, records: list[Record], workers: int | None = None, errors: str = "raise"
                 ) -> list[tuple[np.ndarray, tuple[int, int]] | DataError]:
        """Decode in threads (PIL and cv2 release the GIL); errors surface with their file name, raised, or
        with errors="return" in place of the image (so the caller can skip that sample and say so)."""
        workers = workers or min(8, os.cpu_count() or 1)

        def one(r: Record) -> tuple[np.ndarray, tuple[int, int]] | DataError:
            try:
                return self.get(r)
            except DataError as e:
                if errors == "raise":
                    raise
                return e

        with ThreadPoolExecutor(workers) as pool:
            return list(pool.map(one, records))

    def geometry(self, orig_hw: tuple[int, int]) -> Geometry:
        return Geometry.for_resize(orig_hw, self.input_size, self.letterbox)

    def _read_disk(self, k: str) -> tuple[np.ndarray, tuple[int, int]] | None:
        if self.cache_dir is None:
            return None
        f = self.cache_dir / f"{k}.npz"
        if not f.is_file():
            return None
        try:
            with np.load(f) as z:
                return z["image"], (int(z["orig_hw"][0]), int(z["orig_hw"][1]))
        except Exception:  # a corrupt cache entry is rebuilt, never trusted
            return None

    def _write_disk(self, k: str, value: tuple[np.ndarray, tuple[int, int]]) -> None:
        if self.cache_dir is None:
            return
        self.cache_dir.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(dir=self.cache_dir, suffix=".tmp")
        try:
            with os.fdopen(fd, "wb") as fh:
                np.savez(fh, image=value[0], orig_hw=np.array(value[1]))
            os.replace(tmp, self.cache_dir / f"{k}.npz")
        except BaseException:
            Path(tmp).unlink(missing_ok=True)
            raise

"""One image file -> float32 greyscale array in [0, 1], or a one-line `DataError` naming the file.

PNG/JPEG/BMP/TIFF via Pillow, DICOM via pydicom (MONOCHROME1 inverted so bone is always bright). Refused:
a header over `max_pixels` (a decompression bomb, refused before a byte is decoded), a side under
`min_side`, pixel data that ends early (Pillow would zero-fill the missing rows) and NaN/inf pixels.
"""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
from PIL import Image, ImageFile, UnidentifiedImageError

from landmark_exp.data.records import DataError, one_line

DICOM_EXTENSIONS = (".dcm", ".dicom")
# what pydicom and Pillow raise for a broken file or an unsupported encoding: all are the file's problem
_DICOM_ERRORS = (OSError, ValueError, AttributeError, KeyError, IndexError, TypeError, NotImplementedError,
                 RuntimeError, EOFError)
_PIL_ERRORS = (UnidentifiedImageError, OSError, SyntaxError, ValueError, EOFError, Image.DecompressionBombError)
MAX_PIXELS = 100_000_000  # far above any X-ray (43x43 cm at 0.1 mm is 18.5 MP), far below a bomb
MIN_SIDE = 2  # a 1-pixel dot or line holds no anatomy (tests read 2x2 to 40x30 images)


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


def decode(path: Path, max_pixels: int | None = None, min_side: int | None = None) -> np.ndarray:
    """The file's pixels scaled by its storage's range (255, 65535, DICOM's stored bits), checked."""
    max_pixels = MAX_PIXELS if max_pixels is None else int(max_pixels)
    min_side = MIN_SIDE if min_side is None else int(min_side)
    if not path.is_file():
        raise DataError(f"{path}: image file not found")
    return _read_dicom(path, max_pixels, min_side) if is_dicom(path) else _read_pil(path, max_pixels, min_side)


def _read_pil(path: Path, max_pixels: int, min_side: int) -> np.ndarray:
    # Pillow's process-wide switches, reset on every read as another import may change them: its own bomb
    # check (warns from 89 MP, raises from 179) gives way to `_check_size`, and a cut file raises instead
    # of being zero-filled
    Image.MAX_IMAGE_PIXELS = None
    ImageFile.LOAD_TRUNCATED_IMAGES = False
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
        raise DataError(f"{path}: {what} ({one_line(e)})") from None


def _check_size(path: Path | str, width: int, height: int, max_pixels: int, min_side: int) -> None:
    pixels = width * height
    if pixels > max_pixels:
        raise DataError(f"{path}: {width} x {height} pixels ({pixels / 1e6:.1f} megapixels) is over the "
                        f"{max_pixels / 1e6:g}-megapixel limit (max_pixels)")
    if min(width, height) < min_side:
        raise DataError(f"{path}: {width} x {height} pixels is below the {min_side}-pixel minimum side (min_side)")


def _check_finite(path: Path | str, a: np.ndarray) -> None:
    """NaN/inf pixels (float TIFF or DICOM) would reach the network as NaN heatmaps; integers cannot hold them."""
    if a.dtype.kind == "f" and (n := a.size - int(np.count_nonzero(np.isfinite(a)))):
        raise DataError(f"{path}: {n} non-finite pixel values (NaN or infinity)")


def _row_fills(mode: str) -> tuple[int, int]:
    """Two distinct fill values for a mode's pixels (see `_check_rows_written`)."""
    if mode == "1":
        return 1, 0
    return (0xA5A5, 0x5A5A) if mode.startswith("I") else (0xA5, 0x5A)


def _last_decoded_row(im: Image.Image) -> int:
    """The bottom row, or in an Adam7-interlaced PNG the bottom odd row (the last pass fills the odd rows)."""
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
    """Refuse a PNG whose zlib stream ends before its last row: Pillow stops there without an error.

    The row decoded last was pre-filled with fills[0]; still holding it means a missing row or a real row of
    that one value. Only then (rare) is the file decoded again over fills[1]: rows holding zeros the first
    time and fills[1] the second are the ones the file does not have.
    """
    last = _last_decoded_row(im)
    if not (np.asarray(im.crop((0, last, im.width, last + 1))) == fills[0]).all():
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


def _has_neutral_chroma(path: Path) -> bool:
    """Whether a colour JPEG is grey saved as RGB (as X-rays often are): constant chroma 128 makes the decoded RGB
    equal the luma bit for bit, and decoding luma only is ~2x faster. Checked at 1/8 scale (block means, a few ms),
    so chroma neutral in every block's mean yet varying inside is read as its luma; a truly colour JPEG (ISBI
    Test1 300.jpg) is converted in full."""
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


def _to_grey_array(im: Image.Image, path: Path) -> np.ndarray:
    if im.mode in ("I;16", "I;16B", "I;16L", "I;16N"):
        return _unit(np.asarray(im, dtype=np.uint16), 65535.0)
    if im.mode == "I":
        a = np.asarray(im, dtype=np.int64)
        return (a.astype(np.float32) / (65535.0 if a.max() > 255 else 255.0)).clip(0, 1)
    if im.mode == "F":
        a = np.asarray(im, dtype=np.float32)
        _check_finite(path, a)  # before the clip, which would turn inf into 0 or 1
        return a.clip(0, 1)
    if im.mode == "RGB":
        rgb = np.asarray(im)
        if np.array_equal(rgb[..., 0], rgb[..., 1]) and np.array_equal(rgb[..., 1], rgb[..., 2]):
            return _unit(rgb[..., 0], 255.0)
    if im.mode in ("RGB", "RGBA", "P", "PA", "LA", "1", "CMYK", "YCbCr"):
        im = im.convert("L")
    return _unit(np.asarray(im, dtype=np.uint8), 255.0)


def _dicom_dataset(path: Path, pixels: bool):
    import pydicom
    from pydicom.errors import InvalidDicomError

    try:
        return pydicom.dcmread(path, stop_before_pixels=not pixels)
    except (InvalidDicomError, *_DICOM_ERRORS) as e:
        raise DataError(f"{path}: cannot read DICOM ({one_line(e)})") from None


def _read_dicom(path: Path, max_pixels: int, min_side: int) -> np.ndarray:
    """Stored values scaled by the stored bit depth's range (the DICOM analogue of 'dtype'), bright = dense.
    Size and frame count come from the header and are checked before the pixel data is decoded."""
    ds = _dicom_dataset(path, pixels=True)  # the pixel data's bytes are read, not decoded
    try:
        rows, columns = int(ds.get("Rows", 0) or 0), int(ds.get("Columns", 0) or 0)
        frames = int(ds.get("NumberOfFrames", 1) or 1)
    except _DICOM_ERRORS as e:
        raise DataError(f"{path}: cannot read DICOM ({one_line(e)})") from None
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
        raise DataError(f"{path}: cannot decode DICOM pixel data ({one_line(e)})") from None
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
    """((x, y) mm/px, tag it came from), or (None, why not). PixelSpacing first, then ImagerPixelSpacing,
    the latter at the detector and used as is (no magnification correction), as the ISBI images were.
    DICOM stores spacing as (row, column) = (y, x)."""
    ds = _dicom_dataset(Path(path), pixels=False)
    for tag in ("PixelSpacing", "ImagerPixelSpacing"):
        try:
            row, col = (float(v) for v in ds.get(tag))
        except (TypeError, ValueError):  # absent (None) or not two numbers
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

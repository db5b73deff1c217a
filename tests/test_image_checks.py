"""Images are checked before the network sees them (issue 28, item 3): a decompression bomb is refused from its
header, a tiny image, a truncated file and NaN/inf pixels are refused, each as one line naming the file, and a bad
file among good ones never stops the others. JSON outputs are strict (no NaN/Infinity tokens)."""

import io
import json
import struct
import warnings
import zlib
from pathlib import Path

import numpy as np
import pytest
from conftest import write_dicom
from PIL import Image, ImageFile

from landmark_exp.data import decoding
from landmark_exp.data.decoding import MAX_PIXELS, MIN_SIDE
from landmark_exp.data.images import read_ahead, read_grey
from landmark_exp.data.records import DataError
from landmark_exp.files import write_json


def _refusal(path: Path, **kwargs) -> str:
    """read_grey's DataError message, checked to be one line that starts with the file's path."""
    with pytest.raises(DataError) as e:
        read_grey(path, **kwargs)
    message = str(e.value)
    assert message.startswith(f"{path}: ") and "\n" not in message
    return message


def _chunk(kind: bytes, data: bytes) -> bytes:
    return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))


def _png(width: int, height: int, rows: list[bytes], interlace: int = 0) -> bytes:
    """An 8-bit greyscale PNG whose IHDR says width x height and whose one complete zlib stream holds `rows`
    (each already with its filter byte): fewer rows than the header promises is a file with rows missing."""
    ihdr = struct.pack(">IIBBBBB", width, height, 8, 0, 0, 0, interlace)
    return (b"\x89PNG\r\n\x1a\n" + _chunk(b"IHDR", ihdr) + _chunk(b"IDAT", zlib.compress(b"".join(rows)))
            + _chunk(b"IEND", b""))


def _patch_png_size(data: bytes, width: int, height: int) -> bytes:
    """The same PNG with its IHDR claiming width x height (and the CRC recomputed, so the header is valid)."""
    assert data[12:16] == b"IHDR"
    ihdr = struct.pack(">II", width, height) + data[24:29]
    return data[:16] + ihdr + struct.pack(">I", zlib.crc32(b"IHDR" + ihdr)) + data[33:]


def _grey(h: int = 48, w: int = 64, seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, 256, size=(h, w)).astype(np.uint8)


def _png_bytes(a: np.ndarray) -> bytes:
    buf = io.BytesIO()
    Image.fromarray(a).save(buf, "PNG")
    return buf.getvalue()


@pytest.fixture
def bomb(tmp_path) -> Path:
    """A 1.5 KB PNG whose header claims 30000 x 30000 pixels (900 megapixels: 3.6 GB as float32)."""
    path = tmp_path / "bomb.png"
    path.write_bytes(_patch_png_size(_png_bytes(_grey()), 30000, 30000))
    return path


def test_an_image_over_the_pixel_limit_is_refused_from_its_header_without_decoding(bomb, monkeypatch):
    def no_decoding(self):
        raise AssertionError("pixels decoded")

    monkeypatch.setattr(ImageFile.ImageFile, "load", no_decoding)
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # Pillow's DecompressionBombWarning would fail the test
        message = _refusal(bomb)
    assert message == f"{bomb}: 30000 x 30000 pixels (900.0 megapixels) is over the 100-megapixel limit (max_pixels)"
    assert MAX_PIXELS == 100_000_000


def test_our_pixel_limit_is_the_one_that_applies_not_pillows(tmp_path, bomb, monkeypatch):
    """Another import turning Pillow's bomb check back on changes nothing: over our limit gets our message, and an
    image under our limit (here over Pillow's, shrunk to 1000 pixels) reads without Pillow's error or warning."""
    monkeypatch.setattr(Image, "MAX_IMAGE_PIXELS", 1000)
    assert "over the 100-megapixel limit (max_pixels)" in _refusal(bomb)
    monkeypatch.setattr(Image, "MAX_IMAGE_PIXELS", 1000)
    a = _grey()
    (tmp_path / "a.png").write_bytes(_png_bytes(a))
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        np.testing.assert_array_equal(read_grey(tmp_path / "a.png"), a.astype(np.float32) / np.float32(255))


def test_the_pixel_limit_is_a_parameter_and_inclusive(tmp_path):
    (tmp_path / "a.png").write_bytes(_png_bytes(_grey(48, 64)))
    message = _refusal(tmp_path / "a.png", max_pixels=48 * 64 - 1)
    assert "64 x 48 pixels" in message and "limit (max_pixels)" in message
    assert read_grey(tmp_path / "a.png", max_pixels=48 * 64).shape == (48, 64)


def test_a_dicom_header_over_the_pixel_limit_is_refused_before_its_pixels_are_decoded(tmp_path):
    import pydicom

    ds = pydicom.dcmread(write_dicom(tmp_path / "a.dcm", _grey().astype(np.uint16)))
    ds.Rows, ds.Columns = 30000, 20000  # the pixel data stays 48 x 64: decoding it would fail on its length
    ds.save_as(tmp_path / "bomb.dcm", enforce_file_format=True)
    assert _refusal(tmp_path / "bomb.dcm") == (
        f"{tmp_path / 'bomb.dcm'}: 20000 x 30000 pixels (600.0 megapixels) is over the 100-megapixel limit (max_pixels)")


def test_an_image_smaller_than_the_minimum_side_is_refused(tmp_path):
    Image.fromarray(np.zeros((1, 1), np.uint8)).save(tmp_path / "dot.png")
    assert _refusal(tmp_path / "dot.png") == (
        f"{tmp_path / 'dot.png'}: 1 x 1 pixels is below the {MIN_SIDE}-pixel minimum side (min_side)")
    write_dicom(tmp_path / "dot.dcm", np.zeros((1, 1), np.uint16))
    assert "1 x 1 pixels is below" in _refusal(tmp_path / "dot.dcm")
    # the shorter side counts, and min_side is a parameter
    (tmp_path / "a.png").write_bytes(_png_bytes(_grey(48, 64)))
    assert "64 x 48 pixels is below the 49-pixel minimum side" in _refusal(tmp_path / "a.png", min_side=49)
    assert read_grey(tmp_path / "a.png", min_side=48).shape == (48, 64)
    assert read_grey(tmp_path / "dot.png", min_side=1).shape == (1, 1)


@pytest.mark.parametrize("fmt", ["PNG", "JPEG"])
@pytest.mark.parametrize("pil_zero_fills", [False, True])
def test_a_truncated_png_or_jpeg_is_refused_not_zero_filled(tmp_path, monkeypatch, fmt, pil_zero_fills):
    """Even when another import has told Pillow to zero-fill cut files (LOAD_TRUNCATED_IMAGES)."""
    buf = io.BytesIO()
    Image.fromarray(_grey(128, 96)).save(buf, fmt)
    path = tmp_path / f"cut.{fmt.lower()}"
    path.write_bytes(buf.getvalue()[: len(buf.getvalue()) // 2])
    monkeypatch.setattr(ImageFile, "LOAD_TRUNCATED_IMAGES", pil_zero_fills)
    assert "image data truncated" in _refusal(path)


def test_a_png_whose_compressed_data_ends_before_its_last_row_is_refused(tmp_path):
    """A complete zlib stream with 10 of the 200 rows the header promises: Pillow decodes it without an error,
    the other 190 rows as zeros."""
    path = tmp_path / "short.png"
    path.write_bytes(_png(64, 200, [b"\0" + bytes(range(64))] * 10))
    assert _refusal(path) == f"{path}: image data truncated, cannot read image (190 of 200 pixel rows missing from the file)"
    # and over the pixel limit the header alone refuses it (the 12000 x 12000 file with 10 rows)
    path.write_bytes(_png(12000, 12000, [b"\0" + bytes(12000)] * 10))
    assert "144.0 megapixels) is over the 100-megapixel limit" in _refusal(path)


def _adam7(width: int, height: int, value_of, passes: int = 7) -> list[bytes]:
    """The scanlines (filter 0) of an Adam7-interlaced greyscale image, pixel (x, y) = value_of(x, y)."""
    starts = [(0, 0, 8, 8), (4, 0, 8, 8), (0, 4, 4, 8), (2, 0, 4, 4), (0, 2, 2, 4), (1, 0, 2, 2), (0, 1, 1, 2)]
    rows = []
    for x0, y0, dx, dy in starts[:passes]:
        xs = range(x0, width, dx)
        rows += [b"\0" + bytes(value_of(x, y) for x in xs) for y in range(y0, height, dy) if xs]
    return rows


@pytest.mark.parametrize("height", [40, 41])
def test_an_interlaced_png_missing_its_last_pass_is_refused_and_a_complete_one_reads(tmp_path, height):
    def value(x: int, y: int) -> int:
        return (3 * x + 5 * y) % 251

    want = np.fromfunction(lambda y, x: (3 * x + 5 * y) % 251, (height, 48), dtype=int).astype(np.float32) / 255
    (tmp_path / "full.png").write_bytes(_png(48, height, _adam7(48, height, value), interlace=1))
    assert Image.open(tmp_path / "full.png").info.get("interlace")
    np.testing.assert_array_equal(read_grey(tmp_path / "full.png"), want)
    (tmp_path / "short.png").write_bytes(_png(48, height, _adam7(48, height, value, passes=6), interlace=1))
    assert f"{height // 2} of {height} pixel rows missing" in _refusal(tmp_path / "short.png")


def test_a_png_whose_last_row_happens_to_equal_the_fill_value_still_reads(tmp_path):
    """The fill-value test for missing rows must not refuse a real row of that value (nor of the second one)."""
    for fill in decoding._row_fills("L"):
        a = _grey(40, 48)
        a[-1] = fill
        (tmp_path / "a.png").write_bytes(_png_bytes(a))
        np.testing.assert_array_equal(read_grey(tmp_path / "a.png"), a.astype(np.float32) / np.float32(255))


def test_a_float_tiff_of_nan_or_infinite_pixels_is_refused_with_their_count(tmp_path):
    a = np.full((48, 64), 0.25, np.float32)
    Image.fromarray(a, mode="F").save(tmp_path / "ok.tif")
    np.testing.assert_array_equal(read_grey(tmp_path / "ok.tif"), a)
    a[0, :10] = np.nan
    a[5, 5], a[6, 6] = np.inf, -np.inf
    Image.fromarray(a, mode="F").save(tmp_path / "nan.tif")
    assert Image.open(tmp_path / "nan.tif").mode == "F"
    assert _refusal(tmp_path / "nan.tif") == f"{tmp_path / 'nan.tif'}: 12 non-finite pixel values (NaN or infinity)"
    Image.fromarray(np.full((48, 64), np.nan, np.float32), mode="F").save(tmp_path / "all_nan.tif")
    assert f"{48 * 64} non-finite pixel values" in _refusal(tmp_path / "all_nan.tif", normalize="minmax")


def test_a_float_dicom_with_nan_pixels_is_refused(tmp_path):
    import pydicom

    ds = pydicom.dcmread(write_dicom(tmp_path / "a.dcm", np.zeros((48, 64), np.uint16)))
    del ds.PixelData
    for tag in ("BitsStored", "HighBit", "PixelRepresentation"):
        delattr(ds, tag)
    pixels = np.full((48, 64), 0.5, np.float32)
    pixels[:3, 0] = np.nan
    ds.BitsAllocated, ds.FloatPixelData = 32, pixels.tobytes()
    ds.save_as(tmp_path / "nan.dcm", enforce_file_format=True)
    assert _refusal(tmp_path / "nan.dcm") == f"{tmp_path / 'nan.dcm'}: 3 non-finite pixel values (NaN or infinity)"


@pytest.mark.parametrize("workers", [1, 3])
def test_read_ahead_yields_a_data_error_for_each_refused_file_and_reads_the_good_ones(tmp_path, bomb, workers):
    good = {name: _grey(40, 56, seed=i) for i, name in enumerate(("a.png", "c.png", "h.png"))}
    for name, a in good.items():
        (tmp_path / name).write_bytes(_png_bytes(a))
    Image.fromarray(np.zeros((1, 1), np.uint8)).save(tmp_path / "d_dot.png")
    (tmp_path / "e_cut.png").write_bytes(_png_bytes(_grey(128, 96))[:2000])
    (tmp_path / "f_rows.png").write_bytes(_png(64, 200, [b"\0" + bytes(64)] * 10))
    Image.fromarray(np.full((48, 64), np.nan, np.float32), mode="F").save(tmp_path / "g_nan.tif")
    files = [tmp_path / n for n in ("a.png", "bomb.png", "c.png", "d_dot.png", "e_cut.png", "f_rows.png", "g_nan.tif",
                                    "h.png")]
    got = list(read_ahead(files, workers=workers))
    assert len(got) == len(files)
    for f, have in zip(files, got, strict=True):
        if f.name in good:
            np.testing.assert_array_equal(have, good[f.name].astype(np.float32) / np.float32(255))
        else:
            assert isinstance(have, DataError) and str(have).startswith(f"{f}: ") and "\n" not in str(have)
    # the limits are read_ahead's parameters too
    limited = list(read_ahead(files[:1], workers=workers, max_pixels=100, min_side=1))
    assert isinstance(limited[0], DataError) and "(max_pixels)" in str(limited[0])
    assert list(read_ahead(files[3:4], workers=workers, min_side=1))[0].shape == (1, 1)


def test_normal_8bit_and_16bit_images_read_exactly_as_before(tmp_path):
    """The checks change no pixel: 8-bit is value / 255 and 16-bit value / 65535, bit for bit, in every format."""
    a8 = _grey(48, 64)
    a16 = (np.random.default_rng(1).integers(0, 65536, size=(48, 64))).astype(np.uint16)
    Image.fromarray(a8).save(tmp_path / "a8.png")
    Image.fromarray(a8).save(tmp_path / "a8.bmp")
    Image.fromarray(a8).save(tmp_path / "a8.tif")
    Image.fromarray(np.dstack([a8] * 3)).save(tmp_path / "rgb.png")
    Image.fromarray(a8).convert("P").save(tmp_path / "palette.png")
    Image.fromarray(a16).save(tmp_path / "a16.png")
    assert Image.open(tmp_path / "a16.png").mode.startswith("I;16")
    want8 = a8.astype(np.float32) / np.float32(255)
    for name in ("a8.png", "a8.bmp", "a8.tif", "rgb.png", "palette.png"):
        got = read_grey(tmp_path / name)
        assert got.dtype == np.float32
        np.testing.assert_array_equal(got, want8, err_msg=name)
    np.testing.assert_array_equal(read_grey(tmp_path / "a16.png"), a16.astype(np.float32) / np.float32(65535))
    write_dicom(tmp_path / "a16.dcm", a16)
    np.testing.assert_allclose(read_grey(tmp_path / "a16.dcm"), a16 / 65535.0, atol=1e-7)


def _strict(text: str):
    def refuse(constant: str):
        raise ValueError(f"non-standard JSON constant {constant}")

    return json.loads(text, parse_constant=refuse)


def test_write_json_writes_null_for_nan_and_infinity_at_any_depth(tmp_path):
    nan, inf = float("nan"), float("inf")
    obj = {
        "mre": nan, "sd": inf, "low": -inf, "ok": 1.5, "n": 3, "flag": True, "none": None, "name": "x",
        "np32": np.float32("nan"), "np64": np.float64("-inf"), "npint": np.int64(7), "np_ok": np.float32(0.5),
        "nested": {"list": [1.0, nan, {"deep": (inf, 2.0)}], "tuple": (nan,)},
        "array": np.array([[1.0, np.nan], [np.inf, 4.0]], dtype=np.float32),
        "ints": np.arange(3), "path": Path("/a/b"),
    }
    write_json(tmp_path / "m.json", obj)
    got = _strict((tmp_path / "m.json").read_text())
    assert got == {
        "mre": None, "sd": None, "low": None, "ok": 1.5, "n": 3, "flag": True, "none": None, "name": "x",
        "np32": None, "np64": None, "npint": 7, "np_ok": 0.5,
        "nested": {"list": [1.0, None, {"deep": [None, 2.0]}], "tuple": [None]},
        "array": [[1.0, None], [None, 4.0]], "ints": [0, 1, 2], "path": "/a/b",
    }
    # an array alone, and a bare non-finite value
    write_json(tmp_path / "a.json", np.array([np.nan, 1.0]))
    assert _strict((tmp_path / "a.json").read_text()) == [None, 1.0]
    write_json(tmp_path / "b.json", np.float32("inf"))
    assert _strict((tmp_path / "b.json").read_text()) is None


def test_write_json_of_finite_values_is_unchanged(tmp_path):
    obj = {"mre": 1.25, "values": [0.1, 2, np.float32(0.5)], "arr": np.array([1.5, 2.5]), "path": Path("x")}
    write_json(tmp_path / "m.json", obj)
    text = (tmp_path / "m.json").read_text()
    assert text == json.dumps({"mre": 1.25, "values": [0.1, 2, 0.5], "arr": [1.5, 2.5], "path": "x"}, indent=2) + "\n"

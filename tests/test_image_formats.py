"""Every reader goes through read_grey: 8/16-bit PNG, JPEG, BMP, TIFF and DICOM (16-bit, MONOCHROME1)."""

import numpy as np
import pytest
from conftest import write_dicom
from PIL import Image

from landmark_exp.data.decoding import _has_neutral_chroma, dicom_spacing, image_size, is_dicom
from landmark_exp.data.images import read_grey
from landmark_exp.data.records import DataError


@pytest.fixture
def pixels() -> np.ndarray:
    rng = np.random.default_rng(0)
    return rng.integers(0, 256, size=(40, 30)).astype(np.uint8)


def test_16bit_png_reads_on_the_same_scale_as_8bit(tmp_path, pixels):
    Image.fromarray(pixels).save(tmp_path / "a8.png")
    Image.fromarray(pixels.astype(np.uint16) * 257).save(tmp_path / "a16.png")  # 0..255 -> 0..65535
    assert Image.open(tmp_path / "a16.png").mode.startswith("I")
    np.testing.assert_allclose(read_grey(tmp_path / "a16.png"), read_grey(tmp_path / "a8.png"), atol=1e-6)


@pytest.mark.parametrize("ext, atol", [(".bmp", 0), (".tif", 0), (".jpg", 0.1)])
def test_bmp_tiff_jpeg_read_as_the_same_grey_image(tmp_path, pixels, ext, atol):
    smooth = np.repeat(np.repeat(pixels[::4, ::4], 4, 0), 4, 1)[:40, :30]  # JPEG-friendly blocks
    Image.fromarray(smooth).save(tmp_path / f"a{ext}")
    got = read_grey(tmp_path / f"a{ext}")
    assert got.shape == (40, 30) and got.dtype == np.float32
    assert np.abs(got - smooth / 255.0).mean() <= atol + 1e-7


def test_dicom_16bit_monochrome1_is_inverted_to_the_png_it_came_from(tmp_path, pixels):
    Image.fromarray(pixels).save(tmp_path / "a.png")
    write_dicom(tmp_path / "mono1.dcm", (65535 - pixels.astype(np.uint16) * 257), "MONOCHROME1")
    write_dicom(tmp_path / "mono2.dcm", pixels.astype(np.uint16) * 257, "MONOCHROME2")
    png = read_grey(tmp_path / "a.png")
    np.testing.assert_allclose(read_grey(tmp_path / "mono1.dcm"), png, atol=1e-6)
    np.testing.assert_allclose(read_grey(tmp_path / "mono2.dcm"), png, atol=1e-6)
    assert image_size(tmp_path / "mono1.dcm") == (40, 30)


def test_dicom_scales_by_its_stored_bit_depth(tmp_path):
    twelve = np.array([[0, 4095], [2048, 1024]], dtype=np.uint16)
    write_dicom(tmp_path / "a.dcm", twelve, bits_stored=12)
    np.testing.assert_allclose(read_grey(tmp_path / "a.dcm"), twelve / 4095.0, atol=1e-6)
    np.testing.assert_allclose(read_grey(tmp_path / "a.dcm", normalize="minmax"), twelve / 4095.0, atol=1e-6)


def test_dicom_without_extension_is_recognised_by_its_magic(tmp_path, pixels):
    write_dicom(tmp_path / "IM0001", pixels.astype(np.uint16))
    assert is_dicom(tmp_path / "IM0001") and not is_dicom(tmp_path / "nothing")
    assert read_grey(tmp_path / "IM0001").shape == (40, 30)


def test_dicom_spacing_is_row_column_in_the_file_and_x_y_here(tmp_path, pixels):
    p = write_dicom(tmp_path / "both.dcm", pixels.astype(np.uint16), pixel_spacing=(0.2, 0.1), imager_spacing=(0.3, 0.3))
    assert dicom_spacing(p) == ((0.1, 0.2), "PixelSpacing")
    p = write_dicom(tmp_path / "imager.dcm", pixels.astype(np.uint16), imager_spacing=(0.15, 0.15))
    assert dicom_spacing(p) == ((0.15, 0.15), "ImagerPixelSpacing")
    p = write_dicom(tmp_path / "none.dcm", pixels.astype(np.uint16))
    spacing, why = dicom_spacing(p)
    assert spacing is None and "PixelSpacing" in why
    p = write_dicom(tmp_path / "zero.dcm", pixels.astype(np.uint16), pixel_spacing=(0.0, 0.0))
    assert dicom_spacing(p)[0] is None


def test_corrupt_files_give_one_line_errors_naming_the_file(tmp_path):
    (tmp_path / "bad.dcm").write_bytes(b"not a dicom at all" * 20)
    (tmp_path / "bad.png").write_bytes(b"\x89PNG\r\n\x1a\n" + b"garbage" * 20)
    for name in ("bad.dcm", "bad.png"):
        with pytest.raises(DataError) as e:
            read_grey(tmp_path / name)
        assert str(tmp_path / name) in str(e.value) and "\n" not in str(e.value)


def test_compressed_dicom_without_a_decoder_is_a_one_line_error_and_with_one_reads(tmp_path):
    import pydicom
    from pydicom.encaps import encapsulate
    from pydicom.uid import JPEG2000Lossless

    arr = np.random.default_rng(0).integers(0, 4096, (64, 48)).astype(np.uint16)  # J2K needs >= ~32 px
    ds = pydicom.dcmread(write_dicom(tmp_path / "a.dcm", arr, bits_stored=12))
    try:
        import pylibjpeg  # noqa: F401  (the optional `dicom` extra)
    except ImportError:
        ds.file_meta.TransferSyntaxUID = JPEG2000Lossless
        ds.PixelData = encapsulate([b"\xff\x4f\xff\x51junk"])
        ds["PixelData"].VR = "OB"
        ds.save_as(tmp_path / "c.dcm", enforce_file_format=True)
        with pytest.raises(DataError, match="cannot decode DICOM pixel data") as e:
            read_grey(tmp_path / "c.dcm")
        assert "\n" not in str(e.value)
        pytest.skip("pylibjpeg not installed: the decoding half needs pip install -e '.[dicom]'")
    ds.compress(JPEG2000Lossless)
    ds.save_as(tmp_path / "c.dcm", enforce_file_format=True)
    np.testing.assert_allclose(read_grey(tmp_path / "c.dcm"), arr / 4095.0, atol=1e-6)


def test_8bit_images_read_to_exactly_their_value_over_255(tmp_path):
    """The table lookup must give what astype(float32) / 255 gives, bit for bit (caches and models rely on it)."""
    values = np.arange(256, dtype=np.uint8).reshape(16, 16)
    Image.fromarray(values).save(tmp_path / "grey.png")
    Image.fromarray(np.stack([values] * 3, axis=-1)).save(tmp_path / "rgb.png")
    for name in ("grey.png", "rgb.png"):
        got = read_grey(tmp_path / name)
        assert got.dtype == np.float32
        np.testing.assert_array_equal(got, values.astype(np.float32) / 255.0)


@pytest.mark.parametrize("workers, depth", [(1, None), (3, None), (2, 5), (4, 100)])
def test_read_ahead_yields_every_file_in_order_with_errors_in_their_place(tmp_path, workers, depth):
    from landmark_exp.data.images import read_ahead

    rng = np.random.default_rng(1)
    files, expected = [], []
    for i in range(9):
        f = tmp_path / f"{i}.png"
        if i in (2, 7):
            f.write_bytes(b"not a png")
            expected.append(None)
        else:
            img = rng.integers(0, 256, size=(12, 10)).astype(np.uint8)
            Image.fromarray(img).save(f)
            expected.append(img.astype(np.float32) / 255)
        files.append(f)
    got = list(read_ahead(files, workers=workers, depth=depth))
    assert len(got) == len(files)
    for f, want, have in zip(files, expected, got, strict=True):
        if want is None:
            assert isinstance(have, DataError) and str(have).startswith(f"{f}: ")
        else:
            np.testing.assert_array_equal(have, want)


def _unit8(a: np.ndarray) -> np.ndarray:
    return a.astype(np.float32) / np.float32(255)


def test_grey_saved_as_rgb_jpeg_reads_its_luma_only_with_the_pixels_of_the_full_decode(tmp_path, pixels):
    smooth = np.repeat(np.repeat(pixels[::4, ::4], 4, 0), 4, 1)[:40, :30]
    path = tmp_path / "grey_rgb.jpg"
    Image.fromarray(np.dstack([smooth] * 3)).save(path, quality=90)
    full = np.asarray(Image.open(path).convert("RGB"))
    assert np.array_equal(full[..., 0], full[..., 1]) and np.array_equal(full[..., 1], full[..., 2])
    assert _has_neutral_chroma(path)
    got = read_grey(path)
    assert got.dtype == np.float32 and np.array_equal(got, _unit8(full[..., 0]))


def test_colour_jpeg_is_read_in_full_and_converted_to_grey(tmp_path, pixels):
    rgb = np.dstack([pixels, np.roll(pixels, 7, axis=0), 255 - pixels])
    path = tmp_path / "colour.jpg"
    Image.fromarray(rgb).save(path, quality=90)
    assert not _has_neutral_chroma(path)
    assert np.array_equal(read_grey(path), _unit8(np.asarray(Image.open(path).convert("L"))))


@pytest.mark.parametrize("name", ["truncated.jpg", "not_a_jpeg.jpg"])
def test_broken_jpeg_still_gets_the_one_line_error_naming_it(tmp_path, pixels, name):
    good = tmp_path / "good.jpg"
    Image.fromarray(np.dstack([pixels] * 3)).save(good)
    data = good.read_bytes()[:200] if name == "truncated.jpg" else b"hello"
    (tmp_path / name).write_bytes(data)
    with pytest.raises(DataError, match=f"{name}: cannot read image"):
        read_grey(tmp_path / name)

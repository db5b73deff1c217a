import numpy as np
import pytest

from landmark_exp.data.geometry import Geometry, resize_image, to_model, to_original


def test_resize_map_matches_pixel_centre_convention_with_exact_numbers():
    # 1935 wide x 2400 high -> 256 x 256: sx = 256/1935, sy = 256/2400
    g = Geometry.for_resize((2400, 1935), (256, 256))
    assert g.ax == pytest.approx(256 / 1935)
    assert g.ay == pytest.approx(256 / 2400)
    # pixel (0, 0)'s centre -> (0.5 * s - 0.5); the far edge (W - 0.5) -> (w - 0.5)
    xy = to_model(np.array([[0.0, 0.0], [1934.5, 2399.5], [967.0, 1199.5]]), g.as_array())
    np.testing.assert_allclose(xy[0], [0.5 * 256 / 1935 - 0.5, 0.5 * 256 / 2400 - 0.5], atol=1e-12)
    np.testing.assert_allclose(xy[1], [255.5, 255.5], atol=1e-9)
    np.testing.assert_allclose(xy[2], [(967.5) * 256 / 1935 - 0.5, 127.5], atol=1e-9)


def test_anisotropic_non_square_resize_round_trips_to_1e6_pixels():
    rng = np.random.default_rng(0)
    for orig, out, lb in [((2400, 1935), (256, 256), False), ((300, 500), (128, 96), False),
                          ((2400, 1935), (512, 384), True), ((333, 777), (256, 256), True)]:
        g = Geometry.for_resize(orig, out, letterbox=lb).as_array()
        pts = rng.uniform(0, 1, (19, 2)) * np.array([orig[1] - 1, orig[0] - 1])
        np.testing.assert_allclose(to_original(to_model(pts, g), g), pts, atol=1e-6)


def test_letterbox_keeps_aspect_and_centres_content():
    g = Geometry.for_resize((2400, 1935), (256, 256), letterbox=True)
    # content is 206 x 256 (1935 * 256/2400 = 206.4 -> 206), padded 25 px left
    assert g.ay == pytest.approx(256 / 2400)
    assert g.ax == pytest.approx(206 / 1935)
    np.testing.assert_allclose(to_model(np.array([[-0.5, -0.5]]), g.as_array()), [[25 - 0.5, -0.5]], atol=1e-9)


@pytest.mark.parametrize("letterbox", [False, True])
def test_resized_image_content_lands_where_the_map_says(letterbox):
    # a bright Gaussian blob at a sub-pixel position in a non-square image
    H, W, cx, cy = 600, 420, 123.4, 387.8
    yy, xx = np.mgrid[0:H, 0:W]
    img = np.exp(-((xx - cx) ** 2 + (yy - cy) ** 2) / (2 * 12.0**2)).astype(np.float32)
    small = resize_image(img, (150, 200), letterbox=letterbox)
    g = Geometry.for_resize((H, W), (150, 200), letterbox=letterbox)
    expect = to_model(np.array([[cx, cy]]), g.as_array())[0]
    ys, xs = np.mgrid[0 : small.shape[0], 0 : small.shape[1]]
    got = np.array([(small * xs).sum() / small.sum(), (small * ys).sum() / small.sum()])
    np.testing.assert_allclose(got, expect, atol=0.02)

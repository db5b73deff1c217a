"""Pictures a clinician reads: numbers clear of every cross and of each other, a legend naming every landmark,
error lines coloured by the error, plots that are real PNGs, TensorBoard overlays large enough to read."""

from __future__ import annotations

import io
import time

import cv2
import numpy as np
import pandas as pd
import pytest
from PIL import Image

from landmark_exp.data.records import ISBI2015_LANDMARKS
from landmark_exp.metrics import summarize
from landmark_exp.pictures import (
    draw_overlay,
    error_colour,
    error_per_landmark_plot,
    legend_lines,
    place_labels,
    sdr_curve_plot,
    style_for,
    sweep_curves,
    sweep_plot,
    tensorboard_overlay,
    write_report_plots,
)
from landmark_exp.pictures.overlay import FAIR, FLAG, GOOD, POOR, PRED, TRUTH

# ISBI 2015 Test1 image 151, senior doctor (x, y px of a 1935 x 2400 X-ray): 5, 18 and 11, 12 a few mm apart,
# 7, 8, 9 (pogonion, menton, gnathion) within 4 mm of each other, the lips and chin below them
ISBI_151 = np.array([[846, 1022], [1422, 1055], [1313, 1315], [651, 1206], [1367, 1577], [1301, 1887],
                     [1269, 2030], [1236, 2070], [1259, 2056], [714, 1745], [1364, 1753], [1376, 1757],
                     [1531, 1703], [1470, 1864], [1470, 1577], [1359, 2100], [950, 1449], [1344, 1517],
                     [672, 1359]], dtype=float)
NAMES = list(ISBI2015_LANDMARKS)


def _overlaps(a, b) -> bool:
    return a[0] < b[2] and b[0] < a[2] and a[1] < b[3] and b[1] < a[3]


def _label_boxes(points: np.ndarray, shape: tuple[int, int]) -> tuple[list, list]:
    """Place the numbers 1..K as draw_overlay sizes them for an image of `shape`; (boxes, cross boxes)."""
    st = style_for(shape)
    m = st.marker + st.line
    crosses = [(x - m, y - m, x + m, y + m) for x, y in points]
    sizes = []
    for j in range(len(points)):
        (w, h), base = cv2.getTextSize(str(j + 1), cv2.FONT_HERSHEY_DUPLEX, st.scale, st.stroke)
        sizes.append((w + 2 * st.stroke + 2, h + base + 2 * st.stroke + 2))
    return place_labels(points, sizes, crosses, (shape[1], shape[0]), st.marker), crosses


@pytest.mark.parametrize("scale", [1.0, 512 / 2400], ids=["full-size X-ray", "512 px thumbnail"])
def test_numbers_of_the_crowded_lips_and_chin_overlap_no_other_number_and_no_cross(scale):
    points = ISBI_151 * scale
    shape = (round(2400 * scale), round(1935 * scale))
    boxes, crosses = _label_boxes(points, shape)
    assert len(boxes) == 19
    for i, a in enumerate(boxes):
        assert 0 <= a[0] and 0 <= a[1] and a[2] <= shape[1] and a[3] <= shape[0]
        assert not any(_overlaps(a, c) for c in crosses), f"number {i + 1} covers a cross"
        assert not any(_overlaps(a, b) for b in boxes[i + 1:]), f"number {i + 1} covers another number"
        # and it stays near its own cross: a leader of at most a few marker sizes
        centre = np.array([(a[0] + a[2]) / 2, (a[1] + a[3]) / 2])
        assert np.linalg.norm(centre - points[i]) < 12 * style_for(shape).marker


def test_numbers_of_nineteen_landmarks_within_a_few_millimetres_still_find_free_places():
    rng = np.random.default_rng(0)
    points = np.array([1300.0, 2000.0]) + rng.normal(0, 25, (19, 2))  # all within ~5 mm: worse than any real chin
    boxes, crosses = _label_boxes(points, (2400, 1935))
    for i, a in enumerate(boxes):
        assert not any(_overlaps(a, c) for c in crosses) and not any(_overlaps(a, b) for b in boxes[i + 1:])


def test_the_legend_lists_every_name_with_its_number_error_and_flag():
    errors = np.linspace(0.5, 6, 19)
    flags = [""] * 19
    flags[6] = "low confidence"
    lines = legend_lines(NAMES, ISBI_151, errors, flags)
    texts = [t for t, _, _ in lines]
    for k, name in enumerate(NAMES):
        (line,) = [t for t in texts if t.split()[:1] == [str(k + 1)] and name.replace("_", " ") in t]
        assert f"{errors[k]:.1f} mm" in line
    assert next(t for t in texts if t.split()[:2] == ["7", "pogonion"]).endswith(" !")  # the reason itself is in the CSV and JSON
    colour = {t: c for t, c, _ in lines}
    assert colour[next(t for t in texts if "sella" in t)] == GOOD  # 0.5 mm
    assert colour[next(t for t in texts if "articulare" in t)] == POOR  # 6 mm
    assert colour[next(t for t in texts if "pogonion" in t and t.endswith(" !"))] == FAIR  # flagged, 2.3 mm
    no_truth = {t: c for t, c, _ in legend_lines(NAMES, None, None, flags)}
    assert no_truth[next(t for t in no_truth if "pogonion" in t)] == FLAG  # no error to show: magenta
    assert {"truth", "prediction", "error < 2 mm", "error 2-4 mm", "error > 4 mm", "! flagged: do not trust"} <= set(texts)


def test_a_full_size_overlay_keeps_the_x_ray_whole_and_puts_the_legend_beside_or_in_a_clear_corner():
    image = np.zeros((2400, 1935), np.uint8)
    image[:, :1500] = 230  # bright "anatomy" everywhere landmarks are, dark air on the right
    t0 = time.perf_counter()
    out = draw_overlay(image, ISBI_151, ISBI_151 + 20, numbers=True, names=NAMES, errors_mm=np.full(19, 2.8))
    assert time.perf_counter() - t0 < 2.0  # ~0.1 s measured; generous for loaded machines
    assert out.shape[0] == 2400 and out.shape[1] >= 1935 and out.dtype == np.uint8
    panel = draw_overlay(np.full((2400, 1935), 200, np.uint8), None, ISBI_151, names=NAMES)
    assert panel.shape[1] > 1935  # no dark corner: the legend goes to a panel, never over the skull
    assert (panel[:, :1935] == draw_overlay(np.full((2400, 1935), 200, np.uint8), None, ISBI_151, names=NAMES,
                                            legend="none")).all()  # the image part is the same picture


def test_a_small_image_keeps_its_size_and_the_old_call_still_draws_red_crosses():
    image = np.full((80, 64), 20, np.uint8)
    pts = np.array([[10.0, 10], [40, 60], [30, 30]])
    for out in (draw_overlay(image, None, pts), draw_overlay(image, None, pts, names=["a", "b", "c"]),
                draw_overlay(image.astype(np.float32) / 255, pts + 2, pts, numbers=True)):
        assert out.shape == (80, 64, 3)
        assert ((out[..., 0] > 200) & (out[..., 1] < 60)).any()


@pytest.mark.parametrize("error, colour", [(1.2, GOOD), (3.0, FAIR), (5.5, POOR)])
def test_the_line_from_truth_to_prediction_takes_the_colour_of_its_error(error, colour):
    assert error_colour(error) == colour
    image = np.zeros((600, 600), np.uint8)
    out = draw_overlay(image, np.array([[200.0, 300]]), np.array([[320.0, 300]]), numbers=True, names=["pogonion"],
                       errors_mm=np.array([error]))
    assert tuple(out[300, 260]) == colour  # the middle of the line
    assert (np.abs(out[..., :3].astype(int) - TRUTH).sum(-1) < 30).any()  # the truth circle
    assert (np.abs(out[..., :3].astype(int) - PRED).sum(-1) < 30).any()  # the prediction cross


def test_a_flagged_landmark_is_drawn_in_its_own_colour():
    image = np.zeros((600, 600), np.uint8)
    pts = np.array([[200.0, 300], [400, 300]])
    out = draw_overlay(image, None, pts, names=["a", "b"], flags=["", "outside the image"])
    magenta = (out[..., 0] > 200) & (out[..., 1] < 60) & (out[..., 2] > 200)
    assert magenta[280:320, 380:420].any() and not magenta[280:320, 180:220].any()


def _png(path) -> Image.Image:
    data = path.read_bytes()
    assert data[:8] == b"\x89PNG\r\n\x1a\n" and len(data) < 400_000
    img = Image.open(io.BytesIO(data))
    img.load()
    return img


def test_the_error_and_sdr_plots_are_png_files_of_a_readable_size(tmp_path):
    rng = np.random.default_rng(0)
    errors = rng.rayleigh(1.0, (40, 19)) * np.linspace(0.7, 2.5, 19)
    summary = summarize(errors, NAMES)
    bars = _png(error_per_landmark_plot(summary, tmp_path / "bars.png"))
    assert 600 <= bars.width <= 1400 and 500 <= bars.height <= 1400
    curve = _png(sdr_curve_plot(errors, tmp_path / "sdr.png", reference=errors * 2))
    assert 500 <= curve.width <= 1400 and 350 <= curve.height <= 1000
    assert sorted(p.name for p in write_report_plots(tmp_path / "report", summary, errors)) == [
        "error_per_landmark.png", "sdr_curve.png"]
    assert not list(tmp_path.rglob("*.tmp"))


def _sweep(tmp_path, epochs=(5, 10, 20), lrs=("0.001", "0.0003")):
    rows, n = [], 0
    for lr in lrs:
        for e in epochs:
            job = tmp_path / "sweep" / str(n)
            (job / ".hydra").mkdir(parents=True)
            (job / ".hydra" / "overrides.yaml").write_text(f"- optimizer.lr={lr}\n- trainer.max_epochs={e}\n")
            (job / "csv").mkdir()
            pd.DataFrame({"epoch": np.repeat(np.arange(e), 2), "step": np.arange(2 * e),
                          "val/mre": [v for i in range(e) for v in (np.nan, 4 / (1 + i))]}).to_csv(
                job / "csv" / "metrics.csv", index=False)
            rows.append({"job": str(n), "overrides": f"optimizer.lr={lr} trainer.max_epochs={e}", "status": "done",
                         "mre": 3 / e ** 0.3, "best_val_mre": 2.5 / e ** 0.3})
            n += 1
    return tmp_path / "sweep", pd.DataFrame(rows)


def test_the_sweep_plot_draws_a_table_of_jobs_and_per_epoch_curves(tmp_path):
    sweep_dir, table = _sweep(tmp_path)
    by_epochs = _png(sweep_plot(table, tmp_path / "table.png"))
    assert by_epochs.width >= 500 and by_epochs.height >= 350
    curves = sweep_curves(sweep_dir)
    assert set(curves.columns) == {"job", "overrides", "epoch", "val_mre"}
    assert len(curves) == 2 * (5 + 10 + 20) and curves["val_mre"].notna().all()
    _png(sweep_plot(curves, tmp_path / "curves.png"))


def test_per_epoch_curves_are_read_from_tensorboard_events_too_and_a_sweep_plot_never_fails_a_sweep(tmp_path):
    from torch.utils.tensorboard import SummaryWriter

    from landmark_exp.pictures import write_sweep_plot

    job = tmp_path / "sweep" / "0"
    (job / ".hydra").mkdir(parents=True)
    (job / ".hydra" / "overrides.yaml").write_text("- trainer.max_epochs=3\n")
    with SummaryWriter(str(job / "tensorboard")) as writer:
        for epoch in range(3):  # as Lightning logs them: at the global step, with the epoch beside
            writer.add_scalar("epoch", epoch, 10 * epoch + 9)
            writer.add_scalar("val/mre", 3 - epoch / 2, 10 * epoch + 9)
    curves = sweep_curves(tmp_path / "sweep")
    assert curves["epoch"].tolist() == [0, 1, 2] and curves["val_mre"].tolist() == [3.0, 2.5, 2.0]
    assert write_sweep_plot(tmp_path / "sweep", pd.DataFrame()) == tmp_path / "sweep" / "sweep_val_mre.png"
    with pytest.warns(UserWarning, match="sweep plot not drawn"):
        assert write_sweep_plot(tmp_path / "missing", pd.DataFrame()) is None


def test_a_128_px_model_input_gives_a_tensorboard_image_of_at_least_512_px():
    rng = np.random.default_rng(0)
    image = rng.uniform(0, 1, (128, 128)).astype(np.float32)
    true = ISBI_151 * 128 / np.array([1935, 2400])
    out = tensorboard_overlay(image, true, true + 1.5)
    assert out.dtype == np.uint8 and out.ndim == 3 and out.shape[2] == 3 and min(out.shape[:2]) >= 512
    assert ((out[..., 0] > 200) & (out[..., 1] < 60)).any()  # prediction crosses
    assert ((out[..., 1] > 180) & (out[..., 0] < 60)).any()  # truth circles
    wide = tensorboard_overlay(np.zeros((64, 80), np.float32), None, np.array([[10.0, 10]]), size=256)
    assert wide.shape[:2] == (256, 320)

"""X-ray overlays a clinician reads, drawn with OpenCV and sized to the image (a 1935x2400 X-ray and a 512 px
TensorBoard thumbnail read alike): numbered landmarks with leader lines, placed clear of every cross and label,
a legend of names, truth -> prediction lines coloured by error, flagged landmarks apart."""

from __future__ import annotations

from collections.abc import Sequence
from typing import NamedTuple

import cv2
import numpy as np

Box = tuple[float, float, float, float]  # x0, y0, x1, y1 in canvas pixels
FONT = cv2.FONT_HERSHEY_DUPLEX
TRUTH, PRED, FLAG, LABEL, LINK, WHITE = (0, 210, 0), (230, 0, 0), (255, 0, 255), (255, 255, 0), (0, 190, 255), (235,) * 3
GOOD, FAIR, POOR = (0, 225, 0), (255, 200, 0), (255, 45, 45)
LEGEND_MIN_SIDE = 256  # below this an image has no room for 19 names: legend="auto" draws the numbers alone


def error_colour(mm: float) -> tuple[int, int, int]:
    """RGB: green under 2 mm, yellow from 2 to 4 mm, red over 4 mm."""
    return GOOD if mm < 2 else FAIR if mm <= 4 else POOR


class Style(NamedTuple):
    """Sizes for one image: marker half-size, line width, font scale and stroke (px)."""

    marker: int
    line: int
    scale: float
    stroke: int


def style_for(shape: tuple[int, ...]) -> Style:
    """Markers ~1/130 of the longer side (18 px on a 2400 px X-ray, 5 px on a 512 px thumbnail), digits ~1/90
    of it (27 px, 11 px): the same share of the picture at any size, and never under 8 px of text."""
    side = max(shape[:2])
    text_px = max(min(11.0, side / 8), side / 90)
    return Style(marker=round(max(side / 130, min(5, side / 20))), line=max(1, min(2, side // 256), round(side / 700)),
                 scale=text_px / 21.0, stroke=max(1, round(text_px / 13)))


def _text_box(text: str, st: Style, scale: float | None = None) -> tuple[int, int, int]:
    """(width, height above baseline, descent) of `text`, with a pad of one stroke all round."""
    (w, h), base = cv2.getTextSize(text, FONT, st.scale if scale is None else scale, st.stroke)
    return w + 2 * st.stroke + 2, h + st.stroke + 1, base + st.stroke + 1


def _put(rgb: np.ndarray, text: str, origin: tuple[int, int], st: Style, colour, scale: float | None = None) -> None:
    """Text with a dark outline: readable on bone and on air alike. The outline is the text itself drawn around
    its place at the same stroke: OpenCV advances each glyph further at stroke 2 and more than at stroke 1, so a
    thicker outline would drift right of thin text (a ghost of the last letters on 1,300-2,000 px images)."""
    scale = st.scale if scale is None else scale
    r = st.stroke
    for dx, dy in ((-r, -r), (0, -r), (r, -r), (-r, 0), (r, 0), (-r, r), (0, r), (r, r)):
        cv2.putText(rgb, text, (origin[0] + dx, origin[1] + dy), FONT, scale, (0, 0, 0), st.stroke, cv2.LINE_AA)
    cv2.putText(rgb, text, origin, FONT, scale, colour, st.stroke, cv2.LINE_AA)


def place_labels(points: np.ndarray, sizes: Sequence[tuple[float, float]], obstacles: Sequence[Box],
                 bounds: tuple[float, float], gap: float) -> list[Box]:
    """Greedy label placement: label i (w, h) goes to the first free spot on rings of growing radius around
    points[i] (inside `bounds` (W, H), clear of every obstacle and earlier label, its leader line crossing
    none), else the spot that overlaps least. Crowded points choose first; on each ring the directions away
    from the neighbours come first. Returns the boxes in the order of `points`."""
    pts = np.asarray(points, dtype=float).reshape(-1, 2)
    obst = np.asarray(obstacles, dtype=float).reshape(-1, 4)
    dist = np.linalg.norm(pts[:, None] - pts[None], axis=-1)
    reach = 8 * gap
    angles = np.linspace(0, 2 * np.pi, 32, endpoint=False)
    radii = gap * np.array([1.5, 2.2, 3, 4, 5.5, 7.5, 10, 13, 17, 22, 30])
    t = np.linspace(0.15, 1, 12)[:, None]  # samples along a leader line
    boxes: list[Box | None] = [None] * len(pts)
    placed = np.zeros((0, 4))
    for i in np.argsort(-(dist < reach).sum(1), kind="stable"):
        (w, h), p = sizes[i], pts[i]
        near = pts[(dist[i] < reach) & (dist[i] > 0)]
        away = p - near.mean(0) if len(near) else np.array([1.0, -1.0])
        turn = np.abs(np.angle(np.exp(1j * (angles - np.arctan2(away[1], away[0])))))
        a = np.tile(angles[np.argsort(turn, kind="stable")], len(radii))
        r = np.repeat(radii, len(angles))
        cx, cy = p[0] + np.cos(a) * (r + w / 2), p[1] + np.sin(a) * (r + h / 2)
        cand = np.stack([cx - w / 2, cy - h / 2, cx + w / 2, cy + h / 2], axis=1)
        others = np.concatenate([obst, placed])
        overlap = ((cand[:, None, 0] < others[None, :, 2]) & (others[None, :, 0] < cand[:, None, 2])
                   & (cand[:, None, 1] < others[None, :, 3]) & (others[None, :, 1] < cand[:, None, 3])).sum(1)
        outside = (cand[:, 0] < 0) | (cand[:, 1] < 0) | (cand[:, 2] > bounds[0]) | (cand[:, 3] > bounds[1])
        # the leader: from the box's nearest point to p; obstacles around p itself (its own cross) do not count
        end = np.stack([np.clip(p[0], cand[:, 0], cand[:, 2]), np.clip(p[1], cand[:, 1], cand[:, 3])], axis=1)
        s = p + t[None] * (end[:, None] - p)  # (M, 12, 2)
        mine = (others[:, 0] <= p[0]) & (p[0] <= others[:, 2]) & (others[:, 1] <= p[1]) & (p[1] <= others[:, 3])
        o = others[~mine]
        crossed = ((s[..., None, 0] > o[:, 0]) & (s[..., None, 0] < o[:, 2]) & (s[..., None, 1] > o[:, 1])
                   & (s[..., None, 1] < o[:, 3])).any(axis=(1, 2))
        cost = 1e6 * outside + 1e3 * overlap + 1e2 * crossed + np.arange(len(cand))
        best = cand[int(np.argmin(cost))]
        boxes[i] = tuple(float(v) for v in best)
        placed = np.vstack([placed, best])
    return boxes  # type: ignore[return-value]


def legend_lines(names: Sequence[str], true: np.ndarray | None = None, errors_mm: np.ndarray | None = None,
                 flags: Sequence[str] | None = None) -> list[tuple[str, tuple, str | None]]:
    """(text, RGB colour, symbol) per legend line: the key to the symbols drawn, then "number  name [error]
    [!]" per landmark, coloured by its error (flagged or not: a whole image flagged keeps its errors
    readable), else magenta when flagged."""
    flags = list(flags) if flags is not None else [""] * len(names)
    lines: list[tuple[str, tuple, str | None]] = []
    if true is not None:
        lines.append(("truth", TRUTH, "circle"))
    lines.append(("prediction", PRED, "cross"))
    if true is not None and errors_mm is not None:
        lines += [("error < 2 mm", GOOD, "line"), ("error 2-4 mm", FAIR, "line"), ("error > 4 mm", POOR, "line")]
    elif true is not None:
        lines.append(("truth -> prediction", LINK, "line"))
    if any(flags):  # one reason for all: say it
        lines.append((f"! flagged: {flags[0] if len(set(flags)) == 1 else 'do not trust'}", FLAG, "flag"))
    lines.append(("", WHITE, None))
    for k, name in enumerate(names):
        text, colour = f"{k + 1:>2}  {str(name).replace('_', ' ')}", WHITE
        if errors_mm is not None and np.isfinite(errors_mm[k]):
            text, colour = f"{text}  {errors_mm[k]:.1f} mm", error_colour(errors_mm[k])
        if flags[k]:  # the reason is in the CSV and JSON (the panel keeps its width); a known error keeps its colour
            text, colour = f"{text} !", FLAG if colour == WHITE else colour
        lines.append((text, colour, None))
    return lines


def _legend_size(lines, st: Style, scale: float) -> tuple[int, int, int, int]:
    """(width, height, line step, symbol column width) of the legend box."""
    boxes = [_text_box(t or "0", st, scale) for t, _, _ in lines]
    step = round(max(h + b for _, h, b in boxes) * 1.2)
    icon = round(step * 1.8) if any(s for _, _, s in lines) else 0
    pad = step // 2
    return max(w for w, _, _ in boxes) + icon + 2 * pad, len(lines) * step + 2 * pad, step, icon


def _draw_legend(rgb, lines, at: tuple[int, int], st: Style, scale: float, shade: bool) -> None:
    w, h, step, icon = _legend_size(lines, st, scale)
    x0, y0 = at
    if shade:  # a dark box over the image's corner
        roi = rgb[y0:y0 + h, x0:x0 + w]
        roi[:] = roi // 4
        cv2.rectangle(rgb, (x0, y0), (x0 + w - 1, y0 + h - 1), (140, 140, 140), st.line, cv2.LINE_AA)
    pad = step // 2
    for n, (text, colour, symbol) in enumerate(lines):
        base = y0 + pad + (n + 1) * step - step // 4
        cx, cy, m = x0 + pad + icon // 2 - step // 4, base - step // 3, min(st.marker, step // 3)
        if symbol == "circle":
            cv2.circle(rgb, (cx, cy), m, colour, st.line, cv2.LINE_AA)
        elif symbol in ("cross", "flag"):
            cv2.drawMarker(rgb, (cx, cy), colour, cv2.MARKER_CROSS if symbol == "cross" else cv2.MARKER_DIAMOND,
                           2 * m, st.line, cv2.LINE_AA)
        elif symbol == "line":
            cv2.line(rgb, (cx - icon // 3, cy), (cx + icon // 3, cy), colour, 2 * st.line, cv2.LINE_AA)
        _put(rgb, text, (x0 + pad + icon, base), st, colour, scale)


def _legend_spot(grey: np.ndarray, size: tuple[int, int], points: np.ndarray,
                 margin: int) -> tuple[tuple[int, int], bool]:
    """The image corner for a legend of `size` that covers the fewest landmarks, then the least anatomy, and
    whether it is clear: no landmark, three quarters of it darker than 30 % grey, at most 45 % x 95 % of it."""
    H, W = grey.shape
    w, h = size
    best = None
    for x0, y0 in ((W - w - margin, H - h - margin), (W - w - margin, margin), (margin, H - h - margin), (margin, margin)):
        x0, y0 = max(0, x0), max(0, y0)
        covered = int(((points[:, 0] > x0 - 3 * margin) & (points[:, 0] < x0 + w + 3 * margin)
                       & (points[:, 1] > y0 - 3 * margin) & (points[:, 1] < y0 + h + 3 * margin)).sum())
        level = float(np.percentile(grey[y0:y0 + h:4, x0:x0 + w:4], 75)) / 255
        if best is None or (covered, level) < best[:2]:
            best = (covered, level, (x0, y0))
    covered, level, spot = best  # type: ignore[misc]
    return spot, covered == 0 and level < 0.3 and w <= 0.45 * W and h <= 0.95 * H


def _grey_u8(image: np.ndarray) -> np.ndarray:
    if image.dtype == np.uint8:
        return image
    return (np.clip(image.astype(np.float32), 0, 1) * 255).astype(np.uint8)


def draw_overlay(image: np.ndarray, true: np.ndarray | None, pred: np.ndarray, numbers: bool = False,
                 names: Sequence[str] | None = None, *, errors_mm: np.ndarray | None = None,
                 flags: Sequence[str] | None = None, legend: str = "auto") -> np.ndarray:
    """Grey image (H, W) float in [0, 1] or uint8, + (K, 2) landmarks in its pixels (x = column) -> RGB uint8.

    Prediction: red crosses; truth (when given): green circles, each joined to its prediction by a line coloured
    by `errors_mm` (green < 2, yellow 2-4, red > 4 mm), or cyan without it. `numbers` or `names`: each cross
    gets its number on a dark tag, clear of every cross, line and other number, with a leader line to it.
    `names`: a legend "number name [error] [flag]" in the darkest corner that covers no landmark, else in a
    panel right of the image (legend="auto"; "corner", "panel" or "none" force one; "auto" draws none on an
    image under 256 px, too small for 19 names). `flags`: a string per landmark, "" = fine; a flagged one is a
    magenta diamond, its number and legend line magenta with the reason. Pixel coordinates are unchanged: the
    panel only widens the canvas.
    """
    if legend not in ("auto", "corner", "panel", "none"):
        raise ValueError(f"legend={legend!r}: expected 'auto', 'corner', 'panel' or 'none'")
    grey = _grey_u8(np.asarray(image))
    rgb = cv2.cvtColor(grey, cv2.COLOR_GRAY2RGB)
    H, W = grey.shape
    st = style_for(grey.shape)
    m = st.marker
    pred = np.asarray(pred, dtype=float).reshape(-1, 2)
    flags = [str(f or "") for f in flags] if flags is not None else [""] * len(pred)
    truth = None if true is None else np.asarray(true, dtype=float).reshape(-1, 2)
    err = None if errors_mm is None else np.asarray(errors_mm, dtype=float).ravel()
    ok = np.isfinite(pred).all(1)
    pad = m + st.line
    obstacles: list[Box] = [(x - pad, y - pad, x + pad, y + pad) for x, y in pred[ok]]
    if truth is not None:
        for j, ((tx, ty), (px, py)) in enumerate(zip(truth, pred, strict=True)):
            if not np.isfinite([tx, ty]).all():
                continue
            cv2.circle(rgb, (round(tx), round(ty)), m, TRUTH, st.line, cv2.LINE_AA)
            obstacles.append((tx - pad, ty - pad, tx + pad, ty + pad))
            if not ok[j]:
                continue
            colour = LINK if err is None or not np.isfinite(err[j]) else error_colour(err[j])
            d = np.hypot(px - tx, py - ty)
            if d > m:  # from the circle's edge: the truth's own spot stays visible
                sx, sy = tx + (px - tx) * m / d, ty + (py - ty) * m / d
                cv2.line(rgb, (round(sx), round(sy)), (round(px), round(py)), colour, st.line + 1, cv2.LINE_AA)
            n = int(d // m)  # the line is an obstacle too: no number hides an error
            obstacles += [(x - m / 2, y - m / 2, x + m / 2, y + m / 2)
                          for x, y in zip(np.linspace(tx, px, n + 2), np.linspace(ty, py, n + 2), strict=True)]
    for j in np.flatnonzero(ok):
        c = (round(pred[j, 0]), round(pred[j, 1]))
        if flags[j]:
            cv2.drawMarker(rgb, c, FLAG, cv2.MARKER_DIAMOND, 2 * m, st.line, cv2.LINE_AA)
        cv2.drawMarker(rgb, c, FLAG if flags[j] else PRED, cv2.MARKER_CROSS, 2 * m, st.line, cv2.LINE_AA)
    lines = legend_lines(names, truth, err, flags) if names is not None else []
    mode = "none" if not lines or (legend == "auto" and max(H, W) < LEGEND_MIN_SIDE) else legend
    if mode in ("auto", "corner"):
        size = _legend_size(lines, st, st.scale)[:2]
        everything = pred if truth is None else np.concatenate([pred, truth])
        spot, clear = _legend_spot(grey, size, everything[np.isfinite(everything).all(1)], m)
        mode = "corner" if clear or mode == "corner" else "panel"
        if mode == "corner":
            obstacles.append((spot[0], spot[1], spot[0] + size[0], spot[1] + size[1]))
    if numbers or names is not None:
        _draw_numbers(rgb, pred, ok, flags, obstacles, st)
    if mode == "corner":
        _draw_legend(rgb, lines, spot, st, st.scale, shade=True)
    elif mode == "panel":
        lscale = st.scale
        while _legend_size(lines, st, lscale)[1] > H and lscale > 0.2:  # a legend taller than the image: smaller
            lscale *= 0.9
        w, h, _, _ = _legend_size(lines, st, lscale)
        rgb = np.concatenate([rgb, np.full((H, w + 2 * m, 3), 28, np.uint8)], axis=1)
        _draw_legend(rgb, lines, (W + m, max(0, (H - h) // 2)), st, lscale, shade=False)
    return rgb


def _draw_numbers(rgb, pred, ok, flags, obstacles, st: Style) -> None:
    """Each landmark's number on a dark tag placed by `place_labels`, with a leader line to its cross."""
    H, W = rgb.shape[:2]
    texts = {j: str(j + 1) for j in np.flatnonzero(ok)}
    sizes = {j: _text_box(t, st) for j, t in texts.items()}
    boxes = place_labels(pred[ok], [(w, h + b) for w, h, b in sizes.values()], obstacles, (W, H), st.marker)
    for (j, text), (x0, y0, x1, y1) in zip(texts.items(), boxes, strict=True):
        colour = FLAG if flags[j] else LABEL
        end = np.array([np.clip(pred[j, 0], x0, x1), np.clip(pred[j, 1], y0, y1)])
        v = end - pred[j]
        if np.hypot(*v) > st.marker * 1.2:  # the leader starts just outside the cross
            a = tuple(np.round(pred[j] + v / np.hypot(*v) * st.marker * 1.1).astype(int))
            b = tuple(np.round(end).astype(int))
            cv2.line(rgb, a, b, (0, 0, 0), st.line + 2, cv2.LINE_AA)
            cv2.line(rgb, a, b, colour, st.line, cv2.LINE_AA)
        x0, y0, x1, y1 = (round(v) for v in (x0, y0, x1, y1))
        tag = rgb[max(0, y0):y1, max(0, x0):x1]
        tag[:] = tag // 3  # a dark tag: yellow digits read on white bone too
        _put(rgb, text, (x0 + st.stroke + 1, y1 - sizes[j][2]), st, colour)


def tensorboard_overlay(image: np.ndarray, true: np.ndarray | None, pred: np.ndarray,
                        size: int = 512) -> np.ndarray:
    """A model-input image (H, W) enlarged so that its shorter side is at least `size` px, with numbered truth
    and prediction drawn as `draw_overlay` does: (H', W', 3) uint8 for `add_image(..., dataformats="HWC")`."""
    grey = np.clip(np.asarray(image, dtype=np.float32), 0, 1) if image.dtype != np.uint8 else image
    f = max(1.0, size / min(grey.shape[:2]))
    big = cv2.resize(grey, (round(grey.shape[1] * f), round(grey.shape[0] * f)), interpolation=cv2.INTER_CUBIC)

    def up(xy):  # pixel centres scale about themselves
        return None if xy is None else (np.asarray(xy, dtype=float) + 0.5) * f - 0.5

    return draw_overlay(big, up(true), up(pred), numbers=True)

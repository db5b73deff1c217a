"""What predict's safety checks cost: the same folder predicted with them and without, alternately, in one process.

    python -m benchmarks.predict_checks --ckpt <run>/checkpoints/best.ckpt \
        --input ../shared/data/isbi2015/RawImage/Test1Data [--repeats 3] [--runtime auto]

Also times the checks themselves inside a run (so their cost is told apart from what their results change, e.g.
flagged landmarks drawn on the overlays). The checks: each image's header (pixel limit, minimum side), its pixel rows and finiteness (`read_grey`), the
heatmap flags of every landmark (`heatmap.quality.heatmap_flags`), the output folder's lock, earlier-results scan
and input-overwrite test. "Without" replaces the per-image ones by no-ops. Prints the median wall time of each
and their ratio; the machine is noisy, so the two alternate and the medians are compared.
"""

from __future__ import annotations

import argparse
import contextlib
import platform
import statistics
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

import torch

import landmark_exp.cascade as cascade
import landmark_exp.data.decoding as images  # where the per-image checks live
import landmark_exp.predictor as predictor_module
from landmark_exp.backends import pick_runtime
from landmark_exp.folders import refuse_overwriting_inputs, run_lock
from landmark_exp.heatmap.quality import HeatmapFlags
from landmark_exp.inputs import collect_inputs, unique_ids
from landmark_exp.predict import run_predictions
from landmark_exp.prediction_files import earlier_results, image_outputs


def _no_flags(heatmaps: torch.Tensor, *args: object, **kwargs: object) -> HeatmapFlags:
    b, k = heatmaps.shape[:2]
    zeros = torch.zeros(b, k, dtype=torch.int64)
    return HeatmapFlags(codes=zeros, peaks=zeros + 1)


@contextlib.contextmanager
def checks_off() -> Iterator[None]:
    """The per-image checks replaced by no-ops (the image is still decoded the same way)."""
    saved = {name: getattr(images, name) for name in ("_check_size", "_check_finite") if hasattr(images, name)}
    flags = predictor_module.heatmap_flags
    try:
        for name in saved:
            setattr(images, name, lambda *a, **k: None)
        predictor_module.heatmap_flags = _no_flags
        yield
    finally:
        for name, fn in saved.items():
            setattr(images, name, fn)
        predictor_module.heatmap_flags = flags


SPENT: dict[str, float] = {}  # seconds inside each check during the last run with checks on


@contextlib.contextmanager
def timed_checks() -> Iterator[None]:
    """The checks wrapped in timers (adding to SPENT): what they cost, apart from what their results change."""
    SPENT.clear()

    def timer(name: str, fn):
        def wrapped(*a, **k):
            start = time.perf_counter()
            try:
                return fn(*a, **k)
            finally:
                SPENT[name] = SPENT.get(name, 0.0) + time.perf_counter() - start
        return wrapped

    saved = {("images", n): getattr(images, n) for n in ("_check_size", "_check_finite") if hasattr(images, n)}
    flags = predictor_module.heatmap_flags
    try:
        for (_, n), fn in saved.items():
            setattr(images, n, timer("image checks", fn))
        predictor_module.heatmap_flags = timer("heatmap flags", flags)
        yield
    finally:
        for (_, n), fn in saved.items():
            setattr(images, n, fn)
        predictor_module.heatmap_flags = flags


def one_run(predictor, files: list[Path], checks: bool) -> float:
    with tempfile.TemporaryDirectory(prefix="predict_checks_") as tmp:
        out = Path(tmp)
        start = time.perf_counter()
        with timed_checks() if checks else checks_off():
            if checks:
                folder = time.perf_counter()
                refuse_overwriting_inputs([p for i in unique_ids(files) for p in image_outputs(out, i)], files)
                earlier_results(out)
                SPENT["output folder"] = time.perf_counter() - folder
            with run_lock(out) if checks else contextlib.nullcontext():
                results, failures = run_predictions(predictor, files, out, (0.1, 0.1), batch_size=8, overlay=True)
        wall = time.perf_counter() - start
    assert len(results) == len(files) and not failures
    return wall


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--ckpt", required=True)
    parser.add_argument("--input", required=True)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--runtime", default="auto")
    args = parser.parse_args()
    files = collect_inputs(args.input)
    predictor = cascade.load_predictor(args.ckpt, "cpu", runtime=pick_runtime(args.runtime, "cpu", len(files)))
    one_run(predictor, files[:8], True)  # warm-up: first-call costs outside the timings
    walls: dict[bool, list[float]] = {True: [], False: []}
    for r in range(args.repeats):
        for checks in (True, False) if r % 2 == 0 else (False, True):
            walls[checks].append(one_run(predictor, files, checks))
            print(f"repeat {r + 1}: checks {'on ' if checks else 'off'} {walls[checks][-1]:.2f} s", flush=True)
    on, off = statistics.median(walls[True]), statistics.median(walls[False])
    print(f"machine: {platform.processor() or platform.machine()}, {torch.get_num_threads()} torch threads; "
          f"{len(files)} images, {predictor.backend}")
    print(f"median wall: checks on {on:.2f} s, off {off:.2f} s; ratio on/off {on / off:.4f} "
          f"({100 * (on / off - 1):+.2f} %; includes what the flags change in the outputs)")
    inside = sum(SPENT.values())
    print("time inside the checks in the last run with them on: " + ", ".join(f"{k} {v:.3f} s" for k, v in SPENT.items())
          + f"; {inside:.3f} s in all, {100 * inside / walls[True][-1]:.2f} % of that run's {walls[True][-1]:.2f} s")


if __name__ == "__main__":
    main()

"""What predict.py does: new images -> landmarks (px and mm), confidences, measurements, overlays.

Each image gets `<id>.csv`, `<id>.json` (landmarks in pixels and millimetres with peak confidence, spread and
flag; for the 19 ISBI landmarks also the cephalometric measurements and their classes) and `<id>_overlay.jpg`;
the folder gets `predictions.csv`, `measurements.csv`, `failures.csv` and `summary.json`. A file that cannot
be read is listed with its reason and the others are still processed. Millimetres use the image's own spacing
where it has one, else `spacing=`, else the model's training data spacing (`inputs.image_spacing`).
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from pathlib import Path

import numpy as np
from omegaconf import DictConfig
from rich.progress import (
    BarColumn,
    MofNCompleteColumn,
    Progress,
    TextColumn,
    TimeElapsedColumn,
    TimeRemainingColumn,
)
from rich.table import Table

from landmark_exp.arguments import as_list, cascade_arguments, decoding_overrides, flag, plain, spacing_pair
from landmark_exp.backends import RUNTIMES, pick_runtime
from landmark_exp.cascade import CascadePredictor, load_predictor
from landmark_exp.data.images import read_ahead
from landmark_exp.data.records import ISBI2015_LANDMARKS, DataError, whole_number
from landmark_exp.files import write_csv, write_json
from landmark_exp.folders import refuse_overwriting_inputs, run_lock, writable_dir
from landmark_exp.inputs import collect_inputs, image_spacing, unique_ids
from landmark_exp.jobs import StopRequests, guard, show_config
from landmark_exp.pictures import draw_overlay
from landmark_exp.prediction_files import (
    RUN_FILES,
    clear_earlier,
    finished,
    image_outputs,
    landmarks_frame,
    write_summary,
)
from landmark_exp.predictor import LandmarkPrediction, Predictor
from landmark_exp.reports import console, measurements_table, save_jpeg

WARN_IMAGES = 5  # flagged images warned about one by one; the rest are counted at the end (and in summary.json)


def _write_image_outputs(out_dir: Path, image_id: str, path: Path, image: np.ndarray, pred: LandmarkPrediction,
                         spacing: tuple[float, float], spacing_source: str, predictor: Predictor | CascadePredictor,
                         overlay: bool) -> dict:
    names = predictor.info.landmark_names
    frame = landmarks_frame(pred, spacing, names)
    record: dict = {
        "id": image_id, "file": str(path), "size_hw": list(image.shape[:2]), "spacing_mm": list(spacing),
        "spacing_source": spacing_source, **_models(predictor), "backend": predictor.backend,
        "landmarks": frame.to_dict(orient="records"),
        "flagged": [{"landmark": j + 1, "name": names[j], "reason": f} for j, f in enumerate(pred.flags) if f],
        # the image's least reliable landmark (over 1: flagged); null without a calibrated detector
        "image_reliability": None if pred.reliability is None else float(np.max(pred.reliability)),
        # its distance from the detector's training images (over 1: unlike all of them); null without a reference
        "domain_distance": float(pred.signals["domain"][0]) if "domain" in pred.signals else None,
    }
    if list(names) == list(ISBI2015_LANDMARKS):
        from landmark_exp.cephalometry import analyse

        record["measurements"] = analyse(frame[["x_mm", "y_mm"]].to_numpy())
    write_csv(out_dir / f"{image_id}.csv", frame)
    if overlay:
        save_jpeg(out_dir / f"{image_id}_overlay.jpg", draw_overlay(image, None, pred.xy, names=names,
                                                                            flags=list(pred.flags)))
    write_json(out_dir / f"{image_id}.json", record)  # last: an image whose JSON exists is done (resume=true)
    return record


def _models(predictor: Predictor | CascadePredictor) -> dict:
    if isinstance(predictor, CascadePredictor):
        return {"model": predictor.first.info.source, "refine_model": predictor.second.info.source,
                "refine_iterations": predictor.iterations, "refine_shifts": predictor.shifts,
                "refine_views": predictor.views, "refine_blend": predictor.blend}
    return {"model": predictor.info.source}


def run_predictions(predictor: Predictor | CascadePredictor, files: Sequence[Path], out_dir: Path,
                    spacing: tuple[float, float] | None, batch_size: int = 4, overlay: bool = True,
                    read_workers: int | None = None, done: dict[str, dict] | None = None,
                    stop: StopRequests | None = None, max_pixels: int | None = None,
                    min_side: int | None = None) -> tuple[list[dict], list[dict]]:
    """Predict every file in batches behind a progress bar (images decoded in `read_workers` threads ahead of
    the network); returns (results, failures with their reasons). `done`: records of images already predicted
    (resume), not read again. `stop`: once a stop is requested, the image in hand is finished, the others
    left."""
    ids = unique_ids(files)
    done = done or {}
    results: list[dict] = [done[i] for i in ids if i in done]
    todo = [(f, i) for f, i in zip(files, ids, strict=True) if i not in done]
    failures: list[dict] = []
    warned = 0
    columns = (TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn(),
               TimeRemainingColumn())
    # each image is decoded and resized to the network input in the reader threads
    images = read_ahead([f for f, _ in todo], predictor.info.normalize, read_workers, depth=2 * batch_size,
                        then=lambda image: (image, predictor.prepare(image)), max_pixels=max_pixels,
                        min_side=min_side)
    with Progress(*columns, console=console, disable=len(files) < 2) as progress:
        task = progress.add_task("predicting", total=len(files), completed=len(results))
        for start in range(0, len(todo), batch_size):
            if stop is not None and stop.requested:
                break
            batch = []
            for path, image_id in todo[start : start + batch_size]:
                try:
                    read = next(images)
                    if isinstance(read, DataError):
                        raise read
                    image, prepared = read
                    sp, source = image_spacing(path, spacing)
                except DataError as e:
                    failures.append({"file": str(path), "reason": str(e).removeprefix(f"{path}: ")})
                    progress.advance(task)
                    continue
                batch.append((path, image_id, image, prepared, sp, source))
            preds = predictor.predict([b[2] for b in batch], [b[3] for b in batch])
            for (path, image_id, image, _, sp, source), pred in zip(batch, preds, strict=True):
                results.append(_write_image_outputs(out_dir, image_id, path, image, pred, sp, source, predictor, overlay))
                warned += _warn_flagged(path, results[-1]["flagged"], warned, results[-1]["domain_distance"])
                progress.advance(task)
                if stop is not None and stop.requested:
                    break
    return results, failures


def _warn_flagged(path: Path, flagged: list[dict], warned: int, domain: float | None = None) -> int:
    """One warning line for an image with landmarks that cannot be trusted, for the first WARN_IMAGES such images."""
    if not flagged or warned >= WARN_IMAGES:
        return 0
    if domain is not None and domain > 1:
        console.print(f"[bold yellow]warning:[/] {path}: unlike the images the detector was trained on (distance "
                      f"{domain:.2f}, over 1): {len(flagged)} landmarks flagged; check them, or fine-tune the detector "
                      "to your site (landmark-adapt)", soft_wrap=True, highlight=False)
        return 1
    listed = ", ".join(f"{f['landmark']} {f['name']} ({f['reason']})" for f in flagged[:4])
    more = f" and {len(flagged) - 4} more" if len(flagged) > 4 else ""
    console.print(f"[bold yellow]warning:[/] {path}: landmarks that cannot be trusted: {listed}{more}",
                  soft_wrap=True, highlight=False)
    return 1


def _arguments(cfg: DictConfig) -> dict:
    """Every argument checked before any work (one line naming the argument otherwise)."""
    return {
        "batch_size": whole_number(cfg.get("batch_size", 8), "batch_size"),
        "read_workers": None if (w := cfg.get("read_workers")) is None else whole_number(w, "read_workers"),
        **cascade_arguments(cfg, RUNTIMES, "auto"),
        "spacing": spacing_pair(plain(cfg.get("spacing"))),
        "max_pixels": int(whole_number(cfg.get("max_megapixels", 100), "max_megapixels") * 1_000_000),
        "min_side": whole_number(cfg.get("min_side", 32), "min_side"),
        "overwrite": flag(cfg.get("overwrite", False), "overwrite"),
        "overlay": flag(cfg.get("overlay", True), "overlay"),
        "show": whole_number(cfg.get("show", 20), "show"),
        "resume": flag(cfg.get("resume", False), "resume"),
    }


def _prepare_output_dir(cfg: DictConfig, files: Sequence[Path], ids: Sequence[str]) -> Path:
    """The output folder, writable, holding no file this run reads; earlier results refused unless overwrite
    (then removed first, so predictions.csv always describes exactly the files beside it) or resume."""
    given = cfg.get("output_dir")
    out_dir = writable_dir(Path(str(given)) if given else Path(cfg.paths.output_dir), "output_dir",
                           create_parents=not given)
    planned = [out_dir / name for name in (*RUN_FILES, "config.yaml")]
    planned += [p for i in ids for p in image_outputs(out_dir, i)]
    models = [Path(str(p)) for key in ("ckpt_path", "refine_ckpt") for p in as_list(cfg.get(key))]
    refuse_overwriting_inputs(planned, [*files, *models], "output_dir")
    return out_dir


@guard
def predict(cfg: DictConfig) -> dict:
    """The Hydra job behind predict.py: load the model, predict every input, write and print the results."""
    args = _arguments(cfg)
    files = collect_inputs(plain(cfg.input))
    ids = unique_ids(files)
    out_dir = _prepare_output_dir(cfg, files, ids)
    with run_lock(out_dir), StopRequests() as stop:
        predictor = load_predictor(cfg.ckpt_path, args["device"], cfg.get("refine_ckpt"), args["refine_iterations"],
                                   pick_runtime(args["runtime"], args["device"], len(files)),
                                   cfg.get("refine_landmarks"), decoding_overrides(cfg.get("heatmap")),
                                   decoding_overrides(cfg.get("refine_heatmap"), "refine_heatmap"), args["tta_shifts"],
                                   args["refine_shifts"], args["refine_blend"], args["refine_views"])
        spacing, models = args["spacing"] or predictor.info.spacing, _models(predictor)
        done = finished(out_dir, files, ids, models["model"]) if args["resume"] else {}
        clear_earlier(out_dir, args)  # only once nothing can refuse the run any more
        show_config(cfg, out_dir)
        refined = f" refined by {cfg.refine_ckpt}" if cfg.get("refine_ckpt") else ""
        console.print(f"{len(files)} image(s){f' ({len(done)} done before)' if done else ''}, model "
                      f"{models['model']}{refined} ({predictor.backend} on {predictor.device}); "
                      "images without their own spacing: "
                      + (f"{spacing[0]:g} x {spacing[1]:g} mm/px" if spacing else "none set (spacing=...)")
                      + (" (the model's training spacing: set spacing= if your images differ)"
                         if spacing and not args["spacing"] else ""), soft_wrap=True)
        started = time.perf_counter()  # from here: reading, predicting and writing, not the model's start-up
        results, failures = run_predictions(predictor, files, out_dir, spacing, args["batch_size"],
                                            args["overlay"], args["read_workers"], done, stop,
                                            args["max_pixels"], args["min_side"])
        seconds = time.perf_counter() - started
        timing = {"seconds": round(seconds, 3), "images_per_second": round(len(results) / max(seconds, 1e-9), 3)}
        interrupted = ({"by": stop.by, "done": len(results) + len(failures), "of": len(files)}
                       if stop.requested else None)
        write_summary(out_dir, results, failures, {**models, "backend": predictor.backend,
                                                   "device": predictor.device, **timing}, interrupted)
    if interrupted:
        console.print(f"[bold red]interrupted[/] by {interrupted['by']}: {len(results)} of {len(files)} image(s) "
                      f"predicted, {len(failures)} failed; written to {out_dir} (resume=true finishes the rest)",
                      soft_wrap=True)
        raise SystemExit(stop.exit_status)
    measured = [r for r in results if "measurements" in r]
    if measured and len(measured) <= args["show"]:
        console.print(measurements_table(measured, "cephalometric measurements (value, class C1 = normal)"))
    if failures:
        table = Table("file", "reason", title=f"{len(failures)} image(s) not predicted, and why",
                      title_style="bold red")
        for f in failures:
            table.add_row(f["file"], f["reason"])
        console.print(table)
    if not results:
        raise DataError(f"none of the {len(files)} input file(s) could be read (see {out_dir / 'failures.csv'})")
    flagged = sum(bool(r.get("flagged")) for r in results)
    doubt = f", {flagged} with landmarks that cannot be trusted (summary.json 'flagged')" if flagged else ""
    console.print(f"{len(results)} image(s) predicted in {seconds:.1f} s ({timing['images_per_second']:.1f} images/s), "
                  f"{len(failures)} failed{doubt}; results in {out_dir}", soft_wrap=True, highlight=False)
    return {"n_images": len(results), "n_failed": len(failures), "out_dir": str(out_dir)}

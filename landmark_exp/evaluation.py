"""What evaluate.py does: a detector, checkpoint(s) or export scored on a split, through the same cascade predict
runs (`cascade.load_predictor`), so evaluate and predict give the same landmarks for the same file."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import numpy as np
from omegaconf import DictConfig, OmegaConf, open_dict
from rich.progress import track

from landmark_exp.arguments import cascade_arguments, decoding_overrides, flag, plain
from landmark_exp.backends import RUNTIMES, pick_runtime
from landmark_exp.cascade import CascadePredictor, load_predictor
from landmark_exp.data.datamodule import LandmarkDataModule
from landmark_exp.data.geometry import to_original
from landmark_exp.data.images import read_ahead
from landmark_exp.data.records import DataError, Record
from landmark_exp.folders import run_lock, writable_dir
from landmark_exp.guards import check_finite_metrics
from landmark_exp.isbi import isbi_extras
from landmark_exp.jobs import guard, show_config
from landmark_exp.loading import check_matches_data
from landmark_exp.predictor import Predictor
from landmark_exp.provenance import write_run_info
from landmark_exp.registry import build
from landmark_exp.reports import MEAN_SHAPE, console
from landmark_exp.scores import Scores, report, same_image_note

DATAMODULE_SPLITS = ("train", "val", "test")
MODEL_VIEW = ("input_size", "letterbox", "normalize", "patch")  # data settings a model was trained with


@guard
def evaluate(cfg: DictConfig) -> dict:
    """Load a model safely, predict a split, print and write the millimetre report."""
    out_dir = writable_dir(Path(cfg.paths.output_dir), "hydra.run.dir", create_parents=True)
    with run_lock(out_dir, "hydra.run.dir"):
        return _evaluate(cfg, out_dir)


def _arguments(cfg: DictConfig) -> dict:
    """Every argument checked before any work: a malformed value stops here, not after the first stage."""
    overlays = cfg.get("overlays", 8)
    if isinstance(overlays, bool) or not isinstance(overlays, int) or overlays < 0:
        raise DataError(f"overlays={overlays!r}: how many overlay images to write, a whole number >= 0")
    return {**cascade_arguments(cfg, RUNTIMES, "auto"), "overlays": overlays,
            "overwrite": flag(cfg.get("overwrite", False), "overwrite")}


def _evaluate(cfg: DictConfig, out_dir: Path) -> dict:
    args = _arguments(cfg)
    if (out_dir / "metrics.json").exists() and not args["overwrite"]:
        raise DataError(f"hydra.run.dir={out_dir}: holds an earlier evaluation (metrics.json); choose another "
                        "folder or overwrite=true")
    show_config(cfg, out_dir)
    write_run_info(out_dir)

    def load(runtime: str) -> Predictor | CascadePredictor:
        return load_predictor(cfg.ckpt_path, args["device"], cfg.get("refine_ckpt"), args["refine_iterations"],
                              runtime, plain(cfg.get("refine_landmarks")), decoding_overrides(cfg.get("heatmap")),
                              decoding_overrides(cfg.get("refine_heatmap"), "refine_heatmap"), args["tta_shifts"],
                              args["refine_shifts"], args["refine_blend"], args["refine_views"])

    predictor = load(pick_runtime(args["runtime"], args["device"]))
    stored = cfg.get("data") or (OmegaConf.create(predictor.data) if predictor.data else None)
    if cfg.get("data") and predictor.data:  # data=... says where the images are; the model, how it sees them
        stored = OmegaConf.create({**plain(stored), **{k: predictor.data[k] for k in MODEL_VIEW if k in predictor.data}})
    if stored is None:
        raise DataError(f"ckpt_path={cfg.ckpt_path}: an export carries no data config; give data=... (and its root)")
    data_cfg, split, scored = scored_split(cfg, stored)
    with open_dict(cfg):
        cfg.split = split
    dm: LandmarkDataModule = build(data_cfg, "data")
    # before decoding any image: a mismatch is known from the configs alone (a second stage's data: its patches)
    check_matches_data(predictor.info, cfg.ckpt_path, dm.num_landmarks, dm.landmark_names,
                       predictor.info.input_size if dm.patch else dm.model_input_size)
    _warn_if_members_saw_split(predictor, split, dm)
    dm.prepare_data()
    records = dm.split_records()[split]
    runtime = pick_runtime(args["runtime"], args["device"], len(records))  # predict.py's choice for as many images
    if runtime != pick_runtime(args["runtime"], args["device"]):
        predictor = load(runtime)
    scores = score(predictor, records, dm.landmark_names)
    check_finite_metrics(scores.summary, scored)
    extra: dict = {"source_split": scored} if scored != split else {}
    if isinstance(predictor, CascadePredictor):
        extra.update(refine_shifts=predictor.shifts, refine_views=predictor.views, refine_blend=predictor.blend)
        _say_where_refining_hurt(scores, predictor.refined, split)
    if list(data_cfg.get("train_splits") or []) != [scored]:  # else no training split (scored_split): none to match
        extra.update(same_image_note(scores, dm.same_images_as_training(split), scored))
    extra.update(isbi_extras(dm.source, scores, split, scored, out_dir, bool(cfg.get("compare_published", True))))
    skipped = getattr(dm.source, "skipped", [])
    if skipped:
        extra["skipped_samples"] = skipped
    if dm.folds is not None and split == "val":  # what landmark_exp.crossval pools: this run's fold
        extra["fold"] = {"folds": dm.folds, "fold": dm.fold, "data_seed": dm.seed}
    report(scores, out_dir, f"{scored} ({len(records)} images)", split, str(predictor.info.source),
           args["overlays"], extra)
    return scores.summary


def score(predictor: Predictor | CascadePredictor, records: Sequence[Record], names: list[str],
          batch_size: int = 8) -> Scores:
    """Predict every record's image as predict.py does and score it against the record's landmarks."""
    preds, refs = [], []
    images = read_ahead([r.image_path for r in records], predictor.info.normalize,
                        then=lambda image: (image, predictor.prepare(image)))
    batches = range(0, len(records), batch_size)
    for start in track(batches, description="predicting", console=console, transient=True, disable=len(batches) < 2 or not console.is_terminal):
        batch = [next(images) for _ in records[start:start + batch_size]]
        error = next((read for read in batch if isinstance(read, DataError)), None)
        if error is not None:
            raise error  # a scored split's image must be readable: the source checked its header already
        ims, prepared = [b[0] for b in batch], [b[1] for b in batch]
        if isinstance(predictor, CascadePredictor):
            final, firsts = predictor.predict_stages(ims, prepared)
        else:
            final, firsts = predictor.predict(ims, prepared), None
        preds += final
        refs += [f.xy for f in firsts] if firsts is not None else [_mean_shape(predictor, p) for p in final]
    name = "first stage" if isinstance(predictor, CascadePredictor) else MEAN_SHAPE
    calibrated = all(p.reliability is not None for p in preds)
    reasons = [list(p.flags or [""] * len(names)) for p in preds]
    return Scores(list(records), list(names), np.stack([p.xy for p in preds]),
                  np.stack([p.confidence for p in preds]), np.stack(refs), name,
                  reliability=np.stack([p.reliability for p in preds]) if calibrated else None,
                  flagged=np.array([[bool(f) for f in r] for r in reasons]), reasons=reasons,
                  signals={s: np.stack([p.signals[s] for p in preds]) for s in preds[0].signals} if preds else {})


def _mean_shape(predictor: Predictor, pred) -> np.ndarray:
    """The mean training shape placed in this image: what a detector that learned nothing would say."""
    shape = predictor.info.decoding.mean_shape
    if shape is None:
        return np.full_like(pred.xy, np.nan)
    return to_original(shape.detach().cpu().double().numpy(), pred.geometry.as_array())


def scored_split(cfg: DictConfig, data_cfg: DictConfig | dict) -> tuple[DictConfig, str, str]:
    """(data config to build, datamodule split to score, the report's name for it): `split` names the
    datamodule's train / val / test, or a source split by its own name (test1), scored whole as test;
    `data_root` points the stored data config at other files (e.g. where Test2 was unpacked)."""
    data_cfg = OmegaConf.create(plain(data_cfg) if not isinstance(data_cfg, dict) else data_cfg)
    if cfg.get("data_root"):
        data_cfg.source.root = str(cfg.data_root)
    split = str(cfg.split)
    if split not in DATAMODULE_SPLITS:
        data_cfg.test_split, data_cfg.random_split = split, None  # the whole source split, not a carved one
        if not data_cfg.get("train_splits"):  # nothing trains here: scoring a site's one CSV needs no other split
            data_cfg.train_splits, data_cfg.val_split, data_cfg.folds = [split], split, None
        return data_cfg, "test", split
    if split == "test" and data_cfg.get("random_split") is None and data_cfg.get("test_split"):
        return data_cfg, split, str(data_cfg.test_split)
    return data_cfg, split, split


def _warn_if_members_saw_split(predictor: Predictor | CascadePredictor, split: str, dm: LandmarkDataModule) -> None:
    """An ensemble scored on a split carved at random from the training pool, whose members carved it
    differently (other data seeds, other folds), has members that trained on some of its images: say so."""
    carvings = set(predictor.member_splits)
    carved = {"val", "test"} if dm.random_split is not None else ({"val"} if dm.val_split is None else set())
    if len(carvings) > 1 and split in carved:
        said = ", ".join("seed " + str(c[0]) + (f" fold {c[2]}/{c[1]}" if len(c) > 1 else "")
                         for c in sorted(carvings, key=str))
        console.print(f"[bold yellow]warning:[/] the ensemble's members carved the '{split}' split differently "
                      f"({said}): each trained on images of the others' split, so this score is optimistic",
                      soft_wrap=True)


def _say_where_refining_hurt(scores: Scores, refined: np.ndarray, split: str) -> None:
    """Name the refined landmarks whose error the second stage raised on this split. Chosen on validation,
    `refine_landmarks` can then keep their first-stage estimates (never choose it on the test split)."""
    names = scores.names
    ours, first = scores.errors.mean(axis=0), scores.reference_errors.mean(axis=0)
    worse = [j for j in range(len(names)) if refined[j] and ours[j] > first[j]]
    if not worse:
        return
    listed = ", ".join(f"{j + 1} {names[j]} ({first[j]:.2f} -> {ours[j]:.2f} mm)" for j in worse)
    helped = [str(j + 1) for j in range(len(names)) if refined[j] and j not in worse]
    console.print(f"second stage worse than the first on '{split}' for: {listed}. To keep their first estimates "
                  f"(choose this on validation, not test): refine_landmarks=[{','.join(helped)}]", soft_wrap=True)

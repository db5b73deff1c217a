"""What train.py and evaluate.py do, given a composed config. The entry points only call these."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import lightning as L
import numpy as np
import torch
from omegaconf import DictConfig, OmegaConf, open_dict

from landmark_exp.arguments import int_pairs, one_of
from landmark_exp.cascade import combine_stages, refine_iterations, refine_repeatedly, refine_selection
from landmark_exp.data.datamodule import LandmarkDataModule
from landmark_exp.data.images import read_grey
from landmark_exp.data.patches import patch_blend, patch_shifts, patch_views
from landmark_exp.data.records import CheckpointError, DataError
from landmark_exp.guards import NonFiniteGuard, check_finite_metrics
from landmark_exp.jobs import decoding_overrides, guard, plain, run_lock, show_config, writable_dir
from landmark_exp.loading import check_matches_data, load_module
from landmark_exp.metrics import radial_errors_mm, summarize
from landmark_exp.module import LandmarkModule
from landmark_exp.performance import for_inference
from landmark_exp.predictor import torch_predictor
from landmark_exp.provenance import write_run_info
from landmark_exp.registry import build
from landmark_exp.reports import (
    console,
    draw_overlay,
    outlier_landmarks,
    print_report,
    save_png,
    untrained_landmarks,
    warn_outliers,
    warn_untrained,
    write_json,
    write_results,
)


def build_module(cfg: DictConfig, dm: LandmarkDataModule) -> LandmarkModule:
    return LandmarkModule(
        # the data decide the input channels: 1, or 2 for a second stage with a context channel
        model={**plain(cfg.model), "in_channels": dm.input_channels},
        loss=plain(cfg.loss),
        optimizer=plain(cfg.optimizer),
        scheduler=plain(cfg.get("scheduler")),
        heatmap=plain(cfg.heatmap),
        num_landmarks=dm.num_landmarks,
        landmark_names=dm.landmark_names,
        input_size=list(dm.model_input_size),
        data=_with_spacing(plain(cfg.data), dm),
        **plain(cfg.get("module", {}) or {}),
    )


def _with_spacing(data: dict, dm: LandmarkDataModule) -> dict:
    """The data config as stored in checkpoints, with the source's pixel spacing written out (a source may set it
    itself, as the synthetic one does): predict uses it for images that carry none."""
    source = data.get("source")
    spacing = getattr(dm.source, "spacing", None)
    if isinstance(source, dict) and source.get("spacing") is None and spacing is not None:
        data = {**data, "source": {**source, "spacing": [float(s) for s in spacing]}}
    return data


def build_trainer(cfg: DictConfig, logger: bool = True) -> L.Trainer:
    """The configured Trainer plus what makes long runs safe: atomic checkpoint files, exact resume, NaN guard."""
    from landmark_exp.checkpoints import AtomicCheckpointIO, TrainingState

    callbacks = [build(c, f"callbacks.{k}") for k, c in (cfg.get("callbacks") or {}).items() if c and "_target_" in c]
    callbacks += [TrainingState(), NonFiniteGuard(**plain(cfg.get("trainer_guard") or {}))]
    loggers = ([build(c, f"logger.{k}") for k, c in (cfg.get("logger") or {}).items() if c and "_target_" in c]
               if logger else [])
    return build(cfg.trainer, "trainer", callbacks=callbacks, logger=loggers or False, plugins=[AtomicCheckpointIO()])


@guard
def train(cfg: DictConfig) -> dict:
    """Fit, test the best checkpoint, write metrics.json / per_landmark.csv / predictions.csv."""
    out_dir = Path(cfg.paths.output_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    show_config(cfg, out_dir)
    write_run_info(out_dir)
    L.seed_everything(cfg.seed, workers=True)
    dm: LandmarkDataModule = build(cfg.data, "data")
    dm.prepare_data()
    dm.setup("fit")
    module = build_module(cfg, dm)
    module.mean_shape.copy_(dm.mean_shape())
    trainer = build_trainer(cfg)
    trainer.fit(module, datamodule=dm, ckpt_path=cfg.get("ckpt_path"))
    val_mre = best_val_mre(trainer)
    split = cfg.get("eval_split", "test")
    if not cfg.get("test", True) or split not in dm.datasets:
        check_finite_metrics({"best_val_mre": val_mre}, "validation")
        if trainer.is_global_zero:  # still marks the run done (sweep table) with its validation score
            write_json(out_dir / "metrics.json", {"best_val_mre": val_mre, "split": None})
        return {"val_mre": val_mre}
    best = trainer.checkpoint_callback.best_model_path if trainer.checkpoint_callback else ""
    trainer.test(module, dataloaders=dm.dataloader(split), ckpt_path=best or None, weights_only=True)
    check_finite_metrics({**module.test_results.get("summary", {}), "best_val_mre": val_mre}, split)
    if trainer.is_global_zero:
        extra: dict[str, Any] = {"best_val_mre": val_mre}
        skipped = [s for cb in trainer.callbacks if isinstance(cb, NonFiniteGuard) for s in cb.skipped]
        if skipped:
            extra["skipped_nonfinite_steps"] = skipped
        report(module, dm, split, out_dir, title=f"{split} ({len(dm.datasets[split])} images)", best=best, extra=extra)
    return {**module.test_results.get("summary", {}), "val_mre": val_mre}


def best_val_mre(trainer: L.Trainer) -> float | None:
    """The monitored validation MRE of the checkpoint that is tested (else the last epoch's)."""
    cb = trainer.checkpoint_callback
    score = cb.best_model_score if cb is not None and getattr(cb, "monitor", None) == "val/mre" else None
    if score is None:
        score = trainer.callback_metrics.get("val/mre")
    return float(score) if score is not None else None


def report(module: LandmarkModule, dm: LandmarkDataModule, split: str, out_dir: Path, title: str, best: str = "",
           overlays: int = 0, extra: dict | None = None) -> None:
    res = module.test_results
    summary, baseline, baseline_name = res["summary"], res["baseline"], res["baseline_name"]
    print_report(summary, title, baseline, baseline_name=baseline_name)
    ids = [dm.records[split][i].id for i in res["index"]]
    # the reference row: the mean training shape, or (coarse to fine) the first stage / the patch centres
    extra = {**(extra or {}), "split": split, "checkpoint": best,
             "reference": {"name": baseline_name, **{k: baseline[k] for k in baseline if k != "per_landmark"}}}
    skipped = getattr(dm.source, "skipped", [])
    if skipped:
        extra["skipped_samples"] = skipped
    untrained = untrained_landmarks(res["peak"], dm.landmark_names)
    if untrained:
        warn_untrained(untrained, split)
        extra["untrained_landmarks"] = untrained
    same = dm.same_images_as_training(split)
    if same:  # e.g. ISBI 2015: Test1's 173 and 283 are training images 144 and 038, annotated again
        listed = ", ".join(f"{a} (= training {b})" for a, b in same)
        seen = {a for a, _ in same}
        rest = [n for n, i in enumerate(ids) if i not in seen]
        without = float(np.asarray(res["errors"])[rest].mean()) if rest else float("nan")
        named = extra.get("source_split", split)  # e.g. test1, as the report's title
        console.print(f"[bold yellow]warning:[/] {len(same)} {named} image(s) are byte-identical to training images: "
                      f"{listed}; MRE {summary['mre']:.4f} mm with them, {without:.4f} without", soft_wrap=True)
        extra["same_image_in_training"] = [{"id": a, "training_id": b} for a, b in same]
        extra["mre_without_same_images"] = without
    outliers = outlier_landmarks(summary)
    if outliers:
        warn_outliers(outliers, split)
        extra["outlier_landmarks"] = outliers
    if dm.folds is not None and split == "val":  # what landmark_exp.crossval pools: this run's fold
        extra["fold"] = {"folds": dm.folds, "fold": dm.fold, "data_seed": dm.seed}
    write_results(out_dir, summary, extra, ids, res, dm.landmark_names)
    for j, i in enumerate(res["index"][:overlays]):
        rec = dm.records[split][i]
        overlay = draw_overlay(read_grey(rec.image_path), rec.landmarks, res["pred"][j], numbers=True)
        save_png(out_dir / "overlays" / f"{rec.id}.png", overlay)
    console.print(f"results written to {out_dir}")


@guard
def evaluate(cfg: DictConfig) -> dict:
    """Load a checkpoint safely, predict a split, print and write the millimetre report."""
    out_dir = writable_dir(Path(cfg.paths.output_dir), "hydra.run.dir", create_parents=True)
    with run_lock(out_dir, "hydra.run.dir"):
        return _evaluate(cfg, out_dir)


def _evaluate(cfg: DictConfig, out_dir: Path) -> dict:
    # every argument checked before any work: a malformed value stops here, not after the first stage
    tta = cfg.get("tta_shifts")
    tta_shifts = int_pairs(list(tta) if tta is not None else None, "tta_shifts")
    patch_shifts(cfg.get("refine_shifts"))
    patch_views(cfg.get("refine_views"))
    patch_blend(cfg.get("refine_blend"))
    refine_iterations(cfg.get("refine_iterations", 1))
    one_of(cfg.get("runtime", "tuned"), ("tuned", "eager"), "runtime")
    if isinstance(cfg.get("overlays", 8), bool) or not isinstance(cfg.get("overlays", 8), int) or cfg.overlays < 0:
        raise DataError(f"overlays={cfg.get('overlays')!r}: how many overlay images to write, a whole number >= 0")
    if (out_dir / "metrics.json").exists() and not cfg.get("overwrite", False):
        raise DataError(f"hydra.run.dir={out_dir}: holds an earlier evaluation (metrics.json); choose another "
                        "folder or overwrite=true")
    show_config(cfg, out_dir)
    write_run_info(out_dir)
    module = load_module(cfg.ckpt_path, heatmap=decoding_overrides(cfg.get("heatmap")), tta_shifts=tta_shifts)
    data_cfg, split, scored = scored_split(cfg, cfg.get("data") or OmegaConf.create(module.hparams.data))
    with open_dict(cfg):
        cfg.split = split  # a source split by name (test2) is built as the datamodule's test split
    dm: LandmarkDataModule = build(data_cfg, "data")
    # before decoding any image: a mismatch is known from the configs alone
    check_matches_data(module, cfg.ckpt_path, dm.num_landmarks, dm.landmark_names, dm.model_input_size)
    _warn_if_members_saw_split(module, cfg, dm)
    dm.prepare_data()
    dm.setup("test")
    trainer = build_trainer(cfg, logger=False)
    runtime = cfg.get("runtime", "tuned")
    module.net = for_inference(module.net, trainer.strategy.root_device, runtime)
    with torch.inference_mode():
        trainer.test(module, dataloaders=dm.dataloader(cfg.split), verbose=False)
    extra: dict = {}
    if cfg.get("refine_ckpt"):
        module, dm = refine_stage(cfg, module, dm, data_cfg, trainer)
        extra["refine_shifts"] = module.test_results["refine_shifts"]
        extra["refine_views"] = module.test_results["refine_views"]
        extra["refine_blend"] = module.test_results["refine_blend"]
    check_finite_metrics(module.test_results["summary"], scored)
    n = len(dm.datasets[cfg.split])
    by_gt = score_each_doctor(module, dm, cfg.split)
    if by_gt:
        extra["by_ground_truth"] = by_gt
    ceph = score_cephalometry(module, dm, cfg.split, out_dir)
    if ceph:
        extra["cephalometry"] = ceph
    if scored != cfg.split:
        extra["source_split"] = scored
    report(module, dm, cfg.split, out_dir, title=f"{scored} ({n} images)", best=", ".join(module.members),
           overlays=int(cfg.get("overlays", 8)), extra=extra or None)
    if dm.num_landmarks == 19 and cfg.get("compare_published", True):
        from landmark_exp.reports import published_table

        console.print(published_table(module.test_results["summary"], split=scored))
    return module.test_results["summary"]


DATAMODULE_SPLITS = ("train", "val", "test")


def scored_split(cfg: DictConfig, data_cfg: DictConfig) -> tuple[DictConfig, str, str]:
    """What evaluate.py scores: `split` names the datamodule's train / val / test, or any split of the source
    by its own name (test1, test2), scored whole as the test split; `data_root` points the checkpoint's stored
    data config at other files (e.g. where Test2 was unpacked) without restating the rest of it. Returns the
    data config to build, the datamodule split to score, and the name the report gives it (the source's, for
    test: e.g. test1). Neither cfg nor the checkpoint's config is changed."""
    data_cfg = OmegaConf.create(OmegaConf.to_container(data_cfg, resolve=True))
    if cfg.get("data_root"):
        data_cfg.source.root = str(cfg.data_root)
    split = str(cfg.split)
    if split not in DATAMODULE_SPLITS:
        data_cfg.test_split, data_cfg.random_split = split, None  # the whole source split, not a carved one
        return data_cfg, "test", split
    if split == "test" and data_cfg.get("random_split") is None and data_cfg.get("test_split"):
        return data_cfg, split, str(data_cfg.test_split)
    return data_cfg, split, split


def _warn_if_members_saw_split(module: LandmarkModule, cfg: DictConfig, dm: LandmarkDataModule) -> None:
    """An ensemble scored on a split carved at random from the training pool, whose members carved it
    differently (other data seeds, other folds), has members that trained on some of its images: say so
    before the numbers."""
    carvings = set(module.member_splits)
    carved = {"val", "test"} if dm.random_split is not None else ({"val"} if dm.val_split is None else set())
    if len(carvings) > 1 and cfg.split in carved:
        said = ", ".join("seed " + str(c[0]) + (f" fold {c[2]}/{c[1]}" if len(c) > 1 else "")
                         for c in sorted(carvings, key=str))
        console.print(f"[bold yellow]warning:[/] the ensemble's members carved the '{cfg.split}' split differently "
                      f"({said}): each trained on images of the others' split, so this score is optimistic",
                      soft_wrap=True)


# what a second-stage model takes from the first stage's data config: the same images, splits and cache
SHARED_DATA_KEYS = ("source", "train_splits", "val_split", "test_split", "val_fraction", "random_split", "seed", "cache_dir",
                    "folds", "fold")


def refine_stage(cfg: DictConfig, coarse: LandmarkModule, dm: LandmarkDataModule, data_cfg: DictConfig,
                 trainer: L.Trainer) -> tuple[LandmarkModule, LandmarkDataModule]:
    """Coarse to fine: cut patches around each first-stage estimate and let the second-stage model (`refine_ckpt`,
    trained with `data.patch`) re-locate the landmark there, `refine_iterations` times. The second stage runs as
    predict.py runs it (`refine_repeatedly`: all shifts x views of an image in one pass), on the images cached at
    its working resolution; returns it with the scored results as its `test_results`, and its datamodule."""
    from rich.progress import track

    fine = load_module(cfg.refine_ckpt, heatmap=decoding_overrides(cfg.get("refine_heatmap")))
    fine_data = OmegaConf.create(fine.hparams.data or {})
    if not fine_data.get("patch"):
        raise CheckpointError(f"{cfg.refine_ckpt}: not a second-stage checkpoint (it was trained without data.patch)")
    if fine.landmark_names != coarse.landmark_names:
        raise CheckpointError(f"{cfg.refine_ckpt}: landmarks {fine.landmark_names} differ from the first stage's")
    shifts = patch_shifts(cfg.get("refine_shifts"), fine_data.patch.get("shifts"))
    views = patch_views(cfg.get("refine_views"), fine_data.patch.get("views"))
    blend = patch_blend(cfg.get("refine_blend"), fine_data.patch.get("blend"))
    refined = refine_selection(cfg.get("refine_landmarks"), coarse.landmark_names)
    iterations = refine_iterations(cfg.get("refine_iterations", 1))
    for key in SHARED_DATA_KEYS:
        if key in data_cfg:
            fine_data[key] = data_cfg[key]
    fdm: LandmarkDataModule = build(fine_data, f"{cfg.refine_ckpt}: data")
    fdm.prepare_data()
    fdm.setup("test")
    ds = fdm.datasets[cfg.split]
    first = coarse.test_results
    where = {dm.records[cfg.split][i].id: n for n, i in enumerate(first["index"])}
    missing = [r.id for r in ds.records if r.id not in where]
    if missing:  # e.g. trainer.limit_test_batches: the second stage cuts its patches around every image
        raise CheckpointError(f"the first stage scored {len(where)} of the {len(ds.records)} {cfg.split} images "
                              f"(not {missing[0]}, ...; trainer.limit_test_batches?): a second stage needs all of them")
    order = np.array([where[r.id] for r in ds.records])  # first-stage rows in the second stage's image order
    second = torch_predictor(fine, str(trainer.strategy.root_device), ", ".join(fine.members), cfg.get("runtime", "tuned"))
    preds = [refine_repeatedly(second, (ds.images[n].astype(np.float32), ds.geometries[n]), first["pred"][order[n]],
                               iterations, shifts, views)
             for n in track(range(len(ds.records)), description="second stage", console=console, transient=True)]
    # scored from the estimates averaged over the shifts and views, blended with the first stage's (refine_blend);
    # landmarks not in refine_landmarks keep the first stage's
    res = {key: first[key][order] for key in ("true", "spacing", "geometry")}
    res["index"] = np.arange(len(ds.records))
    res["pred"] = combine_stages(first["pred"][order], np.stack([p.xy for p in preds]), refined, blend)
    res["peak"] = np.where(refined, np.stack([p.confidence for p in preds]), first["peak"][order])
    res["errors"] = radial_errors_mm(res["pred"], res["true"], res["spacing"])
    res["summary"] = summarize(res["errors"], fine.landmark_names)
    res.update(baseline=first["summary"], baseline_errors=first["errors"][order], baseline_name="first stage",
               refine_shifts=[list(s) for s in shifts], refine_views=[list(v) for v in views], refine_blend=blend)  # the report records what was applied
    fine.test_results = res
    _say_where_refining_hurt(res, fine.landmark_names, refined, cfg.split)
    return fine, fdm


def _say_where_refining_hurt(res: dict, names: list[str], refined: np.ndarray, split: str) -> None:
    """Name the refined landmarks whose error the second stage raised on this split. Chosen on validation,
    `refine_landmarks` can then keep their first-stage estimates (never choose it on the test split)."""
    ours, first = res["errors"].mean(axis=0), res["baseline_errors"].mean(axis=0)
    worse = [j for j in range(len(names)) if refined[j] and ours[j] > first[j]]
    if not worse:
        return
    listed = ", ".join(f"{j + 1} {names[j]} ({first[j]:.2f} -> {ours[j]:.2f} mm)" for j in worse)
    helped = [str(j + 1) for j in range(len(names)) if refined[j] and j not in worse]
    console.print(f"second stage worse than the first on '{split}' for: {listed}. To keep their first estimates "
                  f"(choose this on validation, not test): refine_landmarks=[{','.join(helped)}]", soft_wrap=True)


def score_each_doctor(module: LandmarkModule, dm: LandmarkDataModule, split: str) -> dict:
    """The same predictions scored against the senior, junior and mean annotations (ISBI layout only)."""
    from landmark_exp.data.sources import ISBI2015Source, parse_points
    from landmark_exp.reports import summary_table

    source, res = dm.source, module.test_results
    if not isinstance(source, ISBI2015Source):
        return {}
    ids = [dm.records[split][i].id for i in res["index"]]
    truth = {d: np.stack([parse_points(source.annotation_path(d, i), source.num_landmarks) for i in ids])
             for d in ("senior", "junior")}
    truth["mean"] = (truth["senior"] + truth["junior"]) / 2
    out = {}
    for gt, t in truth.items():
        s = summarize(radial_errors_mm(res["pred"], t, res["spacing"]), dm.landmark_names)
        console.print(summary_table(s, f"{split} against ground truth = {gt}"))
        out[gt] = {k: v for k, v in s.items() if k != "per_landmark"}
    return out


def score_cephalometry(module: LandmarkModule, dm: LandmarkDataModule, split: str, out_dir: Path) -> dict:
    """The challenge's classification task: measurements from predicted vs ground-truth landmarks (ISBI's 19 only)."""
    from landmark_exp.cephalometry import compare
    from landmark_exp.data.records import ISBI2015_LANDMARKS
    from landmark_exp.reports import cephalometry_table, write_csv

    if list(dm.landmark_names) != list(ISBI2015_LANDMARKS):
        return {}
    res = module.test_results
    ids = [dm.records[split][i].id for i in res["index"]]
    sp = res["spacing"][:, None, :]
    summary, frame = compare(res["pred"] * sp, res["true"] * sp, ids)
    console.print(cephalometry_table(summary, f"{split}: cephalometric classification (ISBI 2015 task 2) vs ground truth"))
    write_csv(out_dir / "cephalometry.csv", frame)
    return summary

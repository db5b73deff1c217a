"""Fold runs of a cross-validation: found by their metrics.json, read, grouped into candidates by what they did
(their overrides less the fold and the places; differing saved configs told apart), and each candidate's folds
pooled so every image of the training pool is scored once, out of fold (see `crossval`)."""

from __future__ import annotations

import json
from dataclasses import dataclass, replace
from pathlib import Path

import numpy as np
import pandas as pd
from omegaconf import OmegaConf

from landmark_exp.data.records import DataError
from landmark_exp.metrics import summarize

# settings that say where or which fold, not what was done: left out of a candidate's name (as overrides)
# and of a run's settings (as config keys); each covers its subtree
_PLACES = ("data.fold", "data.source.root", "data.cache_dir", "hydra", "paths", "logger", "eval_split", "split",
           "overlays", "trainer.default_root_dir", "callbacks.progress_bar", "output_dir", "task_name", "test")
# config leaves that name checkpoint files or folders (each fold has its own; overrides count them instead)
_CHECKPOINT_LEAVES = ("dirpath", "ckpt", "ckpt_path")


def _is_place(key: str) -> bool:
    return any(key == p or key.startswith(p + ".") for p in _PLACES)


@dataclass(frozen=True)
class FoldRun:
    path: Path
    folds: int
    fold: int
    data_seed: int | None
    candidate: str
    errors: pd.DataFrame  # rows: image id, columns: landmark names, values: radial error in mm
    settings: dict[str, str] | None = None  # the run's resolved config, places left out (None: no config.yaml)


def run_settings(config_path: Path) -> dict[str, str] | None:
    """A run's resolved config as flat `key: value` strings, without the keys that say where or which fold:
    two runs with the same overrides can still differ when a config file changed between them."""
    if not config_path.is_file():
        return None
    try:
        cfg = OmegaConf.to_container(OmegaConf.load(config_path), resolve=False)
    except Exception as e:  # a damaged YAML file: say which
        raise DataError(f"{config_path}: unreadable config ({e})") from e
    flat: dict[str, str] = {}

    def walk(node: object, key: str) -> None:
        if _is_place(key) or key.rsplit(".", 1)[-1].endswith(_CHECKPOINT_LEAVES):
            return
        if isinstance(node, dict):
            for k, v in node.items():
                walk(v, f"{key}.{k}" if key else str(k))
        elif node is not None:  # a key added later with a null default reads as absent: same settings
            flat[key] = json.dumps(node)

    walk(cfg, "")
    return flat


def candidate_name(overrides: list[str]) -> str:
    """What a run did, from its overrides: the fold and the places left out; checkpoints counted, not named
    (each fold has its own), so the folds of one setting share a name."""
    kept = []
    for o in overrides:
        key, _, value = o.partition("=")
        if _is_place(key.lstrip("+~")):
            continue
        if key.lstrip("+~").endswith(("ckpt", "ckpt_path")):
            n = len([v for v in value.strip("[]").split(",") if v.strip()]) if value not in ("", "null") else 0
            kept.append(f"{key}=<{n} checkpoint{'s' if n != 1 else ''}>")
        else:
            kept.append(o)
    return " ".join(kept) or "(defaults)"


def read_run(metrics_path: Path) -> FoldRun | None:
    """The fold run whose metrics.json this is; None when the run is not a scored validation fold."""
    try:
        metrics = json.loads(metrics_path.read_text())
    except (OSError, json.JSONDecodeError) as e:
        raise DataError(f"{metrics_path}: unreadable metrics ({e})") from e
    fold = metrics.get("fold")
    if not isinstance(fold, dict) or metrics.get("split") != "val":
        return None
    run = metrics_path.parent
    info = run / "run_info.json"
    try:
        overrides = json.loads(info.read_text()).get("overrides") or []
    except (OSError, json.JSONDecodeError) as e:
        raise DataError(f"{info}: unreadable run info ({e}); it names what the run did") from e
    preds = run / "predictions.csv"
    try:
        frame = pd.read_csv(preds, dtype={"image_id": str})
        errors = frame.pivot(index="image_id", columns="landmark", values="error_mm")
        names = frame.drop_duplicates("landmark").set_index("landmark")["name"]
    except (OSError, KeyError, ValueError, pd.errors.ParserError) as e:
        raise DataError(f"{preds}: not a predictions table with image_id, landmark, name, error_mm ({e})") from e
    if errors.isna().any().any():
        raise DataError(f"{preds}: some (image, landmark) pairs have no error")
    errors.columns = [names[c] for c in errors.columns]
    return FoldRun(run, int(fold["folds"]), int(fold["fold"]), fold.get("data_seed"),
                   candidate_name([str(o) for o in overrides]), errors, run_settings(run / "config.yaml"))


def find_runs(dirs: list[Path]) -> list[FoldRun]:
    """Every scored validation fold under `dirs`, at any depth."""
    runs = []
    for d in dirs:
        if not d.is_dir():
            raise DataError(f"{d}: no such folder")
        runs += [run for m in sorted(d.rglob("metrics.json")) if (run := read_run(m)) is not None]
    return runs


def split_by_settings(runs: list[FoldRun]) -> list[list[FoldRun]]:
    """Runs grouped into candidates by name; runs of one name whose resolved configs differ (a config file
    changed between them) are told apart by the differing keys, appended to the name, never pooled."""
    by_name: dict[str, list[FoldRun]] = {}
    for r in runs:
        by_name.setdefault(r.candidate, []).append(r)
    groups: list[list[FoldRun]] = []
    for name, members in by_name.items():
        variants: dict[str, list[FoldRun]] = {}
        for r in members:
            variants.setdefault(json.dumps(r.settings, sort_keys=True), []).append(r)
        if len(variants) == 1:
            groups.append(members)
            continue
        known = [r.settings for r in members if r.settings is not None]
        keys = sorted({k for a in known for b in known for k in a.keys() | b.keys() if a.get(k) != b.get(k)})
        for variant in variants.values():
            st = variant[0].settings
            tag = "no config.yaml" if st is None else " ".join(f"{k}={json.loads(st[k]) if k in st else '(absent)'}"
                                                                for k in keys)
            groups.append([replace(r, candidate=f"{name} [{tag}]") for r in variant])
    return groups


def pool(runs: list[FoldRun]) -> dict:
    """One candidate's folds -> their pooled out-of-fold summary; refuses folds that do not fit together."""
    first = runs[0]
    by_fold: dict[int, FoldRun] = {}
    for r in runs:
        if (r.folds, r.data_seed) != (first.folds, first.data_seed):
            raise DataError(f"{r.path}: fold {r.fold} of {r.folds} with data seed {r.data_seed}, but {first.path} "
                            f"is one of {first.folds} with data seed {first.data_seed}: not one cross-validation")
        if r.fold in by_fold:
            raise DataError(f"{r.path}: fold {r.fold} was already scored by {by_fold[r.fold].path}; "
                            "move one of them out of the folders given")
        if list(r.errors.columns) != list(first.errors.columns):
            raise DataError(f"{r.path}: landmarks differ from those of {first.path}")
        by_fold[r.fold] = r
    seen: dict[str, Path] = {}
    for r in by_fold.values():
        for image in r.errors.index:
            if image in seen:
                raise DataError(f"{r.path}: image {image} is also in the validation fold of {seen[image]}")
            seen[image] = r.path
    ordered = [by_fold[f] for f in sorted(by_fold)]
    errors = pd.concat([r.errors for r in ordered]).sort_index()
    fold_mre = [float(r.errors.to_numpy().mean()) for r in ordered]
    return {"candidate": first.candidate, "folds": first.folds, "data_seed": first.data_seed,
            "folds_scored": sorted(by_fold), "missing_folds": sorted(set(range(first.folds)) - set(by_fold)),
            "runs": [str(r.path) for r in ordered], "fold_mre": fold_mre,
            "fold_mre_sd": float(np.std(fold_mre, ddof=1)) if len(fold_mre) > 1 else 0.0,
            "summary": summarize(errors.to_numpy(), list(errors.columns)), "errors": errors,
            "fold_of": {image: r.fold for r in ordered for image in r.errors.index}}

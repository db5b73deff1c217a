"""`python -m landmark_exp.crossval <dir> [<dir> ...] [--out DIR] [--against crossval.json]`: K fold runs scored as one.

Each run trained with `data.folds=K data.fold=i` and scored on its validation fold (`train.py eval_split=val`,
or `evaluate.py split=val` of such a checkpoint) predicted its own fold's images without having trained on them.
Pooling the K runs' predictions scores every image of the training pool once, out of fold: 150 validation images
on ISBI 2015 instead of one 22-image split, which is what choosing between settings needs.

With two or more candidates (`fold_runs`), each is compared with the first on the images both scored
(`paired_difference`); `--against` compares with a candidate recorded in an earlier crossval.json, whose fold
runs may be gone (`recorded_difference`).
"""

from __future__ import annotations

import argparse
import json
import math
import sys
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pandas as pd
from rich.table import Table
from scipy.stats import sem
from scipy.stats import t as student_t

from landmark_exp.data.records import DataError
from landmark_exp.files import write_csv, write_json
from landmark_exp.fold_runs import FoldRun, find_runs, pool, split_by_settings
from landmark_exp.reports import console


def _over_folds(delta: dict[int, float]) -> dict:
    """Each fold's difference, how many folds got better, and their mean with a 95 % t interval (few degrees of
    freedom): every fold is another pair of trainings, so this interval also carries the run-to-run noise."""
    out: dict = {"fold_delta": delta, "folds_better": sum(d < 0 for d in delta.values())}
    if delta:
        values = np.array(list(delta.values()))
        out["fold_delta_mean"] = float(values.mean())
        if len(values) > 1:
            out["fold_ci95"] = float(student_t.ppf(0.975, len(values) - 1) * sem(values))
    return out


def paired_difference(base: pd.DataFrame, other: pd.DataFrame, fold_of: dict[str, int] | None = None) -> dict:
    """`other` minus `base` on the images both scored: per-image mean error difference (mm), its mean with a
    95 % normal interval (the images' noise only), how many images got better / worse, the mean difference per
    landmark, and with `fold_of` (image -> fold, when both used the same folds) `_over_folds`."""
    common = base.index.intersection(other.index)
    if len(common) < 2:
        return {"n_images": int(len(common))}
    d = other.loc[common] - base.loc[common]
    per_image = d.mean(axis=1)
    half = 1.96 * per_image.std(ddof=1) / math.sqrt(len(per_image))
    out = {"n_images": int(len(common)), "delta_mre": float(per_image.mean()), "ci95": float(half),
           "better": int((per_image < 0).sum()), "worse": int((per_image > 0).sum()),
           "per_landmark": {str(k): float(v) for k, v in d.mean(axis=0).items()}}
    if fold_of is not None:
        # the mean error of a fold is over all its landmark errors, like the pooled MRE
        by_fold = per_image.groupby(per_image.index.map(fold_of)).mean()
        out |= _over_folds({int(f): float(v) for f, v in by_fold.items()})
    return out


def read_recorded(path: Path, index: int = -1) -> dict:
    """Candidate `index` of a crossval.json written earlier (default: its last one)."""
    try:
        recorded = json.loads(path.read_text())
        chosen = recorded[index]
        needed = {k: chosen[k] for k in ("candidate", "folds", "data_seed", "folds_scored", "fold_mre", "summary")}
    except (OSError, json.JSONDecodeError) as e:
        raise DataError(f"{path}: unreadable crossval.json ({e})") from e
    except (IndexError, KeyError, TypeError) as e:
        raise DataError(f"{path}: no candidate {index} with folds, fold MREs and a summary in it ({e!r})") from e
    return {**needed, "path": str(path), "index": index}


def recorded_difference(recorded: dict, result: dict) -> dict:
    """`result` minus a `recorded` candidate (read_recorded) on the folds both scored (`_over_folds` of their
    MREs), and, when both scored the same folds, the pooled MRE and per-landmark differences. Refuses other
    folds: fold i of another split holds other images."""
    if (result["folds"], result["data_seed"]) != (recorded["folds"], recorded["data_seed"]):
        raise DataError(f"{recorded['path']}: {recorded['folds']} folds with data seed {recorded['data_seed']}, but "
                        f"{result['candidate']} used {result['folds']} with data seed {result['data_seed']}: "
                        "its folds hold other images")
    mine = dict(zip(result["folds_scored"], result["fold_mre"], strict=True))
    theirs = dict(zip(recorded["folds_scored"], recorded["fold_mre"], strict=True))
    out = {"against": f"{recorded['path']} [{recorded['index']}]: {recorded['candidate']}",
           **_over_folds({f: mine[f] - theirs[f] for f in sorted(mine.keys() & theirs.keys())})}
    if sorted(mine) == sorted(theirs):
        base = {row["name"]: row["mre"] for row in recorded["summary"]["per_landmark"]}
        out["delta_mre"] = float(result["summary"]["mre"] - recorded["summary"]["mre"])
        out["per_landmark"] = {row["name"]: float(row["mre"] - base[row["name"]])
                               for row in result["summary"]["per_landmark"] if row["name"] in base}
    return out


def crossvalidate(dirs: list[Path], out: Path | None = None, runs: list[FoldRun] | None = None,
                  against: dict | None = None) -> list[dict]:
    """Pool each candidate's folds under `dirs` (or the `runs` already read from them), print the table,
    write crossval.json / crossval_summary.csv; with `against` (read_recorded) also compare each candidate
    with that recorded one."""
    runs = find_runs(dirs) if runs is None else runs
    if not runs:
        raise DataError(f"no cross-validation runs under {', '.join(map(str, dirs))}: runs trained with data.folds=K "
                        "data.fold=i and scored on their fold (train.py eval_split=val, or evaluate.py split=val)")
    results = [pool(g) for g in split_by_settings(runs)]
    base = results[0]
    for r in results[1:]:
        same_folds = (r["folds"], r["data_seed"]) == (base["folds"], base["data_seed"])
        r["vs_first"] = paired_difference(base["errors"], r["errors"], base["fold_of"] if same_folds else None)
    if against is not None:
        for r in results:
            r["vs_recorded"] = recorded_difference(against, r)
    _print(results)
    out = out or dirs[0]
    rows = [{"candidate": r["candidate"], "folds": f"{len(r['folds_scored'])}/{r['folds']}",
             "images": r["summary"]["n_images"], **{k: r["summary"][k] for k in ("mre", "sd", "median")},
             **{k: v for k, v in r["summary"].items() if k.startswith("sdr_")}, "fold_mre_sd": r["fold_mre_sd"],
             "delta_vs_first": r.get("vs_first", {}).get("delta_mre"),
             **{k: r.get("vs_first", {}).get(k) for k in ("ci95", "folds_better", "fold_ci95")}}
            for r in results]
    write_csv(out / "crossval_summary.csv", pd.DataFrame(rows))
    write_json(out / "crossval.json", [{k: v for k, v in r.items() if k not in ("errors", "fold_of")} for r in results])
    console.print(f"written to {out / 'crossval_summary.csv'} and {out / 'crossval.json'}")
    return results


def _interval(mean: float, half: float) -> str:
    return f"[{mean - half:+.3f}, {mean + half:+.3f}]"


def _shown_names(results: list[dict]) -> tuple[list[str], str]:
    """Each candidate's overrides less those all share, and the shared ones (said once, above the table)."""
    tokens = [r["candidate"].split(" ") for r in results]
    common = [t for t in tokens[0] if all(t in other for other in tokens[1:])] if len(tokens) > 1 else []
    return [" ".join(t for t in ts if t not in common) or "(the shared settings)" for ts in tokens], " ".join(common)


def _print(results: list[dict]) -> None:
    names, common = _shown_names(results)
    if common:
        console.print(f"shared by every candidate: {common}", soft_wrap=True)
    table = Table("candidate", "folds", "images", "MRE", "SD", "median", "SDR 2/2.5/3/4 mm (%)",
                  "fold MREs", "vs first: mean diff [95 %]",
                  title="cross-validation: every image scored once, out of fold")
    for name, r in zip(names, results, strict=True):
        s, v = r["summary"], r.get("vs_first")
        sdr = " / ".join(f"{s[k]:.2f}" for k in s if k.startswith("sdr_"))
        folds = " ".join(f"{m:.3f}" for m in r["fold_mre"])
        diff = f"{v['delta_mre']:+.3f} {_interval(v['delta_mre'], v['ci95'])} " \
               f"({v['better']} better, {v['worse']} worse)" if v and "delta_mre" in v else ""
        if v and "fold_ci95" in v:
            diff += (f"; folds {v['folds_better']}/{len(v['fold_delta'])} better, over folds "
                     f"{_interval(v['fold_delta_mean'], v['fold_ci95'])}")
        table.add_row(name, f"{len(r['folds_scored'])}/{r['folds']}", str(s["n_images"]), f"{s['mre']:.3f}",
                      f"{s['sd']:.3f}", f"{s['median']:.3f}", sdr, f"{folds} (SD {r['fold_mre_sd']:.3f})", diff)
    console.print(table)
    for r in results:
        if r["missing_folds"]:
            console.print(f"[bold yellow]warning:[/] {r['candidate']}: folds {r['missing_folds']} of {r['folds']} are "
                          f"not scored, so {r['summary']['n_images']} images are pooled, not the whole pool",
                          soft_wrap=True)
    if len(results) > 1:
        _print_landmarks("per landmark: MRE of the first candidate, and each other's difference (mm)",
                         ["first", *(f"#{i + 1}" for i in range(1, len(results)))], results,
                         lambda row: [f"{row['mre']:.3f}", *_signed(results[1:], "vs_first", row["name"])])
    if results[0].get("vs_recorded"):
        _print_recorded(names, results)


def _print_recorded(names: list[str], results: list[dict]) -> None:
    console.print(f"against the recorded {results[0]['vs_recorded']['against']}", soft_wrap=True)
    table = Table("candidate", "fold differences (mm)", "mean [95 %, t over folds]", "pooled MRE difference",
                  title="fold by fold against the recorded candidate "
                        "(its per-image predictions are not kept)")
    for name, r in zip(names, results, strict=True):
        v = r["vs_recorded"]
        folds = " ".join(f"{f}: {d:+.3f}" for f, d in v["fold_delta"].items())
        mean = f"{v['fold_delta_mean']:+.3f}" if "fold_delta_mean" in v else ""
        if "fold_ci95" in v:
            mean += f" {_interval(v['fold_delta_mean'], v['fold_ci95'])} ({v['folds_better']}/{len(v['fold_delta'])} better)"
        table.add_row(name, folds, mean, f"{v['delta_mre']:+.3f}" if "delta_mre" in v else "other folds scored")
    console.print(table)
    if "per_landmark" in results[0]["vs_recorded"]:
        _print_landmarks("per landmark: pooled MRE difference to the recorded candidate (mm)", names, results,
                         lambda row: _signed(results, "vs_recorded", row["name"]))


def _signed(results: list[dict], against: str, landmark: str) -> list[str]:
    deltas = [r.get(against, {}).get("per_landmark", {}).get(landmark) for r in results]
    return ["" if d is None else f"{d:+.3f}" for d in deltas]


def _print_landmarks(title: str, columns: list[str], results: list[dict], cells: Callable[[dict], list[str]]) -> None:
    table = Table("landmark", *columns, title=title)
    for row in results[0]["summary"]["per_landmark"]:
        table.add_row(f"{row['landmark']} {row['name']}", *cells(row))
    console.print(table)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m landmark_exp.crossval", description=__doc__.split("\n\n")[1])
    parser.add_argument("dirs", nargs="+", type=Path, help="folders holding the fold runs (any depth)")
    parser.add_argument("--out", type=Path, default=None, help="where to write crossval.json (default: the first dir)")
    parser.add_argument("--against", type=Path, default=None,
                        help="an earlier crossval.json: compare fold by fold with a candidate recorded there")
    parser.add_argument("--against-index", type=int, default=-1,
                        help="which candidate of --against (0 = its first; default: its last)")
    args = parser.parse_args(sys.argv[1:] if argv is None else argv)
    try:
        against = None if args.against is None else read_recorded(args.against, args.against_index)
        crossvalidate(args.dirs, args.out, against=against)
    except DataError as e:
        console.print(f"[bold red]error:[/] {e}", soft_wrap=True)
        return 2
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

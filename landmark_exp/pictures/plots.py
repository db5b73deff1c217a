"""Plots of a scored split and of a sweep, drawn on matplotlib's Agg canvas (imported only when a plot is drawn:
no pyplot, no global backend) and written atomically as PNG: the error per landmark, the successful detection
rate curve, and a sweep's validation MRE."""

from __future__ import annotations

import io
import textwrap
import warnings
from pathlib import Path

import numpy as np
import pandas as pd

from landmark_exp.files import atomic_write_bytes
from landmark_exp.metrics import THRESHOLDS_MM
from landmark_exp.pictures.overlay import FAIR, GOOD, POOR, error_colour


def _figure(w: float, h: float):
    from matplotlib.figure import Figure

    fig = Figure(figsize=(w, h), layout="constrained")
    return fig, fig.subplots()


def _save(fig, path: Path | str) -> Path:
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=110)
    atomic_write_bytes(path, buf.getvalue())
    return Path(path)


def _hex(rgb: tuple[int, int, int]) -> str:
    """The overlays' error colour, a softer tone of it on white paper."""
    return {GOOD: "#5cb85c", FAIR: "#f0ad4e", POOR: "#d9534f"}.get(rgb, "#{:02x}{:02x}{:02x}".format(*rgb))


def error_per_landmark_plot(summary: dict, path: Path | str) -> Path:
    """Horizontal bars of the MRE per landmark (metrics.summarize's dict), coloured as the overlays' error
    lines (green < 2, yellow 2-4, red > 4 mm), with +1 SD whiskers, the median as a black diamond, the value
    written, and the 2 mm line."""
    from matplotlib.patches import Patch

    rows = summary["per_landmark"]
    mre, sd, med = (np.array([r[key] for r in rows], dtype=float) for key in ("mre", "sd", "median"))
    y = np.arange(len(rows))
    fig, ax = _figure(7.5, 1.8 + 0.3 * len(rows))
    ax.barh(y, mre, xerr=[np.zeros_like(sd), sd], color=[_hex(error_colour(m)) for m in mre], edgecolor="0.3",
            error_kw={"ecolor": "0.35", "capsize": 2, "lw": 0.8})
    ax.plot(med, y, "D", color="black", ms=4)
    ax.axvline(2.0, color="0.25", ls="--", lw=1)
    for yi, m, s in zip(y, mre, sd, strict=True):
        ax.text(m + s + 0.05, yi, f"{m:.2f}", va="center", fontsize=8)
    ax.set_yticks(y, [f"{r['landmark']}  {str(r['name']).replace('_', ' ')}" for r in rows])
    ax.invert_yaxis()
    ax.set_xlim(0, max(2.5, float(np.nanmax(mre + sd)) * 1.15))
    ax.set_xlabel("radial error (mm): bar = mean, whisker = +1 SD")
    ax.grid(axis="x", alpha=0.3)
    key = [Patch(color=_hex(c), label=t) for c, t in ((GOOD, "MRE < 2 mm"), (FAIR, "2-4 mm"), (POOR, "> 4 mm"))]
    key += ax.plot([], [], "D", color="black", ms=4, label="median") + ax.plot([], [], "--", color="0.25", label="2 mm")
    fig.legend(handles=key, loc="outside lower center", ncols=5, fontsize=8, frameon=False)
    title = f"Error per landmark: MRE {summary['mre']:.2f} mm, SDR@2 mm {summary['sdr_2']:.1f}%"
    images = f" ({summary['n_images']} images)" if "n_images" in summary else ""
    fig.suptitle(textwrap.fill(title + images, 95), fontsize=10)
    return _save(fig, path)


def sdr_curve_plot(errors_mm: np.ndarray, path: Path | str, reference: np.ndarray | None = None,
                   labels: tuple[str, str] = ("model", "reference")) -> Path:
    """The share of landmarks found within r mm, r from 0 to 10 mm, of (N, K) errors (and of a reference's,
    dashed), with the challenge's 2, 2.5, 3 and 4 mm points marked and their values in a table."""
    r = np.linspace(0, 10, 401)
    fig, ax = _figure(6.5, 4.5)
    for t in THRESHOLDS_MM:
        ax.axvline(t, color="0.8", lw=0.6, zorder=0)
    wide = min(20, max(len(labels[0]), len(labels[1]) if reference is not None else 0, 3))
    rows = [f"{'SDR':<{wide}}" + "".join(f"{t:>6g} mm" for t in THRESHOLDS_MM)]
    for n, (e, colour, label) in enumerate(((errors_mm, "tab:blue", labels[0]), (reference, "0.45", labels[1]))):
        if e is None:
            continue
        e = np.asarray(e, dtype=float).ravel()
        e = e[np.isfinite(e)]
        ax.plot(r, 100 * (e[None] <= r[:, None]).mean(1), color=colour, lw=2 - n * 0.8, ls="-" if n == 0 else "--",
                label=label)
        sdr = [100 * float((e <= t).mean()) for t in THRESHOLDS_MM]
        ax.plot(THRESHOLDS_MM, sdr, "o", color=colour, ms=5 - n)
        rows.append(f"{label[:wide]:<{wide}}" + "".join(f"{v:>8.1f}%" for v in sdr))
    ax.text(0.97, 0.22, "\n".join(rows), transform=ax.transAxes, ha="right", va="bottom", family="monospace",
            fontsize=8, bbox={"facecolor": "white", "edgecolor": "0.7", "boxstyle": "round"})
    ax.set(xlim=(0, 10), ylim=(0, 102), xlabel="radius r (mm)", ylabel="landmarks within r (%)")
    ax.set_title("Successful detection rate: landmarks found within r mm of the truth", fontsize=10)
    ax.grid(alpha=0.3)
    ax.legend(loc="lower right", fontsize=8)
    return _save(fig, path)


def _overrides(text) -> dict[str, str]:
    return dict(o.split("=", 1) for o in str(text or "").split() if "=" in o)


def sweep_plot(table: pd.DataFrame, path: Path | str) -> Path:
    """Validation MRE of a sweep's jobs. `table` is either per-epoch curves (columns job, overrides, epoch,
    val_mre: `sweep_curves`), one line per job; or `reports.collect_sweep`'s table, best_val_mre (else mre)
    against the swept max_epochs (else the first swept key), one line per value of the other swept keys."""
    fig, ax = _figure(7, 4.5)
    t = table.copy()
    if "overrides" not in t:
        t["overrides"] = t.get("job", pd.Series(range(len(t)))).astype(str)
    params = pd.DataFrame([_overrides(o) for o in t["overrides"]], index=t.index)
    swept = [c for c in params.columns if params[c].nunique(dropna=False) > 1]

    def name(keys, row) -> str:  # "lr=0.001, max_epochs=30": the last part of each swept key
        return ", ".join(f"{c.rsplit('.', 1)[-1]}={row[c]}" for c in keys) or "run"

    if {"epoch", "val_mre"} <= set(t.columns):
        y, ylabel = "val_mre", "validation MRE (mm)"
        for job, g in t.sort_values("epoch").groupby("job", sort=False):
            ax.plot(g["epoch"], g[y], marker=".", label=name(swept, params.loc[g.index[0]]) or job)
        ax.set_xlabel("epoch")
    else:
        y = "best_val_mre" if "best_val_mre" in t and t["best_val_mre"].notna().any() else "mre"
        ylabel = "best validation MRE (mm)" if y == "best_val_mre" else "MRE of the scored split (mm)"
        t[y] = pd.to_numeric(t.get(y), errors="coerce")
        xkey = next((c for c in swept if c.endswith("max_epochs")), swept[0] if swept else None)
        x = pd.to_numeric(params[xkey], errors="coerce") if xkey else pd.Series(range(len(t)), index=t.index)
        x = x if x.notna().all() else params[xkey].astype(str)
        rest = [c for c in swept if c != xkey]
        groups = params[rest].astype(str).agg(" ".join, axis=1) if rest else pd.Series("", index=t.index)
        for _, idx in groups.groupby(groups).groups.items():
            order = x.loc[idx].sort_values().index
            ax.plot(x.loc[order], t.loc[order, y], marker="o", label=name(rest, params.loc[idx[0]]))
        ax.set_xlabel(xkey or "job")
    values = pd.to_numeric(t[y], errors="coerce").dropna()
    if len(values) and values.min() > 0 and values.max() / values.min() > 8:
        ax.set_yscale("log")  # the first epochs' tens of mm would flatten the millimetre that matters
    ax.set_ylabel(ylabel)
    ax.axhline(2.0, color="0.4", ls="--", lw=0.8)
    ax.grid(alpha=0.3, which="both")
    if len(ax.get_lines()) > 7:
        fig.legend(fontsize=7, loc="outside right upper")
    else:
        ax.legend(fontsize=7, loc="upper right")
    ax.set_title("Sweep: validation MRE" if y != "mre" else "Sweep: MRE", fontsize=10)
    return _save(fig, path)


def sweep_curves(sweep_dir: Path | str) -> pd.DataFrame:
    """Per-epoch validation MRE of every job under `sweep_dir` (columns job, overrides, epoch, val_mre), read from
    its csv logger's metrics.csv or its TensorBoard events; empty when no job logged any."""
    import yaml

    frames = []
    for job in sorted(p for p in Path(sweep_dir).iterdir() if (p / ".hydra").is_dir()):
        ov = job / ".hydra" / "overrides.yaml"
        overrides = " ".join(o for o in (yaml.safe_load(ov.read_text()) if ov.is_file() else None) or []
                             if not o.startswith("ckpt_path="))
        csv, events = job / "csv" / "metrics.csv", sorted((job / "tensorboard").glob("events.out.tfevents.*"))
        if csv.is_file():
            m = pd.read_csv(csv)
            m = m[["epoch", "val/mre"]].dropna() if "val/mre" in m else pd.DataFrame(columns=["epoch", "val/mre"])
        elif events:
            from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

            acc = EventAccumulator(str(job / "tensorboard"), size_guidance={"scalars": 0})
            acc.Reload()
            tags = acc.Tags()["scalars"]
            if "val/mre" not in tags:
                continue
            epoch = {e.step: e.value for e in acc.Scalars("epoch")} if "epoch" in tags else {}
            m = pd.DataFrame([(epoch.get(e.step, n), e.value) for n, e in enumerate(acc.Scalars("val/mre"))],
                             columns=["epoch", "val/mre"])
        else:
            continue
        m = m.rename(columns={"val/mre": "val_mre"}).drop_duplicates("epoch", keep="last")
        frames.append(m.assign(job=job.name, overrides=overrides, epoch=m["epoch"].astype(int)))
    return pd.concat(frames, ignore_index=True) if frames else pd.DataFrame(columns=["job", "overrides", "epoch",
                                                                                      "val_mre"])


def write_sweep_plot(sweep_dir: Path | str, table: pd.DataFrame) -> Path | None:
    """<sweep dir>/sweep_val_mre.png: per-epoch curves when the jobs logged them, else `table` (collect_sweep's).
    A picture that cannot be drawn is a warning, never a failed sweep."""
    try:
        curves = sweep_curves(sweep_dir)
        data = curves if not curves.empty else table[table["status"] == "done"] if "status" in table else table
        return None if data.empty else sweep_plot(data, Path(sweep_dir) / "sweep_val_mre.png")
    except (OSError, ValueError, KeyError, TypeError, ImportError) as e:
        warnings.warn(f"{sweep_dir}: sweep plot not drawn: {e}", stacklevel=2)
        return None


def write_report_plots(out_dir: Path | str, summary: dict, errors_mm: np.ndarray, reference: np.ndarray | None = None,
                       reference_name: str = "reference") -> list[Path]:
    """error_per_landmark.png and sdr_curve.png in `out_dir` (the scored split's report)."""
    return [error_per_landmark_plot(summary, Path(out_dir) / "error_per_landmark.png"),
            sdr_curve_plot(errors_mm, Path(out_dir) / "sdr_curve.png", reference, ("model", reference_name))]

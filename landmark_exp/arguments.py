"""Arguments checked before any work: each check returns the value in its proper type or raises a `DataError`
whose one line names the argument, the value and what is expected (the entry points print it, exit status 1)."""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping, Sequence
from typing import Any

from omegaconf import DictConfig, ListConfig, OmegaConf

from landmark_exp.data.patches import patch_blend, patch_shifts, patch_views
from landmark_exp.data.records import DataError, whole_number
from landmark_exp.heatmap.decoder import METHODS

DEVICES = ("auto", "cpu", "cuda")


def checked_device(value: object) -> str:
    """auto | cpu | cuda | cuda:N, present on this machine; one line otherwise (before any model is loaded)."""
    import torch

    device = str(value).strip().lower()
    kind, _, index = device.partition(":")
    if kind not in DEVICES or (index and (kind != "cuda" or not index.isdigit())):
        raise DataError(f"device={value!r}: choose auto, cpu, cuda or cuda:<n>")
    if kind == "cuda":
        if not torch.cuda.is_available():
            raise DataError(f"device={value!r}: no CUDA GPU is visible on this machine (device=cpu or auto)")
        if index and int(index) >= torch.cuda.device_count():
            raise DataError(f"device={value!r}: this machine has {torch.cuda.device_count()} GPU(s)")
    return device


def int_pairs(value: object, what: str) -> list[tuple[int, int]] | None:
    """[[dy, dx], ...] whole-number pairs (e.g. `tta_shifts`); None stays None."""
    if value is None:
        return None
    example = "e.g. [[0,0],[0,8],[8,0]]"
    pairs = []
    for item in value if isinstance(value, Iterable) and not isinstance(value, str) else [value]:
        if isinstance(item, str) or not isinstance(item, Iterable):
            raise DataError(f"{what}={value!r}: a list of [dy, dx] pairs, {example}")
        pair = list(item)
        if len(pair) != 2 or not all(isinstance(v, int) and not isinstance(v, bool) for v in pair):
            raise DataError(f"{what}={value!r}: each shift is two whole numbers [dy, dx], {example}")
        pairs.append((pair[0], pair[1]))
    if not pairs:
        raise DataError(f"{what}=[]: give at least one [dy, dx] pair, or null for none")
    return pairs


def spacing_pair(value: object, what: str = "spacing") -> tuple[float, float] | None:
    """mm per pixel: a positive finite number, or [x, y] of them; None stays None."""
    if value is None:
        return None
    items = list(value) if isinstance(value, Iterable) and not isinstance(value, str) else [value]
    try:
        numbers = [float(v) for v in items]
    except (TypeError, ValueError):
        numbers = []
    if len(numbers) == 1:
        numbers *= 2
    if len(numbers) != 2 or not all(math.isfinite(v) and 0 < v < 100 for v in numbers):
        raise DataError(f"{what}={value!r}: mm per pixel, a positive number (or [x, y]) such as 0.1")
    return numbers[0], numbers[1]


def one_of(value: object, choices: Sequence[str], what: str) -> str:
    if value not in choices:
        raise DataError(f"{what}={value!r}: choose one of {', '.join(choices)}")
    return str(value)


def flag(value: object, what: str) -> bool:
    """true or false, as YAML gives them (not 'yes', 1 or a string)."""
    if not isinstance(value, bool):
        raise DataError(f"{what}={value!r}: true or false")
    return value


def cascade_arguments(cfg: Mapping, runtimes: Sequence[str], runtime: str) -> dict:
    """What evaluate and predict both take, checked once: device, runtime, test-time shifts and the second
    stage's shifts, views, blend and iterations (None where not given: the model's or detector's own)."""
    keys = ("refine_shifts", "refine_views", "refine_blend", "refine_iterations")
    shifts, views, blend, iterations = (plain(cfg.get(k)) for k in keys)
    patch_shifts(shifts)  # each raises a one-line DataError naming its setting
    patch_views(views)
    return {"device": checked_device(cfg.get("device", "auto")),
            "runtime": one_of(cfg.get("runtime", runtime), runtimes, "runtime"),
            "tta_shifts": int_pairs(plain(cfg.get("tta_shifts")), "tta_shifts"),
            "refine_shifts": shifts, "refine_views": views,
            "refine_blend": None if blend is None else patch_blend(blend),
            "refine_iterations": None if iterations is None else whole_number(iterations, "refine_iterations")}


def as_list(value: Any) -> list:
    """A config value that may be one item or a list (ckpt paths, inputs) as a list; null as []."""
    value = plain(value)
    return [] if value is None else list(value) if isinstance(value, list | tuple) else [value]


def plain(node: Any) -> Any:
    """A config node as plain dicts and lists (resolved); anything else as it is."""
    return OmegaConf.to_container(node, resolve=True) if isinstance(node, DictConfig | ListConfig) else node


def decoding_overrides(node: Any, what: str = "heatmap") -> dict:
    """The set keys of a `heatmap:` override block of evaluate/predict (null keeps the checkpoint's setting),
    checked here so that a bad value is named as the argument it is, not as the checkpoint's config."""
    given = {k: v for k, v in (plain(node) or {}).items() if v is not None}
    if "decoder" in given and given["decoder"] not in METHODS:
        raise DataError(f"{what}.decoder={given['decoder']!r}: choose one of {', '.join(METHODS)}")
    window = given.get("window", 0)
    if isinstance(window, bool) or not isinstance(window, int) or not 0 <= window <= 16:
        raise DataError(f"{what}.window={window!r}: a whole number 0-16")
    sigma = given.get("prior_sigma", 0)
    if isinstance(sigma, bool) or not isinstance(sigma, int | float) or not 0 <= sigma < 10:
        raise DataError(f"{what}.prior_sigma={sigma!r}: a fraction of the input diagonal such as 0.1, or 0 for none")
    return given

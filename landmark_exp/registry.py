"""The classes a config may name, and the one way objects are built from configs.

A `_target_` in a checkpoint or run directory is a name, not an instruction: `build` looks every one up here
by its exact dotted name and refuses anything else before anything is imported or called, then hands Hydra's
`instantiate` the class objects themselves. Registered: this package's classes and the fitting subclasses in
a few library namespaces. Plugins call `register` from modules named in LANDMARK_EXP_PLUGINS (comma-separated,
imported with this module): the person running the command chooses that code, never a file it reads.
"""

from __future__ import annotations

import importlib
import os
import re
from collections.abc import Callable
from typing import Any

import albumentations
import lightning.pytorch as pl
import torch
from hydra.errors import InstantiationException
from hydra.utils import instantiate
from omegaconf import DictConfig, ListConfig, OmegaConf

from landmark_exp.checkpoints import ModelCheckpoint
from landmark_exp.data.datamodule import LandmarkDataModule
from landmark_exp.data.records import DataError, one_line
from landmark_exp.data.sources import CSVSource, ISBI2015Source, SyntheticSource
from landmark_exp.losses import AdaptiveWingLoss, DiceLoss, MSELoss
from landmark_exp.models.smp import SMPModel
from landmark_exp.models.unet import UNet
from landmark_exp.performance import PerformanceTuning
from landmark_exp.schedule import ScheduleFitsTime

PLUGINS = "LANDMARK_EXP_PLUGINS"


class RegistryError(DataError):
    """A config names something that is not in the registry (or is malformed): one line, nothing built."""


_CLASSES: dict[str, Callable[..., Any]] = {}

# a namespace and the base class its members must have: "torch.optim.Adam" is torch.optim's Adam, an Optimizer
_NAMESPACES: dict[str, tuple[Any, tuple[type, ...]]] = {
    "torch.optim": (torch.optim, (torch.optim.Optimizer,)),
    "torch.optim.lr_scheduler": (torch.optim.lr_scheduler,
                                 (torch.optim.lr_scheduler.LRScheduler, torch.optim.lr_scheduler.ReduceLROnPlateau)),
    "lightning.pytorch.callbacks": (pl.callbacks, (pl.Callback,)),
    "lightning.pytorch.loggers": (pl.loggers, (pl.loggers.Logger,)),
    "lightning.pytorch.strategies": (pl.strategies, (pl.strategies.Strategy,)),
    "albumentations": (albumentations, (albumentations.BasicTransform, albumentations.BaseCompose)),
}

# the keys Hydra reads besides `_target_`; `_args_` and `_partial_` are refused (no config here needs them)
_HYDRA_KEYS = {"_target_", "_recursive_", "_convert_"}
_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_]*(\.[A-Za-z_][A-Za-z0-9_]*)*")


def register(name: str, cls: Callable[..., Any]) -> Callable[..., Any]:
    """Make `cls` buildable from configs under `name` (its dotted import path, as configs write it)."""
    _CLASSES[name] = cls
    return cls


for _cls in (UNet, SMPModel, DiceLoss, MSELoss, AdaptiveWingLoss, LandmarkDataModule, ISBI2015Source, CSVSource,
             SyntheticSource, ModelCheckpoint, PerformanceTuning, ScheduleFitsTime):
    register(f"{_cls.__module__}.{_cls.__qualname__}", _cls)
register("lightning.pytorch.Trainer", pl.Trainer)
register("lightning.Trainer", pl.Trainer)


def lookup(name: object, where: str = "config") -> Callable[..., Any]:
    """The registered class called `name`; RegistryError naming `where` for anything else (nothing is imported)."""
    if not isinstance(name, str) or not _NAME.fullmatch(name):
        raise RegistryError(f"{where}: _target_ {name!r} is not a class name")
    if name in _CLASSES:
        return _CLASSES[name]
    space, _, member = name.rpartition(".")
    if space in _NAMESPACES and not member.startswith("_"):
        module, bases = _NAMESPACES[space]
        found = getattr(module, member, None)  # the namespace's module is already imported: nothing new runs
        if isinstance(found, type) and issubclass(found, bases):
            return found
    raise RegistryError(f"{where}: refused _target_ {name!r}: not a landmark_exp class or a registered library "
                        "class (configs read from files may only name those)")


def resolve(config: Any, where: str = "config") -> Any:
    """A plain copy of `config` with every `_target_` replaced by its registered class; RegistryError otherwise.
    Interpolations are resolved first (a `${...}` may create a `_target_`), and none may remain after."""
    if isinstance(config, dict | list):
        try:
            config = OmegaConf.create(config)
        except Exception as e:  # OmegaConf refuses what is not config data (objects, odd keys)
            raise RegistryError(f"{where}: not config data ({one_line(e, 200)})") from None
    if isinstance(config, DictConfig | ListConfig):
        try:
            config = OmegaConf.to_container(config, resolve=True)
        except Exception as e:  # a broken or unknown interpolation
            raise RegistryError(f"{where}: cannot resolve its values ({one_line(e, 200)})") from None
    return _walk(config, where)


def _walk(config: Any, where: str) -> Any:
    if isinstance(config, dict):
        out = {}
        for key, value in config.items():
            if isinstance(key, str) and key.startswith("_") and key.endswith("_") and key not in _HYDRA_KEYS:
                raise RegistryError(f"{where}: refused key {key!r} (only _target_, _recursive_, _convert_ are read)")
            inner = f"{where}.{key}"
            out[key] = lookup(value, inner) if key == "_target_" else _walk(value, inner)
        return out
    if isinstance(config, list | tuple):
        return [_walk(v, f"{where}[{i}]") for i, v in enumerate(config)]
    if isinstance(config, str) and "${" in config:  # an escaped interpolation would be resolved when built
        raise RegistryError(f"{where}: refused value {config[:80]!r} (an interpolation left to resolve later)")
    return config


def build(config: Any, where: str = "config", **kwargs: Any) -> Any:
    """What `hydra.utils.instantiate(config, **kwargs)` builds, from registered classes only. A class that refuses
    its config (a wrong argument or value) is one line naming `where`, not a traceback."""
    resolved = resolve(config, where)
    try:
        return instantiate(resolved, **kwargs)
    except InstantiationException as e:
        cause = e.__cause__
        if isinstance(cause, DataError):
            raise cause from None
        raise RegistryError(f"{where}: its config does not build ({one_line(cause or e, 200)})") from e


def check(config: Any, where: str = "config") -> None:
    """Refuse a config naming an unregistered class, without building anything."""
    resolve(config, where)


for _plugin in filter(None, (m.strip() for m in os.environ.get(PLUGINS, "").split(","))):
    importlib.import_module(_plugin)  # each calls `register` for its classes

"""What every command does around its work: its config shown and saved, its errors turned into one line (or,
in a sweep, a failed job the sweep goes past), and a stop request (SIGTERM, Ctrl-C) turned into a clean end.
Where a command may write is checked in `folders.py`, its arguments in `arguments.py`.
"""

from __future__ import annotations

import functools
import gc
import logging
import signal
import sys
import traceback
import warnings
from collections.abc import Callable
from pathlib import Path

import torch
from hydra.core.hydra_config import HydraConfig
from hydra.types import RunMode
from lightning.pytorch.utilities import rank_zero_only
from lightning.pytorch.utilities.exceptions import SIGTERMException
from omegaconf import DictConfig, OmegaConf
from omegaconf.errors import MissingMandatoryValue
from rich.markup import escape
from rich.syntax import Syntax
from rich.tree import Tree

from landmark_exp.data.records import DataError, one_line
from landmark_exp.files import atomic_write_text
from landmark_exp.guards import NonFiniteError
from landmark_exp.reports import console


class StopRequests:
    """SIGTERM and Ctrl-C noted instead of killing the job, so it can finish the image in hand and write what it
    has: `requested` is the signal's number (or None). A second Ctrl-C stops at once (KeyboardInterrupt)."""

    SIGNALS = (signal.SIGTERM, signal.SIGINT)

    def __init__(self) -> None:
        self.requested: int | None = None
        self._previous: dict[int, object] = {}

    def _note(self, signum: int, frame: object) -> None:
        if self.requested is not None and signum == signal.SIGINT:
            raise KeyboardInterrupt
        self.requested = signum

    def __enter__(self) -> StopRequests:
        try:
            for s in self.SIGNALS:
                self._previous[s] = signal.signal(s, self._note)
        except ValueError:  # not the main thread: signals stay as they are
            self._previous.clear()
        return self

    def __exit__(self, *exc: object) -> None:
        for s, handler in self._previous.items():
            signal.signal(s, handler)

    @property
    def exit_status(self) -> int:
        """128 + the signal's number, as a shell reports a process the signal ended: 143 (TERM), 130 (INT)."""
        return 128 + int(self.requested or 0)

    @property
    def by(self) -> str:
        names = {int(signal.SIGTERM): "SIGTERM", int(signal.SIGINT): "Ctrl-C"}
        return names.get(int(self.requested or 0), "a signal")


@rank_zero_only
def show_config(cfg: DictConfig, out_dir: Path) -> None:
    """Save the config, resolved, in the run directory; print it as a tree only when asked (print_config=true)."""
    atomic_write_text(out_dir / "config.yaml", OmegaConf.to_yaml(cfg, resolve=True))
    quiet_libraries()
    if not cfg.get("print_config", False):
        return
    tree = Tree("config", guide_style="dim")
    for key, node in cfg.items():
        text = OmegaConf.to_yaml(node, resolve=True) if isinstance(node, DictConfig) else str(node)
        tree.add(str(key)).add(Syntax(text, "yaml"))
    console.print(tree)


def quiet_libraries() -> None:
    """Lightning's INFO lines (devices, tips) go to the run's log file only, once: its own console handler is
    removed so they reach the root logger, whose console handler shows warnings (conf/hydra/default.yaml).
    Deprecation notices of libraries inside libraries are not the user's to act on."""
    for name in ("lightning", "lightning.pytorch", "lightning.fabric", "torchmetrics"):
        lg = logging.getLogger(name)
        lg.handlers.clear()
        lg.propagate = True
    warnings.filterwarnings("ignore", message=r".*LeafSpec.*", category=Warning)
    warnings.filterwarnings("ignore", message=r".*smaller than the logging interval.*")  # small data: fewer points, no error


def guard(fn: Callable[[DictConfig], dict]) -> Callable[[DictConfig], dict]:
    """A failing job's error recorded in its run directory (error.txt, for the sweep table); a single run then
    stops (one line for data and numerical problems, else the traceback), a multirun's job returns {} so the
    sweep goes on. A stop request (Ctrl-C, SIGTERM) is not a failure: it stops the sweep as well."""

    @functools.wraps(fn)
    def wrapped(cfg: DictConfig) -> dict:
        out = Path(cfg.paths.output_dir)
        try:
            result = fn(cfg)
        except BaseException as e:
            if isinstance(e, SystemExit) and not isinstance(e, SIGTERMException):
                raise  # a job that ended itself (an interrupted predict) has said why
            message = one_line(e)  # the sweep table's error
            if out.is_dir():
                atomic_write_text(out / "error.txt", traceback.format_exc() + f"\n{message}\n")
            if isinstance(e, SIGTERMException):
                after = ("; checkpoints/last.ckpt holds the last finished epoch (resume= continues)"
                         if fn.__name__ == "train" else "")
                console.print(f"[bold red]interrupted[/] by SIGTERM ({out}): stopped here{after}", soft_wrap=True)
                raise SystemExit(128 + signal.SIGTERM) from None
            multirun = HydraConfig.initialized() and HydraConfig.get().mode == RunMode.MULTIRUN
            if isinstance(e, KeyboardInterrupt) or not multirun:
                known = _user_error(e)
                if known is not None:
                    what = ("data error" if isinstance(known, DataError)
                            else "training stopped" if fn.__name__ == "train" else "stopped")
                    console.print(f"[bold red]{what}:[/] {escape(str(known))}", soft_wrap=True)
                    raise SystemExit(1) from None
                raise
            console.print(f"[bold red]job failed[/] ({escape(str(out))}): {escape(message)}", soft_wrap=True)
        else:
            (out / "error.txt").unlink(missing_ok=True)  # from an earlier attempt of this run, now resumed
            return result
        gc.collect()  # outside the except block: the traceback's frames (and tensors: CUDA OOM) are gone
        if torch.cuda.is_available():
            torch.cuda.empty_cache()
        return {}

    return wrapped


def _user_error(e: BaseException) -> DataError | NonFiniteError | None:
    """The data problem or divergence behind `e`, also when Hydra's instantiate wrapped it (a datamodule that
    refuses its config raises inside `instantiate`, which re-raises it as an InstantiationException)."""
    while e is not None:
        if isinstance(e, DataError | NonFiniteError):
            return e
        if isinstance(e, MissingMandatoryValue):  # a `???` in the config the command line did not set
            key = getattr(e, "full_key", "") or "a required setting"
            return DataError(f"{key} is required: give {key}=... on the command line (--help lists the options)")
        e = e.__cause__
    return None


CONF_DIR = Path(__file__).resolve().parent / "conf"  # the package's own configs, installed with it


def command_help(config_name: str) -> str:
    """`--help`: the command's own options, one line each, as its config file states them, and the config groups
    it composes (Hydra's own help lists every group of every command: `--hydra-help`)."""
    lines = (CONF_DIR / f"{config_name}.yaml").read_text().splitlines()
    own, in_defaults = [], False
    for line in lines:
        continued = in_defaults and (line.startswith("  -") or not line.strip())
        in_defaults = line.startswith("defaults:") or continued
        if not in_defaults:
            own.append(line)
    uses = {line.split("/")[-1].split(":")[0].strip(" -") for line in lines if line.startswith("  - ")}
    groups = sorted(p.name for p in CONF_DIR.iterdir() if p.is_dir() and p.name in uses - {"hydra", "paths"})
    chosen = [f"  {g}: " + " | ".join(sorted(q.stem for q in (CONF_DIR / g).glob("*.yaml"))) for g in groups]
    return "\n".join([f"options (key=value; landmark_exp/conf/{config_name}.yaml):", *own]
                     + (["", "config groups (group=option):", *chosen] if chosen else []))


def run_command(config_name: str, job: Callable[[DictConfig], object]) -> None:
    """Compose conf/<config_name>.yaml with the command line (Hydra) and run `job` on it."""
    import hydra

    if any(a in ("--help", "-h") for a in sys.argv[1:]):
        print(command_help(config_name))
        raise SystemExit(0)

    hydra.main(version_base="1.3", config_path=str(CONF_DIR), config_name=config_name)(job)()

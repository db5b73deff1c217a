"""What every command does around its work: its config shown and saved, its errors turned into one line (or,
in a sweep, a failed job the sweep goes past), one run per output directory, no input overwritten, and a stop
request (SIGTERM, Ctrl-C) turned into a clean end. The argument checks are in `arguments.py`.
"""

from __future__ import annotations

import contextlib
import functools
import gc
import logging
import os
import signal
import socket
import sys
import traceback
import warnings
from collections.abc import Callable, Iterable, Iterator
from pathlib import Path
from typing import Any

import torch
from lightning.pytorch.utilities import rank_zero_only
from lightning.pytorch.utilities.exceptions import SIGTERMException
from omegaconf import DictConfig, ListConfig, OmegaConf
from omegaconf.errors import MissingMandatoryValue
from rich.markup import escape
from rich.syntax import Syntax
from rich.tree import Tree

from landmark_exp.data.records import DataError, one_line
from landmark_exp.files import atomic_write_text
from landmark_exp.guards import NonFiniteError
from landmark_exp.heatmap.decoder import METHODS
from landmark_exp.reports import console

LOCK_NAME = ".landmark_exp.lock"


def writable_dir(path: Path, what: str, create_parents: bool = False) -> Path:
    """`path` as a folder this process can write into, created if missing (its parent must exist unless
    `create_parents`); one line for a file in the way, a missing parent, or no permission."""
    if path.exists() and not path.is_dir():
        raise DataError(f"{what}={path}: exists and is not a folder")
    if not path.exists():
        if not create_parents and not path.parent.is_dir():
            raise DataError(f"{what}={path}: its parent folder {path.parent} does not exist")
        try:
            path.mkdir(parents=True, exist_ok=True)
        except OSError as e:
            raise DataError(f"{what}={path}: cannot create it ({e.strerror or type(e).__name__})") from None
    if not os.access(path, os.W_OK | os.X_OK):
        raise DataError(f"{what}={path}: this folder is not writable")
    return path


def refuse_overwriting_inputs(outputs: Iterable[Path], inputs: Iterable[Path], what: str = "output") -> None:
    """No command writes over a file it reads: one line if any planned output is one of the inputs."""
    read = {_identity(p) for p in inputs if p.exists()}
    for out in outputs:
        if out.exists() and _identity(out) in read:
            raise DataError(f"{what}={out}: is one of this command's inputs; it would be overwritten")


def output_file(out: Path, inputs: Iterable[Path], overwrite: bool) -> Path:
    """The file a command will write, checked before any work: never one it reads (whatever `overwrite` says),
    an existing file only with overwrite=true, in a folder that exists and is writable."""
    refuse_overwriting_inputs([out], inputs, "output")
    if out.is_dir():
        raise DataError(f"output={out}: is a folder; give a file name")
    if out.exists() and not overwrite:
        raise DataError(f"output={out}: exists; overwrite=true replaces it")
    writable_dir(out.parent, "output")
    return out


def _identity(path: Path) -> tuple[int, int]:
    st = path.stat()
    return st.st_dev, st.st_ino


def _process_start(pid: int) -> str | None:
    """The kernel's start time of `pid` (Linux), so a lock held by a dead process whose id was reused is stale."""
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[19]
    except (OSError, IndexError):
        return None


def _alive(pid: int, started: str | None) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return started is None or _process_start(pid) in (None, started)


@contextlib.contextmanager
def run_lock(folder: Path, what: str = "output_dir") -> Iterator[None]:
    """Hold `folder` for this run: a second run into it while this one lives is refused with one line.
    The lock file names the holder (host, process id, start time); one left by a process that is gone
    (killed with SIGKILL, say) is taken over."""
    lock = folder / LOCK_NAME
    me = f"{socket.gethostname()} {os.getpid()} {_process_start(os.getpid())}\n"
    for _ in range(3):
        try:
            fd = os.open(lock, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o644)
        except FileExistsError:
            host, pid, started = (lock.read_text(errors="replace").split() + ["", "", ""])[:3]
            same_host = host == socket.gethostname()
            if pid.isdigit() and (not same_host or _alive(int(pid), None if started == "None" else started)):
                where = "" if same_host else f" on {host}"
                raise DataError(f"{what}={folder}: another run (process {pid}{where}) is writing there; wait for it "
                                f"or choose another folder (if no run is going, delete {lock})") from None
            lock.unlink(missing_ok=True)  # its holder is gone
            continue
        except OSError as e:
            raise DataError(f"{what}={folder}: cannot write there ({e.strerror or type(e).__name__})") from None
        with os.fdopen(fd, "w") as fh:
            fh.write(me)
        break
    else:
        raise DataError(f"{what}={folder}: could not take {lock}; another run keeps taking it")
    try:
        yield
    finally:
        with contextlib.suppress(OSError):
            if lock.read_text() == me:
                lock.unlink()


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


def stopped_by(signum: int | None) -> str:
    return {int(signal.SIGTERM): "SIGTERM", int(signal.SIGINT): "Ctrl-C"}.get(int(signum or 0), "a signal")


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


def _in_multirun() -> bool:
    from hydra.core.hydra_config import HydraConfig
    from hydra.types import RunMode

    return HydraConfig.initialized() and HydraConfig.get().mode == RunMode.MULTIRUN


def guard(fn: Callable[[DictConfig], dict]) -> Callable[[DictConfig], dict]:
    """Record a failing job's error in its run directory (error.txt; the sweep table lists it).

    A single run then stops (exit status 1: one line for data and numerical problems, else the
    traceback). In a multirun the job returns {} instead, so the launcher goes on with the other
    jobs; the sweep summary reports the failures and the sweep exits with status 1. A stop request
    (Ctrl-C, SIGTERM) is not a failure: it stops the sweep as well (SIGTERM: exit status 143).
    """

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
                # a stop request (kill, a scheduler's preemption), not a failed job: the sweep stops too
                after = ("; checkpoints/last.ckpt holds the last finished epoch (resume= continues)"
                         if fn.__name__ == "train" else "")
                console.print(f"[bold red]interrupted[/] by SIGTERM ({out}): stopped here{after}", soft_wrap=True)
                raise SystemExit(128 + signal.SIGTERM) from None
            if isinstance(e, KeyboardInterrupt) or not _in_multirun():
                known = _user_error(e)
                if known is not None:
                    # a user's data problem, or training diverged: one line naming the file or step, no traceback
                    what = ("data error" if isinstance(known, DataError)
                            else "training stopped" if fn.__name__ == "train" else "stopped")
                    console.print(f"[bold red]{what}:[/] {escape(str(known))}", soft_wrap=True)
                    raise SystemExit(1) from None
                raise
            console.print(f"[bold red]job failed[/] ({escape(str(out))}): {escape(message)}", soft_wrap=True)
        else:
            (out / "error.txt").unlink(missing_ok=True)  # from an earlier attempt of this run, now resumed
            return result
        _release_memory()  # outside the except block: the traceback's frames (and tensors) are gone now
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


def _release_memory() -> None:
    """After a failed job, before the next one in this process (e.g. after a CUDA out-of-memory error)."""
    gc.collect()
    if torch.cuda.is_available():
        torch.cuda.empty_cache()


CONF_DIR = Path(__file__).resolve().parent / "conf"  # the package's own configs, installed with it


def command_help(config_name: str) -> str:
    """`--help`: the command's own options, one line each, as its config file states them, and the config groups
    it composes (Hydra's own help lists every group of every command: `--hydra-help`)."""
    lines = (CONF_DIR / f"{config_name}.yaml").read_text().splitlines()
    own, skip = [], False
    for line in lines:
        if line.startswith("defaults:"):
            skip = True
            continue
        if skip and (line.startswith("  -") or not line.strip()):
            continue
        skip = False
        own.append(line)
    groups = sorted(p.name for p in CONF_DIR.iterdir() if p.is_dir() and p.name not in ("hydra", "paths"))
    listed = [f"  {g}: " + " | ".join(sorted(q.stem for q in (CONF_DIR / g).glob("*.yaml"))) for g in groups]
    uses = {line.split("/")[-1].split(":")[0].strip(" -") for line in lines if line.startswith("  - ")}
    chosen = [text for g, text in zip(groups, listed, strict=True) if g in uses]
    return "\n".join([f"options (key=value; landmark_exp/conf/{config_name}.yaml):", *own]
                     + (["", "config groups (group=option):", *chosen] if chosen else []))


def run_command(config_name: str, job: Callable[[DictConfig], object]) -> None:
    """Compose conf/<config_name>.yaml with the command line (Hydra) and run `job` on it."""
    import hydra

    if any(a in ("--help", "-h") for a in sys.argv[1:]):
        print(command_help(config_name))
        raise SystemExit(0)

    hydra.main(version_base="1.3", config_path=str(CONF_DIR), config_name=config_name)(job)()

"""What every command does around its work: arguments checked before any of it, one run per output
directory, no input overwritten, and a stop request (SIGTERM, Ctrl-C) turned into a clean end.

Only the standard library and numbers here: each check fails with a `DataError` whose message is
one line naming the argument or file, which the entry points print without a traceback.
"""

from __future__ import annotations

import contextlib
import math
import os
import signal
import socket
from collections.abc import Iterable, Iterator, Sequence
from pathlib import Path

from landmark_exp.data.records import DataError

DEVICES = ("auto", "cpu", "cuda")
LOCK_NAME = ".landmark_exp.lock"


def positive_int(value: object, what: str) -> int:
    """A whole number >= 1 given as a number or its digits (`batch_size=8`); one line naming `what` otherwise."""
    if isinstance(value, bool):
        value = None
    if isinstance(value, str) and value.strip().isdigit():
        value = int(value.strip())
    if isinstance(value, float) and value.is_integer():
        value = int(value)
    if not isinstance(value, int) or value < 1:
        raise DataError(f"{what} must be a whole number >= 1, got {value!r}")
    return value


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


def int_pairs(value: object, what: str, limit: int | None = None) -> list[tuple[int, int]] | None:
    """[[dy, dx], ...] whole-number pairs (e.g. `tta_shifts`), each within +/-limit; None stays None."""
    if value is None:
        return None
    example = "e.g. [[0,0],[0,8],[8,0]]"
    if isinstance(value, str) or not isinstance(value, Iterable):
        raise DataError(f"{what}={value!r}: a list of [dy, dx] pairs, {example}")
    pairs = []
    for item in value:
        if isinstance(item, str) or not isinstance(item, Iterable):
            raise DataError(f"{what}={value!r}: a list of [dy, dx] pairs, {example}")
        pair = list(item)
        if len(pair) != 2 or not all(isinstance(v, int) and not isinstance(v, bool) for v in pair):
            raise DataError(f"{what}={value!r}: each shift is two whole numbers [dy, dx], {example}")
        if limit is not None and max(abs(pair[0]), abs(pair[1])) >= limit:
            raise DataError(f"{what}={value!r}: shifts must stay within +/-{limit - 1} pixels")
        pairs.append((pair[0], pair[1]))
    if not pairs:
        raise DataError(f"{what}=[]: give at least one [dy, dx] pair, or null for none")
    return pairs


def spacing_pair(value: object, what: str = "spacing") -> tuple[float, float] | None:
    """mm per pixel: a positive finite number, or [x, y] of them; None stays None."""
    if value is None:
        return None
    items = [value] if isinstance(value, int | float | str) else list(value) if isinstance(value, Iterable) else [value]
    try:
        numbers = [float(v) for v in items]
    except (TypeError, ValueError):
        numbers = []
    if len(numbers) == 1:
        numbers *= 2
    if len(numbers) != 2 or not all(math.isfinite(v) and 0 < v < 100 for v in numbers):
        raise DataError(f"{what}={value!r}: mm per pixel, a positive number (or [x, y]) such as 0.1")
    return numbers[0], numbers[1]


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


def one_of(value: object, choices: Sequence[str], what: str) -> str:
    if value not in choices:
        raise DataError(f"{what}={value!r}: choose one of {', '.join(choices)}")
    return str(value)

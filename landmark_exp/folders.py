"""Where a command writes, checked before any work: an output folder it can write into, an output file that is
not one of its inputs (nor an existing file unless overwrite=true), and one run at a time per output folder.
Only the standard library here: every command imports it before it has read anything heavy."""

from __future__ import annotations

import contextlib
import os
import socket
from collections.abc import Iterable, Iterator
from pathlib import Path

from landmark_exp.data.records import DataError

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
    refuse_overwriting_inputs([out], inputs)
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

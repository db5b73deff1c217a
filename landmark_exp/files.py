"""Files written atomically (a kill leaves the previous file or the new one) and strict JSON. Only the
standard library and NumPy here, so that checkpoints and the detector write files without importing tables or
images."""

from __future__ import annotations

import json
import os
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any, BinaryIO

import numpy as np

# mkstemp creates 0600 files; results on shared machines get the usual umask-based mode instead
_UMASK = os.umask(0)
os.umask(_UMASK)


@contextmanager
def atomic_open(path: Path | str) -> Iterator[BinaryIO]:
    """A binary file handle whose content replaces `path` only once fully written and synced (the temporary
    file sits beside `path`: same filesystem, so os.replace is atomic)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        os.fchmod(fd, 0o666 & ~_UMASK)
        with os.fdopen(fd, "wb") as fh:
            yield fh
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def atomic_write_bytes(path: Path | str, data: bytes) -> None:
    with atomic_open(path) as fh:
        fh.write(data)


def atomic_write_text(path: Path | str, text: str) -> None:
    atomic_write_bytes(path, text.encode())


def write_json(path: Path | str, obj: Any) -> None:
    """Strict JSON: a non-finite float (Python or numpy, at any depth) is written as null, never as the
    NaN/Infinity tokens json.dumps emits by default, which strict parsers (JavaScript, jq, Go) reject."""
    atomic_write_text(path, json.dumps(_jsonable(obj), indent=2, allow_nan=False) + "\n")


def write_csv(path: Path | str, frame: Any) -> None:
    """A pandas DataFrame as CSV (index dropped, 6 significant digits)."""
    atomic_write_text(path, frame.to_csv(index=False, float_format="%.6g"))


def _jsonable(o: Any) -> Any:
    """`o` as JSON-ready values: numpy scalars and arrays as Python ones, non-finite floats as None
    (recursively through dicts, lists and tuples), anything else json cannot write as its str()."""
    if isinstance(o, float):  # numpy.float64 included
        return o if np.isfinite(o) else None
    if o is None or isinstance(o, (str, int)):
        return o
    if isinstance(o, dict):
        return {k: _jsonable(v) for k, v in o.items()}
    if isinstance(o, (list, tuple)):
        return [_jsonable(v) for v in o]
    if isinstance(o, np.generic):
        return _jsonable(o.item())
    if isinstance(o, np.ndarray):
        if o.dtype.kind == "f" and not np.isfinite(o).all():
            return np.where(np.isfinite(o), o, None).tolist()  # an object array: floats, and None for NaN/inf
        return _jsonable(o.tolist()) if o.dtype.kind == "O" else o.tolist()
    return str(o)

"""Files written atomically (temporary file beside the target, synced, renamed) and strict JSON.

Only the standard library and NumPy here, so that checkpoints, provenance and the detector can write a file
without importing tables, plots or image libraries. A kill leaves the previous file or the new one.
"""

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
    """A binary file handle whose content replaces `path` only once fully written and synced.

    The temporary file sits beside `path` (same filesystem, so os.replace is atomic); on any
    error, or a kill before the rename, `path` keeps its previous content.
    """
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
    try:  # the common case, all finite: one pass, no copy
        text = json.dumps(obj, indent=2, default=_json_default, allow_nan=False)
    except ValueError:  # a NaN/inf somewhere: rebuild with nulls in their place
        text = json.dumps(_json_default(obj), indent=2, default=_json_default, allow_nan=False)
    atomic_write_text(path, text + "\n")


def write_csv(path: Path | str, frame: Any) -> None:
    """A pandas DataFrame as CSV (index dropped, 6 significant digits)."""
    atomic_write_text(path, frame.to_csv(index=False, float_format="%.6g"))


def _json_default(o: Any) -> Any:
    """`o` as JSON-ready values: numpy scalars and arrays as Python ones, non-finite floats as None
    (recursively through dicts, lists and tuples), anything else json cannot write as its str()."""
    if isinstance(o, float):  # numpy.float64 included
        return o if np.isfinite(o) else None
    if o is None or isinstance(o, (str, int)):
        return o
    if isinstance(o, dict):
        return {k: _json_default(v) for k, v in o.items()}
    if isinstance(o, (list, tuple)):
        return [_json_default(v) for v in o]
    if isinstance(o, np.generic):
        return _json_default(o.item())
    if isinstance(o, np.ndarray):
        if o.dtype.kind == "f" and not np.isfinite(o).all():
            return np.where(np.isfinite(o), o, None).tolist()  # an object array: floats, and None for NaN/inf
        return _json_default(o.tolist()) if o.dtype.kind == "O" else o.tolist()
    return str(o)



"""run_info.json: what produced a run directory (code version, libraries, command), so a result can be rerun;
written at the start of every run."""

from __future__ import annotations

import contextlib
import json
import os
import platform
import shlex
import socket
import subprocess
import sys
from datetime import UTC, datetime
from importlib import metadata
from pathlib import Path
from typing import Any

from hydra.core.hydra_config import HydraConfig

from landmark_exp.files import write_json
from landmark_exp.resume import TYPED_COMMAND

PROJECT_ROOT = Path(__file__).resolve().parents[1]
PACKAGES = (
    "torch", "torchvision", "lightning", "torchmetrics", "hydra-core", "omegaconf", "numpy", "albumentations",
    "segmentation-models-pytorch", "opencv-python-headless", "opencv-python", "pandas", "pillow", "optuna",
)


def git_state(root: Path = PROJECT_ROOT) -> dict[str, Any]:
    """Commit of the code that runs, and whether tracked files differ from it (untracked files do not count)."""

    def git(*args: str) -> str:
        return subprocess.run(["git", "-C", str(root), *args], capture_output=True, text=True, check=True, timeout=20).stdout

    try:
        # porcelain lines are "XY path": only trailing newlines may go (a leading space is the X column)
        changed = [line for line in git("status", "--porcelain", "--untracked-files=no").splitlines() if line.strip()]
        return {"commit": git("rev-parse", "HEAD").strip(), "branch": git("rev-parse", "--abbrev-ref", "HEAD").strip(),
                "dirty": bool(changed), "changed_files": [line[3:] for line in changed]}
    except (OSError, subprocess.SubprocessError) as e:
        return {"commit": None, "dirty": None, "error": f"{type(e).__name__}: {e}".strip()}


def package_versions() -> dict[str, str]:
    out = {}
    for name in PACKAGES:
        with contextlib.suppress(metadata.PackageNotFoundError):
            out[name] = metadata.version(name)
    return out


def run_info() -> dict[str, Any]:
    import torch

    info: dict[str, Any] = {
        "started": datetime.now(UTC).isoformat(timespec="seconds"),
        "command": shlex.join([sys.executable, *sys.argv]),
        "typed_command": os.environ.get(TYPED_COMMAND),  # differs from "command" after resume=
        "cwd": os.getcwd(),
        "host": socket.gethostname(),
        "python": platform.python_version(),
        "platform": platform.platform(),
        "git": git_state(),
        "packages": package_versions(),
        "cuda": torch.version.cuda,
        "devices": [torch.cuda.get_device_name(i) for i in range(torch.cuda.device_count())],
    }
    if HydraConfig.initialized():
        hc = HydraConfig.get()
        info["overrides"] = list(hc.overrides.task)
        # one job of a sweep (or a run) alone; in a launcher's worker process sys.argv is the worker's
        info["job_command"] = shlex.join(["python", f"{hc.job.config_name}.py", *hc.overrides.task])
    return info


def write_run_info(out_dir: Path | str) -> dict[str, Any]:
    path = Path(out_dir) / "run_info.json"
    info = run_info()
    if path.is_file():  # a resumed run: keep how it was started before
        try:
            old = json.loads(path.read_text())
            info["previous_starts"] = [*old.pop("previous_starts", []), old]
        except (OSError, ValueError):
            pass
    write_json(path, info)
    return info

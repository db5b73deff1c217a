"""`python train.py resume=<run dir> | resume=<folder of runs> | resume=latest`: a run continued in its own
directory with its own configuration, the command line rewritten before Hydra parses it (`resume_argv`). A
folder resumes its newest run (newest last.ckpt); `latest` is the newest run under `${paths.log_dir}/<task>`.
Only the standard library and Hydra here: this runs before every train.py start.
"""

from __future__ import annotations

import os
import re
import shlex
import sys
from pathlib import Path

import yaml

KEY = "resume"
TYPED_COMMAND = "LANDMARK_EXP_TYPED_COMMAND"  # the command as typed, for run_info.json
_FLAGS_WITH_VALUE = {"--config-path", "-cp", "--config-name", "-cn", "--config-dir", "-cd", "--experimental-rerun"}


def override_key(override: str) -> str:
    """`+a.b=1` -> `a.b`; `~a` -> `a`."""
    return override.split("=", 1)[0].lstrip("~+")


def _quote(value: str) -> str:
    if re.fullmatch(r"[\w/.\-+~:@]+", value):
        return value
    return "'" + value.replace("\\", "\\\\").replace("'", "\\'") + "'"


def find_run(target: Path) -> Path:
    """`target` itself when it holds checkpoints/last.ckpt, else the run below it with the newest one."""
    if (target / "checkpoints" / "last.ckpt").is_file():
        return target
    found = [p.parent.parent for p in target.glob("**/checkpoints/last.ckpt")]
    if not found:
        raise SystemExit(f"resume: no checkpoints/last.ckpt in or below {target}")
    return max(found, key=lambda run: (run / "checkpoints" / "last.ckpt").stat().st_mtime)


def _log_dir(config_dir: str, config_name: str, overrides: list[str]) -> Path:
    from hydra import compose, initialize_config_dir
    from hydra.core.global_hydra import GlobalHydra

    GlobalHydra.instance().clear()
    try:
        with initialize_config_dir(config_dir, version_base="1.3"):
            cfg = compose(config_name, overrides=[o for o in overrides if not o.startswith(("hydra.", "hydra/"))])
        return Path(cfg.paths.log_dir) / str(cfg.task_name)
    finally:
        GlobalHydra.instance().clear()


def recorded_overrides(path: Path) -> list[str]:
    """A run's recorded overrides, read as data: a list of `key=value` strings that select or set config values.
    A `hydra.` setting (Hydra itself builds or reads what its callbacks, launcher or search path name) is refused
    with one line before Hydra sees it; the classes a `_target_` names are checked when the job builds them."""
    try:
        original = yaml.safe_load(path.read_text()) or []
    except (OSError, UnicodeDecodeError, yaml.YAMLError) as e:
        raise SystemExit(f"resume: {path}: not readable as YAML ({' '.join(str(e).split())[:200]})") from None
    if not isinstance(original, list) or not all(isinstance(o, str) for o in original):
        raise SystemExit(f"resume: {path}: not a list of overrides")
    for n, o in enumerate(original, 1):
        parts = re.split(r"[./]", override_key(o))
        if parts[0] == "hydra" or any(p.startswith("_") and p.endswith("_") and p != "_target_" for p in parts):
            raise SystemExit(f"resume: {path}: override {n} {o!r} is refused (a recorded run may not change "
                             "hydra settings)")
    return original


def resume_argv(argv: list[str], config_dir: str | Path, config_name: str) -> list[str]:
    """argv with `resume=...` replaced by the run's recorded overrides (.hydra/overrides.yaml) less those
    given now, those given now (e.g. trainer.max_epochs=200), `ckpt_path=<run>/checkpoints/last.ckpt` and
    `hydra.run.dir=<run>`."""
    targets = [a.split("=", 1)[1] for a in argv[1:] if a.startswith(f"{KEY}=")]
    if not targets:
        return argv
    flags, given, args = [], [], iter(argv[1:])
    for a in args:
        if a.startswith("-"):
            flags.append(a)
            if a in _FLAGS_WITH_VALUE:
                flags.append(next(args, ""))
        elif not a.startswith(f"{KEY}="):
            given.append(a)
    if any(f in ("-m", "--multirun") for f in flags):
        raise SystemExit("resume= continues one run; it cannot be combined with --multirun")
    target = targets[-1]
    base = _log_dir(str(config_dir), config_name, given) if target == "latest" else Path(target)
    run = find_run(base.resolve())
    recorded = run / ".hydra" / "overrides.yaml"
    if not recorded.is_file():
        raise SystemExit(f"resume: {run} is not a Hydra run directory (no .hydra/overrides.yaml)")
    original = recorded_overrides(recorded)
    replaced = {override_key(o) for o in given} | {"ckpt_path"}
    ckpt = run / "checkpoints" / "last.ckpt"
    merged = [o for o in original if override_key(o) not in replaced] + given
    merged += [f"ckpt_path={_quote(str(ckpt))}", f"hydra.run.dir={_quote(str(run))}"]
    print(f"resuming {run} from {ckpt.name} with: {' '.join(merged[:-2]) or '(defaults)'}", flush=True)
    os.environ[TYPED_COMMAND] = shlex.join([sys.executable, *argv])
    return [argv[0], *flags, *merged]

"""Test1 MRE with and without the images that are training images (metrics.json `mre_without_same_images`).

    python benchmarks/without_training_images.py <dir of evaluate.py runs named as benchmarks/cascade_pairs.sh names them> [variant]

`variant`: the cascade_pairs.sh variant name the runs end with (default blend); groups with no runs are left out, and so
are runs scored before reports gave `mre_without_same_images`.
"""
import json
import sys
from pathlib import Path

import numpy as np

root, v = Path(sys.argv[1]), (sys.argv[2] if len(sys.argv) > 2 else "blend")
groups = {"9 pairs": f"s*_s*_{v}", "3 second stages as one": f"s*_all_{v}", "3 first stages as one + one second": "ens3_*",
          "3 + 3 ensemble": f"ensemble_all_{v}", "first stage seed 42 alone": "first_s42"}
for name, pattern in groups.items():
    dirs = sorted(root.glob(pattern)) or (sorted(root.glob("ensemble_all")) if name == "3 + 3 ensemble" else [])
    ms = [json.loads((d / "metrics.json").read_text()) for d in dirs if d.is_dir()]
    ms = [m for m in ms if "mre_without_same_images" in m]  # runs scored before reports had it are left out
    if not ms:
        continue
    a, b = np.array([m["mre"] for m in ms]), np.array([m["mre_without_same_images"] for m in ms])
    sd = lambda x: f" +/- {x.std(ddof=1):.3f}" if len(x) > 1 else ""  # noqa: E731
    print(f"{name} ({len(ms)} runs): with {a.mean():.4f}{sd(a)}, without {b.mean():.4f}{sd(b)}")

"""Test1 MRE with and without the images that are training images (metrics.json `mre_without_same_images`).

    python benchmarks/without_training_images.py <dir of evaluate.py runs named as benchmarks/cascade_pairs.sh names them>
"""
import json
import sys
from pathlib import Path

import numpy as np

groups = {"9 pairs": "s*_s*_blend", "3 second stages as one": "s*_all_blend", "3 first stages as one + one second": "ens3_*",
          "3 + 3 ensemble": "ensemble_all", "first stage seed 42 alone": "first_s42"}
root = Path(sys.argv[1])
for name, pattern in groups.items():
    ms = [json.loads((d / "metrics.json").read_text()) for d in sorted(root.glob(pattern)) if d.is_dir()]
    a, b = np.array([m["mre"] for m in ms]), np.array([m["mre_without_same_images"] for m in ms])
    sd = lambda v: f" +/- {v.std(ddof=1):.3f}" if len(v) > 1 else ""  # noqa: E731
    print(f"{name} ({len(ms)} runs): with {a.mean():.4f}{sd(a)}, without {b.mean():.4f}{sd(b)}")

"""Which incisal tip the 256x208 Test1 runs confused: counts behind RESULTS.md "Input 256x208"."""

import numpy as np
import pandas as pd

R = "benchmarks/results/cv5"
for new, old in (("test1_input256_sigma2_s1", "test1_sigma1.5_s1"), ("test1_input256_sigma2_s2", "test1_sigma1.5_s2")):
    n, o = pd.read_csv(f"{R}/{new}/per_landmark.csv"), pd.read_csv(f"{R}/{old}/per_landmark.csv")
    print(f"{new} minus {old}, per-landmark Test1 MRE (mm):")
    print((n.set_index("name").mre - o.set_index("name").mre).round(3).sort_values().to_string())
    p = pd.read_csv(f"{R}/{new}/predictions.csv")
    for lm, other in ((12, 11), (11, 12)):
        a = p[p.landmark == lm].merge(p[p.landmark == other], on="image_id", suffixes=("", "_o"))
        far = a[a.error_mm > 5]
        d = np.hypot(far.pred_x_mm - far.true_x_mm_o, far.pred_y_mm - far.true_y_mm_o)
        print(f"landmark {lm}: {len(far)} of {len(a)} images off by > 5 mm; their distance to landmark {other}'s truth:"
              f" median {d.median():.1f} mm, {int((d < 2).sum())} within 2 mm")

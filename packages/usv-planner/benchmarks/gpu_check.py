"""usv-planner has no GPU path (gtsam, scipy and shapely run on the CPU): record that and exit 0.

Usage: python benchmarks/gpu_check.py --out results/gpu --budget-s N
"""

import argparse
import json
import pathlib

parser = argparse.ArgumentParser(description=__doc__)
parser.add_argument("--out", type=pathlib.Path, default=pathlib.Path("results/gpu"))
parser.add_argument("--budget-s", type=float, default=60.0)
args = parser.parse_args()
args.out.mkdir(parents=True, exist_ok=True)
record = {"package": "usv-planner", "gpu": False, "reason": "CPU-only: gtsam factor graphs, scipy, shapely"}
(args.out / "usv-planner.json").write_text(json.dumps(record) + "\n")
print("usv-planner: CPU-only package (gtsam/scipy/shapely), no GPU checks to run")

"""W1 (docs/performance.md) without wasmpipe: the Python stages
(bench/stages/python/w1_double, w1_sum) called once per event by plain
python3, one process, the whole file read at once: what the same handler
costs in a plain Python program. Prints the sum.

    python3 bench/plain/w1.py numbers.jsonl
"""

import importlib.util
import json
import pathlib
import sys

here = pathlib.Path(__file__).resolve().parent
sys.path.insert(0, str(here.parent.parent / "plugin-sdk/python"))
sys.dont_write_bytecode = True  # nothing written beside the stages
import wasmpipe  # noqa: E402


def stage(name):
    """What `bench/stages/python/<name>/stage.py` registers with its
    decorator (the function, unchanged, and the reduce's `initial`)."""
    wasmpipe._stage = None  # one stage per module; W1 loads two
    path = here.parent / "stages/python" / name / "stage.py"
    spec = importlib.util.spec_from_file_location(f"stage_{name}", path)
    spec.loader.exec_module(importlib.util.module_from_spec(spec))
    return wasmpipe._stage


double = stage("w1_double")["fn"]
total = stage("w1_sum")
reduce, acc = total["fn"], total["initial"]
ctx = wasmpipe.Context("w1")
with open(sys.argv[1], encoding="utf-8") as f:
    lines = f.read().split("\n")
for line in lines:
    if line:
        acc = reduce(acc, double(json.loads(line), ctx), ctx)
print(json.dumps(acc))

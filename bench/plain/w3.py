"""W3 (docs/performance.md) without wasmpipe: the Python stage
(bench/stages/python/w3_stats) called once per event by plain python3, one
process, the whole file read at once, grouped by ``service`` as the
manifest's ``key = "/service"`` does. Prints ``{"key":...,"value":...}``
lines, as wasmpipe does.

    python3 bench/plain/w3.py logs.jsonl
"""

import copy
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


w3 = stage("w3_stats")
reduce, initial = w3["fn"], w3["initial"]
ctx = wasmpipe.Context("w3_stats")
groups = {}
with open(sys.argv[1], encoding="utf-8") as f:
    lines = f.read().split("\n")
for line in lines:
    if line:
        event = json.loads(line)
        k = event["service"]
        groups[k] = reduce(groups[k] if k in groups else copy.deepcopy(initial), event, ctx)
for k in sorted(groups):
    print(json.dumps({"key": k, "value": groups[k]}, separators=(",", ":")))

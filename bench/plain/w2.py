"""W2 (docs/performance.md) without wasmpipe: the Python stage
(bench/stages/python/w2_enrich) called once per event by plain python3,
one process, the whole file read at once, outputs written as JSON lines
(compact, as wasmpipe's SDK writes them).

    python3 bench/plain/w2.py logs.jsonl OUT RECEIVED_AT
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


enrich = stage("w2_enrich")["fn"]
input, output, received_at = sys.argv[1:4]
ctx = wasmpipe.Context("w2_enrich", {"host": "bench-host"}, {"received_at": received_at})
with open(input, encoding="utf-8") as f:
    lines = f.read().split("\n")
with open(output, "w", encoding="utf-8") as out:
    for line in lines:
        if line:
            out.write(json.dumps(enrich(json.loads(line), ctx), ensure_ascii=False, separators=(",", ":")))
            out.write("\n")

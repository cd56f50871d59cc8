"""The development interpreter: the Python runtime with no stage in it.

``run --watch`` (and serve's and worker's) append a stage's modules to
this component rather than snapshotting each edit into a component of its
own (docs/abi.md, "Development builds"). The host hands them back through
``host.source`` as ``{"name", "module", "files": {"path.py": text}}``;
they are imported from there when the instance is first called, so an
edit costs reading the files, not a build. ``wasmpipe build`` makes the
snapshotted component instead, for production.
"""

import importlib
import json
import sys

import wasmpipe
from wit_world import exports
from wit_world.imports.host import source

# The stage's code runs after the snapshot, where only the modules
# imported while it was taken are loaded.
wasmpipe._keep_standard_library()


_stage = None


def _load():
    global _stage
    if _stage is None:
        text = source()
        if not text:
            raise RuntimeError(
                "this is wasmpipe's development interpreter, which runs a stage's code appended to it; "
                "build the stage with `wasmpipe build`"
            )
        given = json.loads(text)
        sys.meta_path.insert(0, wasmpipe._Sources(given["files"]))
        importlib.import_module(given["module"])
        _stage = wasmpipe._component_stage(given["name"])()
    return _stage


class Stage(exports.Stage):
    def describe(self):
        return _load().describe()

    def init(self, config):
        return _load().init(config)

    def process(self, ctx, events):
        return _load().process(ctx, events)

    def reduce(self, ctx, acc, events):
        return _load().reduce(ctx, acc, events)

    def combine(self, a, b):
        return _load().combine(a, b)

"""The wasmpipe SDK for Python stages.

A stage is a plain function with a decorator::

    from wasmpipe import map

    @map
    def double(event, ctx):
        return {**event, "n": event["n"] * 2}

``@filter`` keeps the events its function returns true for, ``@flat_map``
returns a list of events per event, and ``@reduce(initial=..., combine=...)``
folds events into an accumulator: ``def total(acc, event, ctx) -> acc``.
An exception raised on one event makes that event a dead letter with the
exception's message; ``print`` goes to the host's log, tagged with the
stage's name. ``ctx.params`` holds the manifest's params, ``ctx.meta`` the
chunk's context (``job``, ``received_at``, ``--meta`` fields...).

The decorators return the function unchanged, so tests call it directly.
``wasmpipe build`` turns the module into a ``wasmpipe:stage`` component;
the code below the line is what runs inside it.
"""

import copy
import importlib.abc
import importlib.util
import json
import sys

__all__ = ["map", "filter", "flat_map", "reduce", "init", "Context"]

_stage = None
_init = None


class Context:
    """What a stage function sees besides the event."""

    def __init__(self, stage="", params=None, meta=None, index=0):
        self.stage = stage
        self.params = {} if params is None else params
        self.meta = {} if meta is None else meta
        self.index = index

    def __repr__(self):
        return f"Context(stage={self.stage!r}, params={self.params!r}, meta={self.meta!r}, index={self.index})"


def _register(kind, fn, **extra):
    global _stage
    if _stage is not None:
        raise TypeError(
            f"a stage module has one stage function; `{_stage['fn'].__name__}` is already its {_stage['kind']}"
        )
    _stage = {"kind": kind, "fn": fn, **extra}
    return fn


def map(fn):
    """A map stage: one output event per event."""
    return _register("map", fn)


def filter(fn):
    """A filter stage: the events for which the function returns true."""
    return _register("filter", fn)


def flat_map(fn):
    """A flat_map stage: a list (or any iterable) of events per event."""
    return _register("flat_map", fn)


def reduce(initial, combine):
    """A reduce stage: ``fn(acc, event, ctx)`` returns the new accumulator,
    starting from ``initial`` (a value, copied, or a function returning
    one); ``combine(a, b)`` merges two accumulators and is associative."""
    if not callable(combine):
        raise TypeError("@reduce(initial=..., combine=...) takes a function as `combine`")

    def wrap(fn):
        return _register("reduce", fn, initial=initial, combine=combine)

    return wrap


def init(fn):
    """Called once per instance with the params; raising refuses them."""
    global _init
    _init = fn
    return fn


# ---------------------------------------------------------------------------
# Inside the component.

NO_EVENT = 0xFFFFFFFF


def _lines(events):
    # Not `splitlines`: it also splits at U+2028 and other characters a
    # JSON string may hold as they are.
    lines = events.split("\n")
    if lines and lines[-1] == "":
        lines.pop()
    return lines


def _message(e):
    if isinstance(e, KeyError):
        # str(KeyError("n")) is just "'n'".
        return f"KeyError: {e}"
    text = str(e)
    return text if text else type(e).__name__


def _json(value, what):
    try:
        return json.dumps(value, ensure_ascii=False, separators=(",", ":"), allow_nan=False)
    except (TypeError, ValueError) as e:
        raise ValueError(f"{what} returned a value that is not JSON: {e}") from None


def _key(event, pointer, tokens):
    v = event
    for t in tokens:
        if isinstance(v, dict) and t in v:
            v = v[t]
        elif isinstance(v, list) and t.isdigit() and int(t) < len(v):
            v = v[int(t)]
        else:
            raise ValueError(f"key `{pointer}` not found in event")
    if isinstance(v, str):
        return v
    if isinstance(v, bool) or isinstance(v, (int, float)):
        return json.dumps(v)
    if v is None:
        raise ValueError(f"key `{pointer}` is null in event")
    kind = "an array" if isinstance(v, list) else "an object"
    raise ValueError(f"key `{pointer}` is {kind}; keys must be strings, numbers or booleans")


class _Sources(importlib.abc.MetaPathFinder, importlib.abc.Loader):
    """Imports modules from sources held in memory, by path
    (``pkg/__init__.py``, ``pkg/mod.py``); ``decode`` turns what is held
    into the source."""

    def __init__(self, files, decode=lambda text: text):
        self.files = files
        self.decode = decode

    def find_spec(self, fullname, path=None, target=None):
        base = fullname.replace(".", "/")
        for origin, package in ((base + "/__init__.py", True), (base + ".py", False)):
            if origin in self.files:
                return importlib.util.spec_from_loader(fullname, self, origin=origin, is_package=package)
        return None

    def create_module(self, spec):
        return None

    def exec_module(self, module):
        origin = module.__spec__.origin
        module.__file__ = origin
        exec(compile(self.decode(self.files[origin]), origin, "exec"), module.__dict__)


def _keep_standard_library():
    """Keeps the standard library's sources, compressed, in the snapshot.

    componentize-py mounts the standard library only while it snapshots:
    a module imported then is in the snapshot, and any other would be gone
    at run time (a stage's ``import textwrap`` inside its function would
    fail with "No module named 'textwrap'"). The sources take a few MB
    compressed; a module is imported from them when a stage first asks for
    it, after the usual finders."""
    import os
    import zlib

    unused = {"test", "tests", "idlelib", "tkinter", "turtledemo", "lib2to3", "ensurepip", "pydoc_data"}
    unused |= {"site-packages", "__pycache__", "venv", "distutils"}
    found = {}
    for root in sys.path:
        # Where componentize-py mounts the library; nothing on a machine.
        if not root.startswith("/python") or not os.path.isdir(root):
            continue
        for at, dirs, names in os.walk(root):
            dirs[:] = [d for d in dirs if d not in unused]
            for name in names:
                if name.endswith(".py"):
                    path = os.path.join(at, name)
                    with open(path, "rb") as f:
                        found.setdefault(os.path.relpath(path, root), zlib.compress(f.read(), 9))
    sys.meta_path.append(_Sources(found, zlib.decompress))


def _component_stage(name):
    """The class componentize-py exports as ``wasmpipe:stage/stage``."""
    from componentize_py_types import Err
    from wit_world import exports
    from wit_world.exports import stage as wit
    from wit_world.imports.host import cursor

    if _stage is None:
        raise TypeError("a stage module decorates one function with @map, @filter, @flat_map or @reduce")
    kind = _stage["kind"]
    fn = _stage["fn"]
    state = {"config": {"stage": name, "params": {}, "key": None}, "tokens": None}

    def initial():
        i = _stage["initial"]
        return i() if callable(i) else copy.deepcopy(i)

    def context(ctx_text):
        c = state["config"]
        return Context(c["stage"], c["params"], json.loads(ctx_text))

    def each_event(ctx, events, errors, body):
        # Calls body(event, line, i) per event; a bad line or an exception
        # is that event's error alone. The chunk is parsed with one
        # json.loads, as an array, when it can be (a chunk with a bad line,
        # line by line). The host is told which event is running (cursor)
        # only when its config asks, "cursor": "each": it runs a chunk
        # again on such an instance when a call fails with no event named.
        lines = _lines(events)
        named = state["config"].get("cursor") == "each"
        parsed = None
        if lines:
            try:
                parsed = json.loads("[" + ",".join(lines) + "]")
                # A line holding `1,2` would be two elements.
                if len(parsed) != len(lines):
                    parsed = None
            except ValueError:
                parsed = None
        for i, line in enumerate(lines):
            if named:
                cursor(i)
            ctx.index = i
            try:
                if parsed is not None:
                    event = parsed[i]
                else:
                    try:
                        event = json.loads(line)
                    except ValueError as e:
                        raise ValueError(f"invalid event JSON: {e}") from None
                body(event, line, i)
            except Exception as e:
                errors.append(wit.EventError(index=i, message=_message(e)))
        if named:
            cursor(NO_EVENT)

    def process(ctx_text, events):
        ctx = context(ctx_text)
        out, origins, errors = [], [], []

        def one(event, line, i):
            r = fn(event, ctx)
            if kind == "map":
                out.append(_json(r, "map"))
                origins.append(i)
            elif kind == "filter":
                if r:
                    out.append(line)
                    origins.append(i)
            else:
                if r is None or isinstance(r, (str, bytes, dict)):
                    raise TypeError("flat_map returns a list (or any iterable) of events")
                produced = [_json(x, "flat_map") for x in r]
                out.extend(produced)
                origins.extend([i] * len(produced))

        each_event(ctx, events, errors, one)
        return wit.Output(out="".join(o + "\n" for o in out).encode(), origins=origins, errors=errors)

    def fold(ctx_text, acc_text, events, each_checked=False):
        # The accumulator is checked to be JSON once, at the end: after
        # every event, json.dumps of a growing accumulator would cost more
        # than the fold. If it is not JSON then, the chunk is folded again
        # from the same start, checking after each event, so the event
        # that broke it is the one that fails.
        ctx = context(ctx_text)
        tokens = state["tokens"]
        if acc_text is None:
            acc = {} if tokens is not None else initial()
        else:
            acc = json.loads(acc_text)
        errors = []

        def one(event, line, i):
            nonlocal acc
            if tokens is not None:
                k = _key(event, state["config"]["key"], tokens)
                nxt = fn(acc[k] if k in acc else initial(), event, ctx)
                if each_checked:
                    _json(nxt, "reduce")
                acc[k] = nxt
            else:
                nxt = fn(acc, event, ctx)
                if each_checked:
                    _json(nxt, "reduce")
                acc = nxt

        each_event(ctx, events, errors, one)
        try:
            text = _json(acc, "reduce")
        except ValueError:
            if each_checked:
                raise
            return fold(ctx_text, acc_text, events, True)
        return wit.Output(out=text.encode(), origins=[], errors=errors)

    def combine(a_text, b_text):
        a, b = json.loads(a_text), json.loads(b_text)
        if state["tokens"] is None:
            return _json(_stage["combine"](a, b), "combine")
        for k, v in b.items():
            a[k] = _stage["combine"](a[k], v) if k in a else v
        return _json(a, "combine")

    def guarded(f):
        # An exception out of an export is the call's error, a string.
        def call(*args):
            try:
                return f(*args)
            except Err:
                raise
            except Exception as e:
                raise Err(_message(e)) from None

        return call

    class Stage(exports.Stage):
        def describe(self):
            return wit.Metadata(abi=1, kind=kind, name=name, sdk="wasmpipe-python 0.1.0", keyed=False)

        def init(self, config):
            c = json.loads(config)
            state["config"] = c
            if c.get("key") is not None:
                if kind != "reduce":
                    raise Err(f"stage `{c['stage']}`: only a reduce takes a key")
                if not c["key"].startswith("/"):
                    raise Err(
                        f"invalid key `{c['key']}` for stage `{c['stage']}`: a JSON pointer starts with `/`, e.g. `/service`"
                    )
                state["tokens"] = [t.replace("~1", "/").replace("~0", "~") for t in c["key"].split("/")[1:]]
            if _init is not None:
                try:
                    _init(c["params"])
                except Exception as e:
                    raise Err(f"stage `{c['stage']}`: {_message(e)}") from None

        def process(self, ctx, events):
            if kind == "reduce":
                raise Err("a reduce stage has no `process`")
            return guarded(process)(ctx, events)

        def reduce(self, ctx, acc, events):
            if kind != "reduce":
                raise Err(f"a {kind} stage has no `reduce`")
            return guarded(fold)(ctx, acc, events)

        def combine(self, a, b):
            if kind != "reduce":
                raise Err(f"a {kind} stage has no `combine`")
            return guarded(combine)(a, b)

    return Stage

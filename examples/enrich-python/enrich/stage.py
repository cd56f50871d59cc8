"""The enrich example's map stage (plugins/enrich in Rust): enriches log
events with the deployment's region and environment (stage params), the
receiving host and time (chunk metadata) and a numeric level for range
queries.

Test: ``python3 -m pytest``. An event with an unknown level, or none, becomes
a dead letter: a raised exception's message is the dead letter's error.
"""

from wasmpipe import init, map

LEVELS = {"debug": 10, "info": 20, "warn": 30, "error": 40}


@init
def check_params(params):
    """Refuses params without a ``region``, once per instance, as the Rust stage does."""
    if not isinstance(params.get("region"), str):
        raise ValueError("params need a string `region`")
    if not isinstance(params.get("env", "prod"), str):
        raise ValueError("params `env` is a string")


@map
def enrich(event, ctx):
    """Events stay free-form objects: the stage adds fields and keeps the rest."""
    if not isinstance(event, dict):
        raise ValueError("an event is a JSON object")
    level = event.get("level")
    if not isinstance(level, str):
        raise ValueError("event has no string `level`")
    if level not in LEVELS:
        raise ValueError(f"unknown level `{level}`")
    host = ctx.meta.get("host")
    out = {
        **event,
        "region": ctx.params["region"],
        "env": ctx.params.get("env", "prod"),
        "host": host if isinstance(host, str) else None,
        "received_at": ctx.meta.get("received_at"),
        "level_num": LEVELS[level],
    }
    # Keys in sorted order, as the Rust stage writes them.
    return dict(sorted(out.items()))

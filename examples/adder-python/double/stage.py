"""The adder's map stage (plugins/double in Rust): ``{"n": 21}`` becomes
``{"n": 42}``. Like the Rust stage, the output holds ``n`` alone.

Test: ``python3 -m pytest``. A raised exception makes that one event a dead
letter with its message.
"""

from wasmpipe import map

I64_MAX = 2**63 - 1


@map
def double(event, ctx):
    """A map stage: one event in, one out."""
    n = event.get("n") if isinstance(event, dict) else None
    if not isinstance(n, int) or isinstance(n, bool):
        raise ValueError("event has no integer `n`")
    if abs(n * 2) > I64_MAX:
        raise ValueError(f"{n} is too large to double")
    return {"n": n * 2}

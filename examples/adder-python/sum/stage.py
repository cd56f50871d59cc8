"""The adder's reduce stage (plugins/sum in Rust): sums ``n`` over
``{"n": ...}`` events. The accumulator, and so the stage's output, is the
bare number.

Test: ``python3 -m pytest``. A raised exception makes that one event a dead
letter with its message.
"""

from wasmpipe import reduce


def add(a, b):
    """Sums of different chunks (parallel workers) add up."""
    return a + b


@reduce(initial=0, combine=add)
def total(acc, event, ctx):
    """A reduce stage: the sum starts at 0."""
    n = event.get("n") if isinstance(event, dict) else None
    if not isinstance(n, int) or isinstance(n, bool):
        raise ValueError("event has no integer `n`")
    return acc + n

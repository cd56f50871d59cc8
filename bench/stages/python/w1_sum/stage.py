"""W1's second stage, as plugins/sum in Rust: the sum of ``n``."""

from wasmpipe import reduce


def add(a, b):
    return a + b


@reduce(initial=0, combine=add)
def total(acc, event, ctx):
    return acc + event["n"]

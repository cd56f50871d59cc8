from functools import reduce as fold

from wasmpipe import Context
import pytest

from stage import add, total


def test_sums_and_combines():
    chunk = [{"n": n} for n in [1, 2, 3]]
    partial = fold(lambda acc, ev: total(acc, ev, Context()), chunk, 0)
    assert partial == 6
    assert add(partial, total(0, {"n": 4}, Context())) == 10


def test_refuses_what_is_not_an_integer_n():
    for event in [{"m": 1}, {"n": 0.5}, {"n": False}]:
        with pytest.raises(ValueError, match="no integer `n`"):
            total(0, event, Context())

from wasmpipe import Context
import pytest

from stage import double


def test_doubles():
    assert double({"n": 21}, Context()) == {"n": 42}
    assert double({"n": -3}, Context()) == {"n": -6}


def test_keeps_n_alone_as_the_rust_stage_does():
    assert double({"n": 1, "other": "x"}, Context()) == {"n": 2}


def test_refuses_what_is_not_an_integer_n():
    for event in [{}, {"n": 1.5}, {"n": "2"}, {"n": True}, None, [1]]:
        with pytest.raises(ValueError, match="no integer `n`"):
            double(event, Context())
    with pytest.raises(ValueError, match="too large"):
        double({"n": 2**63 - 1}, Context())

import json

from wasmpipe import Context
import pytest

from stage import check_params, enrich


def ctx(**params):
    return Context(
        "enrich",
        {"region": "eu-west-1", **params},
        {"host": "web-1", "received_at": "2024-05-01T12:00:00Z", "job": 3},
    )


def test_adds_fields_keys_sorted():
    out = enrich({"level": "warn", "msg": "disk 91%"}, ctx())
    expected = {
        "env": "prod",
        "host": "web-1",
        "level": "warn",
        "level_num": 30,
        "msg": "disk 91%",
        "received_at": "2024-05-01T12:00:00Z",
        "region": "eu-west-1",
    }
    assert out == expected
    assert json.dumps(out) == json.dumps(expected)


def test_refuses_unknown_levels():
    with pytest.raises(ValueError) as e:
        enrich({"level": "fatal"}, ctx())
    assert str(e.value) == "unknown level `fatal`"
    for event in [{"msg": "?"}, {"level": 3}]:
        with pytest.raises(ValueError) as e:
            enrich(event, ctx())
        assert str(e.value) == "event has no string `level`"


def test_env_comes_from_the_params_or_defaults_to_prod():
    assert enrich({"level": "info"}, ctx(env="staging"))["env"] == "staging"
    assert enrich({"level": "info"}, ctx())["env"] == "prod"


def test_missing_metadata_is_null():
    out = enrich({"level": "debug"}, Context("enrich", {"region": "us"}, {}))
    assert out["host"] is None
    assert out["received_at"] is None


def test_refuses_params_without_a_region():
    with pytest.raises(ValueError, match="region"):
        check_params({"env": "prod"})
    check_params({"region": "us"})

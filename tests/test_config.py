from __future__ import annotations

import json
import typing

import attrs
import pytest

from trioudp import Config, Options
from trioudp._config import make_config


def test_defaults_are_the_documented_ones() -> None:
    config = Config()
    assert config.max_datagram_size == 1200
    assert config.max_message_size == 1024 * 1024
    assert config.ordered is True
    assert config.framing is True
    assert config.overflow == "drop_oldest"


def test_round_trips_through_a_plain_dict_and_json() -> None:
    config = Config(
        max_datagram_size=1400, ordered=False, idle_timeout=None, overflow="drop_newest"
    )
    plain = json.loads(json.dumps(config.to_dict()))
    assert Config.from_dict(plain) == config
    assert Config.from_dict({}) == Config()


@pytest.mark.parametrize(
    ("options", "message"),
    [
        (
            {"max_datagram_size": 10},
            r"max_datagram_size must be an integer from 64 to 65507, got 10",
        ),
        ({"max_datagram_size": 70000}, r"max_datagram_size .* 65507, got 70000"),
        ({"max_datagram_size": 1200.0}, r"max_datagram_size must be an integer"),
        ({"reorder_timeout": -1}, r"reorder_timeout must be a number of seconds from 0 to 3600"),
        ({"reorder_timeout": float("nan")}, r"reorder_timeout"),
        ({"idle_timeout": 0}, r"idle_timeout .* \(or None to disable it\)"),
        ({"ordered": 1}, r"ordered must be True or False"),
        ({"overflow": "block"}, r"overflow must be 'drop_oldest' or 'drop_newest', got 'block'"),
        ({"channel_capacity": 0}, r"channel_capacity must be an integer from 1"),
        (
            {"max_message_size": 100_000_000},
            r"max_message_size=100000000 needs more than 65535 fragments",
        ),
        ({"peer_buffer_bytes": 1000}, r"peer_buffer_bytes=1000 cannot hold one message"),
        ({"channel_bytes": 1000}, r"channel_bytes=1000 cannot hold one message"),
        (
            {"total_buffer_bytes": 1024},
            r"total_buffer_bytes=1024 is smaller than peer_buffer_bytes",
        ),
    ],
)
def test_bad_options_name_the_option_and_the_range(
    options: dict[str, object], message: str
) -> None:
    with pytest.raises(ValueError, match=message):
        Config(**options)  # type: ignore[arg-type]


def test_unknown_options_are_named() -> None:
    with pytest.raises(TypeError, match=r"unknown trioudp option max_datagram;"):
        Config.from_dict({"max_datagram": 5})
    with pytest.raises(TypeError, match=r"the options are: framing, max_datagram_size"):
        make_config(None, {"bogus": 1})


def test_keywords_override_a_config() -> None:
    base = Config(max_datagram_size=1400)
    assert make_config(base, {"ordered": False}) == Config(max_datagram_size=1400, ordered=False)
    assert make_config(base, {}) is base
    with pytest.raises(TypeError, match=r"config must be a trioudp\.Config"):
        make_config({"ordered": False}, {})  # type: ignore[arg-type]


def test_raw_mode_does_not_limit_message_size_by_fragments() -> None:
    assert Config(framing=False, max_message_size=2**32 - 1, peer_buffer_bytes=1).framing is False


def test_options_typeddict_lists_every_field() -> None:
    assert set(typing.get_type_hints(Options)) == set(attrs.fields_dict(Config))


def test_from_dict_names_keys_that_are_not_option_names() -> None:
    with pytest.raises(TypeError, match="unknown trioudp options 1, a; the options are: framing"):
        Config.from_dict({1: 2, "a": 3})  # type: ignore[dict-item]

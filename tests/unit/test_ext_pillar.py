"""The snap ext_pillar at loader level (dunders injected by pytest-salt-factories)."""

import zlib

import pytest

from tests.support.loader_modules import load

ext = load("pillar")


@pytest.fixture
def configure_loader_modules():
    return {ext: {"__grains__": {"host": "web1", "fqdn": "web1.example.com"}, "__opts__": {}}}


def schedule(minion_id="web1.example.com", pillar=None, **options):
    return ext.ext_pillar(minion_id, pillar or {}, **options)["snap"]["schedule"]


def test_virtual_with_core():
    assert ext.__virtual__() == "snap"


def test_defaults_use_the_minion_id():
    assert schedule() == {
        "minute": zlib.crc32(b"web1.example.com") % 60,
        "second": (zlib.crc32(b"web1.example.com") // 60) % 60,
        "hours": [2, 10, 18],
        "slots": 60,
        "key": "id",
    }


def test_options_and_pillar_override():
    assert schedule(hours=[1, 13], slots=59)["minute"] == zlib.crc32(b"web1.example.com") % 59
    assert schedule(hours=[1, 13])["hours"] == [1, 13]
    own = {"snap": {"schedule": {"hours": [23, 4]}}}
    assert schedule(pillar=own, hours=[1, 13])["hours"] == [4, 23]


def test_hostname_key_uses_the_grain():
    assert schedule(key="hostname")["minute"] == zlib.crc32(b"web1") % 60


@pytest.mark.parametrize(
    "options,message",
    [
        ({"hours": [24]}, "not an hour"),
        ({"hours": []}, "at least one hour"),
        ({"hours": [2, 2]}, "twice"),
        ({"hours": "2,10"}, "list of integers"),
        ({"slots": 0}, "slots"),
        ({"slots": 61}, "slots"),
        ({"slots": True}, "slots"),
        ({"key": "fqdn"}, "key must be"),
        ({"hourz": [1]}, "unknown options"),
    ],
)
def test_bad_options_raise_naming_the_problem(options, message):
    with pytest.raises(ValueError, match=message):
        schedule(**options)

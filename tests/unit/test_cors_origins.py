"""--cors-origins entries in the form browsers send `Origin`, and how often a refusal is logged."""

from __future__ import annotations

import logging

import pytest

from tusd_py.config import Config
from tusd_py.cors import REFUSALS_PER_INTERVAL, RefusalLog, normalise_origin


@pytest.mark.parametrize(
    ("entry", "origin"),
    [
        ("https://a.example/", "https://a.example"),
        ("HTTPS://App.Example", "https://app.example"),
        ("https://a.example:443", "https://a.example"),
        ("http://a.example:80/", "http://a.example"),
        ("http://localhost:3000/", "http://localhost:3000"),
        ("https://a.example:8443", "https://a.example:8443"),
        ("http://[::1]:8080", "http://[::1]:8080"),
        ("capacitor://localhost", "capacitor://localhost"),
        ("*", "*"),
    ],
)
def test_an_entry_becomes_the_origin_a_browser_sends(entry: str, origin: str) -> None:
    assert normalise_origin(entry) == origin


@pytest.mark.parametrize(
    "entry",
    [
        "https://a.example/app",
        "https://a.example/?x=1",
        "https://a.example#top",
        "https://user@a.example",
        "a.example",
        "https://",
        "null",
        "https://a.example:99999",
    ],
)
def test_an_entry_that_is_not_an_origin_is_refused(entry: str) -> None:
    with pytest.raises(ValueError, match=r"is not an origin .*--cors-origins / TUSD_CORS_ORIGINS"):
        normalise_origin(entry)


def test_the_config_holds_the_normalised_origins_once_each() -> None:
    config = Config(cors_origins=["https://A.example/", "https://a.example", "http://b.example"])
    assert config.cors_origins == ["https://a.example", "http://b.example"]


def test_each_origin_is_logged_once_per_interval_and_all_of_them_a_bounded_number_of_times(
    caplog: pytest.LogCaptureFixture,
) -> None:
    refusals = RefusalLog(interval=60)
    assert refusals.should_log("https://a.example", now=0)
    assert not refusals.should_log("https://a.example", now=30)
    assert refusals.should_log("https://a.example", now=61)
    flood = [refusals.should_log(f"https://{n}.example", now=70) for n in range(100)]
    assert sum(flood) == REFUSALS_PER_INTERVAL - 1  # https://a.example had one in this interval
    with caplog.at_level(logging.WARNING, "tusd_py.cors"):
        assert refusals.should_log("https://b.example", now=200)
    assert "81 more CORS refusals in the last 60s were not logged" in caplog.text

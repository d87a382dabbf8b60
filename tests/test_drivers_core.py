"""URL parsing, the driver registry and the traffic counters."""

from __future__ import annotations

import sys
import textwrap
from pathlib import Path

import pytest

from drivers import (
    DriverCounters,
    UnknownDriverError,
    driver_names,
    load_driver,
    open_url,
    parse_url,
)
from drivers.chirp import ChirpDriver
from drivers.local import LocalDriver


def test_parse_url() -> None:
    loc = parse_url("chirp://127.0.0.1:9094/dir/a%20b")
    assert (loc.scheme, loc.host, loc.port, loc.path) == ("chirp", "127.0.0.1", 9094, "/dir/a b")
    assert parse_url("file:///tmp/x/../y").path == "/tmp/y"
    assert parse_url("chirp://h/what?#not-a-query").path == "/what?#not-a-query"
    ftp = parse_url("ftp://user:p%40ss@host:21/f")
    assert (ftp.user, ftp.password) == ("user", "p@ss")
    for bad in ("notaurl", "chirp://h:99999999/", "://x"):
        with pytest.raises(ValueError):
            parse_url(bad)


def test_registered_drivers_are_found_by_name() -> None:
    assert {"local", "chirp"} <= set(driver_names())
    assert load_driver("chirp") is ChirpDriver
    assert load_driver("local") is LocalDriver


def test_unknown_driver_lists_the_known_ones() -> None:
    with pytest.raises(UnknownDriverError, match=r"known drivers: .*chirp.*local"):
        load_driver("gopher")


def test_driver_from_outside_the_project(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    (tmp_path / "thirdparty_driver.py").write_text(
        textwrap.dedent(
            """
            from drivers.local import LocalDriver

            class MyDriver(LocalDriver):
                name = "mine"

            NotADriver = object
            """
        )
    )
    monkeypatch.syspath_prepend(str(tmp_path))
    try:
        cls = load_driver("thirdparty_driver:MyDriver")
        assert cls.name == "mine"
        with pytest.raises(UnknownDriverError, match="not a subclass"):
            load_driver("thirdparty_driver:NotADriver")
        with pytest.raises(UnknownDriverError, match="no attribute"):
            load_driver("thirdparty_driver:Missing")
        with pytest.raises(UnknownDriverError, match="cannot import"):
            load_driver("no_such_module_here:X")
    finally:
        sys.modules.pop("thirdparty_driver", None)


def test_open_url_picks_the_driver_by_scheme() -> None:
    driver, path = open_url("file:///etc/hostname")
    with driver:
        assert isinstance(driver, LocalDriver) and path == "/etc/hostname"
    with pytest.raises(UnknownDriverError, match="known schemes"):
        open_url("gopher://host/x")


def test_counters_attribute_to_the_innermost_operation() -> None:
    counters = DriverCounters()
    counters.connection_opened()  # outside any operation
    with counters.operation("read_file"):
        counters.round_trip()
        with counters.operation("pread"):
            counters.sent(10)
            counters.received(100)
            counters.round_trip()
    with pytest.raises(OSError), counters.operation("stat"):
        counters.round_trip()
        raise OSError(2, "missing")
    snap = counters.snapshot()
    assert snap["(connect)"].connections == 1
    assert snap["read_file"].round_trips == 1 and snap["read_file"].calls == 1
    assert (snap["pread"].bytes_sent, snap["pread"].bytes_received) == (10, 100)
    assert snap["stat"].errors == 1
    assert counters.total().round_trips == 3
    with counters.operation("pread"):
        counters.round_trip()
    delta = DriverCounters.difference(counters.snapshot(), snap)
    assert (
        list(delta) == ["pread"] and delta["pread"].round_trips == 1 and delta["pread"].calls == 1
    )

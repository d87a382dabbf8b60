"""URL parsing, the driver registry and the traffic counters."""

from __future__ import annotations

import subprocess
import sys
import textwrap
from importlib.metadata import entry_points
from pathlib import Path

import pytest

from drivers import (
    BUILT_IN_SERVICES,
    ENTRY_POINT_GROUP,
    DriverCounters,
    ServiceEntry,
    UnknownDriverError,
    driver_for_scheme,
    driver_for_service,
    driver_names,
    load_driver,
    open_url,
    parse_url,
    registered_drivers,
    service_ports,
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


def test_the_built_in_service_table_says_what_the_driver_classes_say() -> None:
    shipped = {
        ep.name for ep in entry_points(group=ENTRY_POINT_GROUP) if ep.value.startswith("drivers.")
    }
    assert shipped == set(BUILT_IN_SERVICES)
    loaded = registered_drivers()
    for name, entry in BUILT_IN_SERVICES.items():
        assert ServiceEntry.of(loaded[name]) == entry, name
    from_classes: dict[str, int] = {}
    for cls in loaded.values():
        entry = ServiceEntry.of(cls)
        for service in (*entry.url_schemes, entry.service):
            if entry.default_port:
                from_classes[service] = entry.default_port
    assert service_ports() == from_classes


_OTHER_DRIVERS = "('paramiko', 'drivers.sftp', 'drivers.ftp', 'drivers.webdav', 'drivers.xrootd', 'drivers.http')"


def _drivers_imported(*, table: bool, action: str) -> str:
    """The protocol modules loaded once ``action`` ran (with or without the built-in table)."""
    probe = (
        "import sys\n"
        "from drivers import _registry\n"
        f"_registry.BUILT_IN_SERVICES = _registry.BUILT_IN_SERVICES if {table} else {{}}\n"
        f"{action}\n"
        f"print(sorted(m for m in {_OTHER_DRIVERS} if m in sys.modules))\n"
    )
    result = subprocess.run(
        [sys.executable, "-c", probe], capture_output=True, text=True, check=True, timeout=60
    )
    return result.stdout.strip()


_ROUTE = (
    "from reference_agent.namespace._resolve import registered_services\n"
    "assert registered_services()['sftp'] == 22"
)


def test_the_agents_service_prefixes_import_no_driver() -> None:
    """Routing paths needs the table only: no protocol library is loaded to start the agent
    (without the table, as a seeded regression, every driver and paramiko are)."""
    assert _drivers_imported(table=True, action=_ROUTE) == "[]"
    assert "'paramiko'" in _drivers_imported(table=False, action=_ROUTE)


#: XRootD comes last in entry-point order: finding it by asking each driver in turn would
#: load every other one first.
_FIND_XROOTD = (
    "from drivers import driver_for_scheme, driver_for_service\n"
    "assert driver_for_service('xrootd').__name__ == 'XRootDDriver'\n"
    "assert driver_for_scheme('root').__name__ == 'XRootDDriver'\n"
    "sys.modules.pop('drivers.xrootd')  # the one it must load"
)


def test_finding_one_protocols_driver_imports_that_driver_only() -> None:
    """The agent's first XRootD path loads the XRootD driver, not paramiko and the rest
    (without the table, as a seeded regression, it loads them all)."""
    assert _drivers_imported(table=True, action=_FIND_XROOTD) == "[]"
    assert "'paramiko'" in _drivers_imported(table=False, action=_FIND_XROOTD)


def test_a_driver_is_found_by_its_service_or_any_of_its_schemes() -> None:
    """XRootD's service prefix is not its first scheme: each name finds the driver."""
    for name in ("xrootd", "root", "xroot"):
        assert driver_for_service(name).__name__ == "XRootDDriver", name
    assert driver_for_scheme("xroot").__name__ == "XRootDDriver"
    assert driver_for_service("file") is LocalDriver


def test_a_scheme_or_service_nothing_serves_is_named() -> None:
    with pytest.raises(UnknownDriverError, match=r"'gopher'; known schemes: .*chirp"):
        driver_for_scheme("gopher")
    with pytest.raises(UnknownDriverError, match=r"no driver serves /gopher/"):
        driver_for_service("gopher")


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

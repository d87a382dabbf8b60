"""Finding drivers by name, by URL scheme, or by ``package.module:Class``.

Registered drivers come from the ``aviary.drivers`` entry-point group, so a
third-party package adds its own by declaring an entry point; a driver under
development needs no packaging at all: ``--driver mypkg.mydriver:MyDriver``.

The agent asks for every service prefix when it starts; :data:`BUILT_IN_SERVICES`
answers that for the drivers shipped here without importing them (the SFTP driver
alone brings paramiko, a seventh of a second), and only drivers registered by
other packages are loaded to ask. A test holds the table to the classes.
"""

from __future__ import annotations

import importlib
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from importlib.metadata import EntryPoint, entry_points

from drivers._interface import Driver
from drivers._url import Location, parse_url

__all__ = [
    "BUILT_IN_SERVICES",
    "ENTRY_POINT_GROUP",
    "ServiceEntry",
    "UnknownDriverError",
    "broken_drivers",
    "driver_for_scheme",
    "driver_for_service",
    "driver_names",
    "load_driver",
    "open_url",
    "registered_drivers",
    "service_of",
    "service_ports",
]

ENTRY_POINT_GROUP = "aviary.drivers"


class UnknownDriverError(LookupError):
    """A driver name or URL scheme that nothing answers to."""


def driver_names() -> list[str]:
    """The names of the registered drivers that load, sorted."""
    return sorted(registered_drivers())


def _check_driver_class(obj: object, spec: str) -> type[Driver]:
    if not (isinstance(obj, type) and issubclass(obj, Driver)):
        raise UnknownDriverError(f"{spec} is not a subclass of drivers.Driver")
    return obj


def load_driver(spec: str) -> type[Driver]:
    """Return the driver class named by ``spec``.

    Args:
        spec: a registered name ("chirp") or "package.module:Class".

    Raises:
        UnknownDriverError: with a message that lists the known names.
    """
    if ":" in spec:
        module_name, _, attr = spec.partition(":")
        try:
            module = importlib.import_module(module_name)
        except ImportError as exc:
            raise UnknownDriverError(
                f"cannot import driver module {module_name!r}: {exc}"
            ) from None
        try:
            obj = getattr(module, attr)
        except AttributeError:
            raise UnknownDriverError(f"module {module_name!r} has no attribute {attr!r}") from None
        return _check_driver_class(obj, spec)
    for ep in entry_points(group=ENTRY_POINT_GROUP):
        if ep.name == spec:
            try:
                return _check_driver_class(ep.load(), spec)
            except (ImportError, AttributeError) as exc:
                raise UnknownDriverError(
                    f"driver {spec!r} is registered but does not load: {exc}"
                ) from None
    known = ", ".join(driver_names()) or "(none registered)"
    raise UnknownDriverError(
        f"unknown driver {spec!r}; known drivers: {known}; or give package.module:Class"
    )


def registered_drivers() -> dict[str, type[Driver]]:
    """Every registered driver that loads, by name; one that fails to import is left out.

    A broken third-party plugin must not take every other driver down with it;
    ``broken_drivers()`` says which ones failed and why.
    """
    found: dict[str, type[Driver]] = {}
    for ep in entry_points(group=ENTRY_POINT_GROUP):
        cls = _loaded(ep)
        if cls is not None:
            found[ep.name] = cls
    return found


def _loaded(ep: EntryPoint) -> type[Driver] | None:
    """The driver class ``ep`` names; None for a plugin that fails to load (a broken
    third-party plugin must not take the other drivers down: ``broken_drivers`` says why)."""
    try:
        return _check_driver_class(ep.load(), ep.name)
    except (ImportError, AttributeError, UnknownDriverError):
        return None


def broken_drivers() -> dict[str, str]:
    """Registered drivers that fail to load, with the reason."""
    broken: dict[str, str] = {}
    for ep in entry_points(group=ENTRY_POINT_GROUP):
        try:
            _check_driver_class(ep.load(), ep.name)
        except (ImportError, AttributeError, UnknownDriverError) as exc:
            broken[ep.name] = f"{type(exc).__name__}: {exc}"
    return broken


def driver_for_scheme(scheme: str) -> type[Driver]:
    """The registered driver that answers URLs of ``scheme`` (only it is imported, of the
    built-in ones)."""
    found = _first_driver(lambda entry: scheme in entry.url_schemes)
    if found is not None:
        return found
    schemes = sorted(s for entry in _service_entries() for s in entry.url_schemes)
    raise UnknownDriverError(
        f"no driver for URL scheme {scheme!r}; known schemes: {', '.join(schemes)}"
    )


def service_of(cls: type[Driver]) -> str:
    """The agent's path prefix for a driver's protocol."""
    return cls.service or cls.url_schemes[0]


@dataclass(frozen=True, slots=True)
class ServiceEntry:
    """What the agent needs of a driver class to route paths, without importing it."""

    url_schemes: tuple[str, ...]
    service: str
    default_port: int | None

    @classmethod
    def of(cls, driver: type[Driver]) -> ServiceEntry:
        port = int(driver.default_port) if driver.default_port else None
        return cls(tuple(driver.url_schemes), service_of(driver), port)


#: The drivers shipped in this package, by entry-point name, as their classes say.
BUILT_IN_SERVICES: Mapping[str, ServiceEntry] = {
    "local": ServiceEntry(("file", "local"), "file", None),
    "chirp": ServiceEntry(("chirp",), "chirp", 9094),
    "ftp": ServiceEntry(("ftp",), "ftp", 21),
    "http": ServiceEntry(("http",), "http", 80),
    "webdav": ServiceEntry(("dav",), "dav", 80),
    "sftp": ServiceEntry(("sftp",), "sftp", 22),
    "xrootd": ServiceEntry(("root", "xroot"), "xrootd", 1094),
}


def _built_in(ep: EntryPoint) -> ServiceEntry | None:
    """The table's entry for ``ep`` when it names a driver shipped here (a plugin may take
    a built-in name for its own driver: then it is loaded to ask)."""
    built_in = BUILT_IN_SERVICES.get(ep.name)
    return built_in if built_in is not None and ep.value.startswith("drivers.") else None


def _service_entries() -> list[ServiceEntry]:
    """Every registered driver's entry: the built-in ones from the table, others loaded."""
    entries: list[ServiceEntry] = []
    for ep in entry_points(group=ENTRY_POINT_GROUP):
        built_in = _built_in(ep)
        if built_in is not None:
            entries.append(built_in)
            continue
        cls = _loaded(ep)
        if cls is not None:
            entries.append(ServiceEntry.of(cls))
    return entries


def service_ports() -> dict[str, int]:
    """Services of the remote drivers and their default ports: the agent's /SERVICE/HOST:PORT/ prefixes.

    URL schemes are accepted as services too (mountlists may say chirp://...).
    """
    ports: dict[str, int] = {}
    for entry in _service_entries():
        if entry.default_port:
            for name in (*entry.url_schemes, entry.service):
                ports[name] = entry.default_port
    return ports


def driver_for_service(service: str) -> type[Driver]:
    """The registered driver behind an agent service prefix (or URL scheme)."""
    found = _first_driver(lambda entry: service in (entry.service, *entry.url_schemes))
    if found is None:
        raise UnknownDriverError(f"no driver serves /{service}/")
    return found


def _first_driver(matches: Callable[[ServiceEntry], bool]) -> type[Driver] | None:
    """The first registered driver (in entry-point order) whose entry ``matches``, loaded.

    A connection names one protocol; importing every driver to find it cost a quarter
    of a second at each agent's first remote path (paramiko, invoke, ...)."""
    for ep in entry_points(group=ENTRY_POINT_GROUP):
        built_in = _built_in(ep)
        if built_in is not None and not matches(built_in):
            continue  # a built-in driver of another protocol: not imported
        cls = _loaded(ep)
        if cls is not None and matches(ServiceEntry.of(cls)):
            return cls
    return None


def open_url(url: str, *, timeout: float = 30.0) -> tuple[Driver, str]:
    """Build the driver for ``url`` and return it with the path inside its endpoint.

    Raises:
        ValueError: a malformed URL.
        UnknownDriverError: no driver for its scheme.
    """
    location: Location = parse_url(url)
    cls = driver_for_scheme(location.scheme)
    return cls.from_location(location, timeout=timeout), location.path

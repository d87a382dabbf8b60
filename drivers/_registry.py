"""Finding drivers by name, by URL scheme, or by ``package.module:Class``.

Registered drivers come from the ``aviary.drivers`` entry-point group, so a
third-party package adds its own by declaring an entry point; a driver under
development needs no packaging at all: ``--driver mypkg.mydriver:MyDriver``.
"""

from __future__ import annotations

import importlib
from importlib.metadata import entry_points

from drivers._interface import Driver
from drivers._url import Location, parse_url

__all__ = ["ENTRY_POINT_GROUP", "UnknownDriverError", "driver_names", "load_driver", "open_url"]

ENTRY_POINT_GROUP = "aviary.drivers"


class UnknownDriverError(LookupError):
    """A driver name or URL scheme that nothing answers to."""


def driver_names() -> list[str]:
    """The names of the registered drivers, sorted."""
    return sorted({ep.name for ep in entry_points(group=ENTRY_POINT_GROUP)})


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
            return _check_driver_class(ep.load(), spec)
    known = ", ".join(driver_names()) or "(none registered)"
    raise UnknownDriverError(
        f"unknown driver {spec!r}; known drivers: {known}; or give package.module:Class"
    )


def driver_for_scheme(scheme: str) -> type[Driver]:
    """The registered driver that answers URLs of ``scheme``."""
    schemes: list[str] = []
    for ep in entry_points(group=ENTRY_POINT_GROUP):
        cls = _check_driver_class(ep.load(), ep.name)
        if scheme in cls.url_schemes:
            return cls
        schemes.extend(cls.url_schemes)
    raise UnknownDriverError(
        f"no driver for URL scheme {scheme!r}; known schemes: {', '.join(sorted(schemes))}"
    )


def open_url(url: str, *, timeout: float = 30.0) -> tuple[Driver, str]:
    """Build the driver for ``url`` and return it with the path inside its endpoint.

    Raises:
        ValueError: a malformed URL.
        UnknownDriverError: no driver for its scheme.
    """
    location: Location = parse_url(url)
    cls = driver_for_scheme(location.scheme)
    return cls.from_location(location, timeout=timeout), location.path

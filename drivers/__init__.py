"""Remote I/O drivers behind one POSIX-shaped interface.

Each protocol lives in its own module (``drivers.local``, ``drivers.chirp``)
and is registered under the ``aviary.drivers`` entry-point group. Nothing here
imports a package above it (the agent, fixtures, tests, the CLI): data flows one way, from a
program's syscall through the agent and a driver to a real server.
"""

from drivers._counters import DriverCounters, OpCounters
from drivers._interface import (
    STAT_FIELDS,
    Capabilities,
    DirectReads,
    DirEntry,
    Driver,
    FileType,
    Handle,
    OpenFlags,
    StatFS,
    StatResult,
    handle_entry,
    raise_errno,
)
from drivers._network import COMMON_RECOVERY_ENV
from drivers._registry import (
    BUILT_IN_SERVICES,
    ENTRY_POINT_GROUP,
    ServiceEntry,
    UnknownDriverError,
    broken_drivers,
    driver_for_scheme,
    driver_for_service,
    driver_names,
    load_driver,
    open_url,
    registered_drivers,
    service_of,
    service_ports,
)
from drivers._url import Location, normalize_path, parse_url

__all__ = [
    "BUILT_IN_SERVICES",
    "COMMON_RECOVERY_ENV",
    "ENTRY_POINT_GROUP",
    "STAT_FIELDS",
    "Capabilities",
    "DirEntry",
    "DirectReads",
    "Driver",
    "DriverCounters",
    "FileType",
    "Handle",
    "Location",
    "OpCounters",
    "OpenFlags",
    "ServiceEntry",
    "StatFS",
    "StatResult",
    "UnknownDriverError",
    "broken_drivers",
    "driver_for_scheme",
    "driver_for_service",
    "driver_names",
    "handle_entry",
    "load_driver",
    "normalize_path",
    "open_url",
    "parse_url",
    "raise_errno",
    "registered_drivers",
    "service_of",
    "service_ports",
]

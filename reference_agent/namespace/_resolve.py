"""Lexical path resolution: logical path -> the mount's target.

Paths are resolved on their *logical* form: a relative path is joined onto
the task's logical working directory and ``.``/``..`` are collapsed before
any mount is consulted, so ``..`` at the root of a mounted remote tree leads
back into the logical parent (Parrot's behaviour). Symlinks are not followed
here: that needs the driver, and belongs to the path walker.
"""

from __future__ import annotations

import errno
import posixpath
import re
from collections.abc import Mapping
from dataclasses import dataclass
from urllib.parse import unquote

from drivers import parse_url, service_ports
from reference_agent.namespace._mounts import FULL_ACCESS, Access, Mount, MountlistError, Special

__all__ = [
    "DEFAULT_SERVICES",
    "LocalTarget",
    "Namespace",
    "Refused",
    "RemoteTarget",
    "ServiceDirectory",
    "Target",
    "logical_path",
]

#: Service prefixes (``/chirp/HOST:PORT/path``) and each protocol's default port,
#: when the registry is not consulted (tests of the namespace alone).
DEFAULT_SERVICES: Mapping[str, int] = {"chirp": 9094}


#: The top-level directories of a Linux system (the FHS's, and /root, home of the user who
#: runs everything as root). A service spelled like one (xrootd's URL scheme "root") is
#: accepted in URLs but is never a path prefix: /root/lib/x.zip must not ask a server "lib".
SYSTEM_DIRECTORIES = frozenset(
    [
        "bin",
        "boot",
        "dev",
        "etc",
        "home",
        "lib",
        "lib32",
        "lib64",
        "libx32",
        "media",
        "mnt",
        "opt",
        "proc",
        "root",
        "run",
        "sbin",
        "srv",
        "sys",
        "tmp",
        "usr",
        "var",
    ]
)


def registered_services() -> dict[str, int]:
    """Every registered remote driver's scheme, as a service prefix, with its default port."""
    return service_ports() or dict(DEFAULT_SERVICES)


@dataclass(frozen=True, slots=True)
class LocalTarget:
    """A path the kernel resolves itself."""

    path: str
    access: Access = FULL_ACCESS


@dataclass(frozen=True, slots=True)
class RemoteTarget:
    """A path inside one driver endpoint."""

    scheme: str
    host: str
    port: int
    path: str
    access: Access = FULL_ACCESS
    user: str | None = None
    password: str | None = None

    @property
    def endpoint(self) -> str:
        """Names the driver object that serves this target (one per endpoint)."""
        who = f"{self.user}@" if self.user else ""
        return f"{self.scheme}://{who}{self.host}:{self.port}"

    @property
    def url(self) -> str:
        return self.endpoint + self.path


@dataclass(frozen=True, slots=True)
class ServiceDirectory:
    """``/chirp`` itself: a directory of servers that lists nothing and asks no network.

    (Parrot lists it from an internet catalog and hangs offline.)
    """

    service: str


@dataclass(frozen=True, slots=True)
class Refused:
    """A DENY or ENOENT mount: every operation fails with ``errno``."""

    errno: int


Target = LocalTarget | RemoteTarget | ServiceDirectory | Refused


def logical_path(path: str, cwd: str = "/") -> str:
    """Join ``path`` onto ``cwd`` and collapse ``.``, ``..`` and repeated slashes."""
    joined = path if path.startswith("/") else posixpath.join(cwd, path)
    normal = posixpath.normpath(joined)
    return "/" + normal.lstrip("/")


class Namespace:
    """The mount table of one traced program tree; immutable once built.

    Args:
        mounts: mountlist entries (later entries do not override earlier ones:
            the longest logical prefix wins).
        services: service names recognised as path prefixes, with default ports.

    Raises:
        MountlistError: a physical URL or service path names an unknown protocol
            or a malformed server address.
    """

    def __init__(
        self, mounts: list[Mount] | None = None, services: Mapping[str, int] | None = None
    ) -> None:
        self.services = dict(services) if services is not None else registered_services()
        # Longest logical prefix first, so the first mount that covers a path wins.
        self.mounts = sorted(mounts or [], key=lambda m: len(m.logical), reverse=True)
        for mount in self.mounts:
            if mount.physical is not None:
                try:
                    self._physical_target(mount.physical, mount.access, strict=True)
                except ValueError as exc:
                    raise MountlistError(f"{mount.source or mount.logical}: {exc}") from None

    @property
    def service_prefixes(self) -> list[str]:
        """The services that are path prefixes (``/chirp``): all but the system directories."""
        return ["/" + name for name in self.services if name not in SYSTEM_DIRECTORIES]

    def mount_for(self, logical: str) -> Mount | None:
        for mount in self.mounts:
            if mount.covers(logical):
                return mount
        return None

    def resolve(self, path: str, cwd: str = "/") -> Target:
        """The target of ``path`` as seen from logical working directory ``cwd``."""
        logical = logical_path(path, cwd)
        mount = self.mount_for(logical)
        if mount is None:
            return self._physical_target(logical, FULL_ACCESS)
        if mount.special is Special.DENY:
            return Refused(errno.EACCES)
        if mount.special is Special.ENOENT:
            return Refused(errno.ENOENT)
        if mount.special is Special.LOCAL:
            return LocalTarget(logical)
        assert mount.physical is not None
        rest = logical[len(mount.logical) :] if mount.logical != "/" else logical
        physical = mount.physical.rstrip("/") + rest if rest not in ("", "/") else mount.physical
        return self._physical_target(physical or "/", mount.access)

    def _physical_target(self, physical: str, access: Access, *, strict: bool = False) -> Target:
        if "://" in physical:
            location = parse_url(physical)
            if location.scheme not in self.services:
                known = ", ".join(sorted(self.services))
                raise ValueError(f"unknown protocol {location.scheme!r} (known: {known})")
            port = location.port or self.services[location.scheme]
            return RemoteTarget(
                location.scheme,
                location.host,
                port,
                location.path,
                access,
                location.user,
                location.password,
            )
        parts = physical.split("/", 3)  # "", service, authority, rest
        if len(parts) < 2 or parts[1] not in self.services or parts[1] in SYSTEM_DIRECTORIES:
            return LocalTarget(physical, access)
        service = parts[1]
        if len(parts) == 2 or not parts[2]:
            return ServiceDirectory(service)
        login, _, address = parts[2].rpartition("@")
        user, _, password = login.partition(":")
        try:
            host, port = _authority(address, self.services[service])
        except ValueError:
            if strict:
                raise
            return Refused(errno.ENOENT)  # /chirp/.python-version: no server has that name
        rest = "/" + parts[3] if len(parts) == 4 else "/"
        return RemoteTarget(
            service,
            host,
            port,
            logical_path(rest),
            access,
            unquote(user) or None,
            unquote(password) or None,
        )


_HOST = re.compile(
    r"^(?=.{1,253}$)[A-Za-z0-9](?:[A-Za-z0-9-]{0,61}[A-Za-z0-9])?(?:\.[A-Za-z0-9](?:[A-Za-z0-9-]{0,61}[A-Za-z0-9])?)*$"
)


def _authority(text: str, default_port: int) -> tuple[str, int]:
    host, sep, port_text = text.rpartition(":")
    if not sep:
        host, port_text = text, str(default_port)
    if not _HOST.match(host) or not port_text.isdigit() or not 0 < int(port_text) < 65536:
        raise ValueError(f"bad server address {text!r} (expected HOST or HOST:PORT)")
    return host, int(port_text)

"""The sandbox's rules and what they decide about a path: no syscall, no traced program.

Rules (``SandboxRules``) name paths to deny, a set of trees to allow alone
(``allow_only``), trees to keep read-only, and whether refusals say ENOENT
("hidden") rather than EACCES. A ``Policy`` applies them to one run: the
namespace's mounts (and their ``r``/``w``/``x`` access letters) and the
agent's own directories. It answers for a path as the namespace names it
(``decide_logical``) and for a local file's real path (``decide_real``); the
guard (``sandbox.py``) finds those paths in each trapped call.
"""

from __future__ import annotations

import errno
import os
import posixpath
import re
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from typing import Final

from reference_agent.namespace import Namespace, RemoteTarget
from reference_agent.syscall_args import Use

__all__ = [
    "ALLOWED_DEVICES",
    "SYSTEM_PATHS",
    "Policy",
    "SandboxError",
    "SandboxRules",
]


class SandboxError(ValueError):
    """Sandbox options that cannot be used; the message says which and why."""


#: Devices every program may open under ``allow_only``: they hold nothing of anyone's.
ALLOWED_DEVICES: Final = (
    "/dev/null",
    "/dev/zero",
    "/dev/full",
    "/dev/random",
    "/dev/urandom",
    "/dev/tty",
)
#: ``--allow-system``: what dynamically linked programs need to start, and no user data.
SYSTEM_PATHS: Final = (
    "/usr",
    "/bin",
    "/sbin",
    "/lib",
    "/lib32",
    "/lib64",
    "/libx32",
    "/etc/ld.so.cache",
    "/etc/ld.so.preload",
    "/etc/ld.so.conf",
    "/etc/ld.so.conf.d",
    "/etc/localtime",
    "/etc/passwd",
    "/etc/group",
    "/etc/nsswitch.conf",
)
_PROC_MEM: Final = re.compile(r"^/proc/\d+(?:/task/\d+)?/mem$")


def _absolute(path: str) -> str:
    return posixpath.normpath(os.path.abspath(path))


def _forms(paths: Iterable[str]) -> tuple[str, ...]:
    """Each path as given (made absolute) and as its real path, if that differs."""
    forms: list[str] = []
    for path in paths:
        for form in (_absolute(path), os.path.realpath(path)):
            if form not in forms:
                forms.append(form)
    return tuple(forms)


def _under(path: str, roots: Sequence[str]) -> bool:
    return any(root == "/" or path == root or path.startswith(root + "/") for root in roots)


def _ancestor_of(path: str, roots: Sequence[str]) -> bool:
    prefix = path.rstrip("/") + "/"
    return any(root.startswith(prefix) for root in roots)


@dataclass(frozen=True, slots=True)
class SandboxRules:
    """What ``aviary run --deny/--allow-only/--read-only/--hide`` asked for; absolute paths.

    Each path matches itself and everything below it, by the name given and by
    its real path (``/lib/x`` and ``/usr/lib/x`` on a merged-/usr system).
    """

    deny: tuple[str, ...] = ()
    allow_only: tuple[str, ...] | None = None
    read_only: tuple[str, ...] = ()
    hide: bool = False
    #: Also have the kernel enforce what it can (``landlock.py``, ``mount_rules.py``);
    #: False leaves the agent's checks alone (``--no-landlock``, to measure them).
    landlock: bool = True

    @classmethod
    def build(
        cls,
        *,
        deny: Sequence[str] = (),
        allow_only: Sequence[str] | None = None,
        allow_system: bool = False,
        read_only: Sequence[str] = (),
        hide: bool = False,
        landlock: bool = True,
    ) -> SandboxRules:
        """Rules from command-line paths (relative ones are taken from the current directory).

        Raises:
            SandboxError: an empty path, or ``allow_system`` without ``allow_only``.
        """
        for path in (*deny, *(allow_only or ()), *read_only):
            if not path:
                raise SandboxError("an empty path cannot be a sandbox rule")
        if allow_system and allow_only is None:
            raise SandboxError("--allow-system only widens --allow-only")
        allowed: tuple[str, ...] | None = None
        if allow_only is not None:
            allowed = _forms([*allow_only, *(SYSTEM_PATHS if allow_system else ())])
        return cls(_forms(deny), allowed, _forms(read_only), hide, landlock)

    @property
    def active(self) -> bool:
        return bool(self.deny or self.allow_only is not None or self.read_only)


@dataclass
class Policy:
    """The rules applied to one run's paths.

    Args:
        rules: the sandbox rules; may be inactive when only the mountlist restricts access.
        namespace: the run's namespace, for mounts and their access letters.
        agent_dirs: the agent's own directories (local copies), allowed under ``allow_only``.
    """

    rules: SandboxRules
    namespace: Namespace
    agent_dirs: Sequence[str] = ()
    _allowed: tuple[str, ...] | None = field(init=False, default=None)

    def __post_init__(self) -> None:
        if self.rules.allow_only is not None:
            allowed = list(self.rules.allow_only)
            # The physical side of a local mount under an allowed path is allowed with it.
            for mount in self.namespace.mounts:
                physical = mount.physical
                if (
                    physical is not None
                    and "://" not in physical
                    and _under(mount.logical, self.rules.allow_only)
                    and not isinstance(self.namespace.resolve(mount.logical), RemoteTarget)
                ):
                    allowed += _forms([physical])
            allowed += _forms(self.agent_dirs)
            self._allowed = tuple(allowed)

    # -- decisions --------------------------------------------------------------------------

    @property
    def _refusal(self) -> int:
        return errno.ENOENT if self.rules.hide else errno.EACCES

    def _denied(self, path: str, use: Use = Use.LOOK) -> int | None:
        if _under(path, self.rules.deny):
            return self._refusal
        if use & Use.MOVE and _ancestor_of(path, self.rules.deny):
            return errno.EACCES  # renaming /a would carry a denied /a/b out of its rule
        return None

    def _outside(self, path: str, use: Use) -> int | None:
        allowed = self._allowed
        if allowed is None or _under(path, allowed) or path in ALLOWED_DEVICES:
            return None
        if use == Use.LOOK and _ancestor_of(path, allowed):
            return None  # stat("/home") on the way to an allowed /home/me/data
        return self._refusal

    def _read_only(self, path: str, use: Use) -> int | None:
        if not use & Use.WRITE:
            return None
        moving = use & Use.MOVE and _ancestor_of(path, self.rules.read_only)
        return errno.EROFS if moving or _under(path, self.rules.read_only) else None

    def _mount_access(self, logical: str, use: Use) -> int | None:
        mount = self.namespace.mount_for(logical)
        if mount is None or mount.special is not None:
            return None
        return mount.access.errno_for(
            read=bool(use & Use.READ), write=bool(use & Use.WRITE), execute=bool(use & Use.EXEC)
        )

    def decide_logical(self, logical: str, use: Use, *, remote: bool) -> int | None:
        """The refusal for a path as the namespace names it (None: go on)."""
        for verdict in (
            self._denied(logical, use),
            self._outside(logical, use) if remote else None,
            self._read_only(logical, use),
            self._mount_access(logical, use),
        ):
            if verdict is not None:
                return verdict
        return None

    def decide_real(self, real: str, use: Use) -> int | None:
        """The refusal for a local file's real path (None: go on)."""
        if _PROC_MEM.match(real) or real == "/dev/userfaultfd":
            return errno.EACCES  # another process's memory, or one's own agent-written scratch
        for verdict in (
            self._denied(real, use),
            self._outside(real, use),
            self._read_only(real, use),
        ):
            if verdict is not None:
                return verdict
        return None

"""``aviary run`` options for the program's environment: private directories, identity, recording.

    --private PATH [--keep-private DIR]     a fresh directory at PATH for this run
    --uid N --gid N --user NAME --hostname NAME     the identity the program sees
    --name-list FILE --env-list FILE        record what it used, for ``aviary package create``

``prepare_environment`` turns them into mounts and agent options before the
program starts (every bad value is a one-line usage error then); ``finish``
closes the lists and removes or keeps the private directories afterwards.
"""

from __future__ import annotations

import argparse
import contextlib
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path

from reference_agent.identity import Identity, IdentityError, parse_id
from reference_agent.namespace import Mount, MountlistError
from reference_agent.private import PrivateDirectories, PrivateError
from reference_agent.recording import NameList, RecordingError, write_env_list

__all__ = [
    "RunEnvironment",
    "RunOptionError",
    "add_environment_options",
    "merge_mounts",
    "prepare_environment",
]


class RunOptionError(ValueError):
    """A bad environment option; the message names it."""


def add_environment_options(run: argparse.ArgumentParser) -> None:
    """Add the private-namespace, identity and recording options to ``aviary run``."""
    private = run.add_argument_group("private directories")
    private.add_argument(
        "--private",
        action="append",
        default=[],
        metavar="PATH",
        help="give the program a fresh, empty directory at PATH (repeatable), e.g. /tmp",
    )
    private.add_argument(
        "--keep-private",
        type=Path,
        metavar="DIR",
        help="keep the private directories in DIR afterwards (default: removed)",
    )
    identity = run.add_argument_group("identity")
    identity.add_argument("--uid", help="the user id the program sees")
    identity.add_argument("--gid", help="the group id the program sees")
    identity.add_argument("--user", help="the user name the program sees (a passwd entry)")
    identity.add_argument("--hostname", help="the host name the program sees (uname)")
    recording = run.add_argument_group("recording, for aviary package create")
    recording.add_argument(
        "--name-list",
        type=Path,
        metavar="FILE",
        help="write every path the program resolved as PATH|SYSCALL (a new file)",
    )
    recording.add_argument(
        "--env-list", type=Path, metavar="FILE", help="write its environment (a new file)"
    )


@dataclass
class RunEnvironment:
    """What the environment options of one run became."""

    mounts: list[Mount] = field(default_factory=list)
    identity: Identity | None = None
    name_list: NameList | None = None
    private: PrivateDirectories | None = None
    env: dict[str, str] = field(default_factory=dict)

    def finish(self) -> str | None:
        """Close the name list; remove or keep the private directories (a line to print)."""
        if self.name_list is not None:
            self.name_list.close()
        return self.private.finish() if self.private is not None else None


def prepare_environment(
    args: argparse.Namespace, run_dir: Path, cwd: str, env: Mapping[str, str]
) -> RunEnvironment:
    """Check the options and set up what they ask for.

    Args:
        args: parsed ``aviary run`` arguments.
        run_dir: the run's own directory (synthetic passwd and hostname files go there).
        cwd: the starting directory.
        env: the environment the program would get.

    Returns:
        Mounts to add to the namespace, the identity, the name list, and the
        program's environment (USER and LOGNAME follow --user).

    Raises:
        RunOptionError: a bad value, an existing list file, a non-empty --keep-private.
    """
    result = RunEnvironment(env=dict(env))
    created: list[Path] = []
    try:
        if args.keep_private is not None and not args.private:
            raise RunOptionError("--keep-private needs at least one --private PATH")
        uid = parse_id("--uid", args.uid) if args.uid is not None else None
        gid = parse_id("--gid", args.gid) if args.gid is not None else None
        if any(v is not None for v in (uid, gid, args.user, args.hostname)):
            result.identity = Identity(uid, gid, args.user, args.hostname)
            result.mounts += result.identity.mounts(run_dir)
            if args.user is not None:
                result.env["USER"] = result.env["LOGNAME"] = args.user
        if args.name_list is not None:
            result.name_list = NameList(args.name_list)
            created.append(args.name_list)
        if args.env_list is not None:
            write_env_list(args.env_list, result.env, cwd)
            created.append(args.env_list)
        if args.private:
            result.private = PrivateDirectories(args.private, args.keep_private, cwd)
            result.private.prepare_start(cwd)
            result.mounts += result.private.mounts()
    except (IdentityError, PrivateError, RecordingError) as exc:
        result.finish()
        for path in created:  # a half-made recording would look like a whole one
            with contextlib.suppress(OSError):
                path.unlink()
        raise RunOptionError(str(exc)) from None
    return result


def merge_mounts(mounts: list[Mount], extra: list[Mount]) -> list[Mount]:
    """``mounts`` and ``extra``, refusing two entries for one logical path.

    Raises:
        MountlistError: "LOGICAL (source) is already mounted at SOURCE".
    """
    seen = {m.logical: m.source or m.logical for m in mounts}
    for mount in extra:
        if mount.logical in seen:
            raise MountlistError(
                f"{mount.source}: {mount.logical} is already mounted at {seen[mount.logical]}"
            )
        seen[mount.logical] = mount.source
    return [*mounts, *extra]

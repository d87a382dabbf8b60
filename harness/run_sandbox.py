"""``aviary run`` options for the sandbox and the shared whole-file cache.

--deny PATH                 refuse PATH and everything below it (repeatable)
--allow-only PATH...        refuse everything outside these trees (repeatable)
--allow-system              with --allow-only: also what programs need to start (/usr, /lib...)
--read-only PATH            refuse changes below PATH with EROFS (repeatable)
--hide                      refused paths seem not to exist (ENOENT instead of EACCES)
--no-landlock               the agent's checks alone, without the kernel's (to measure them)
--cache-dir DIR             keep --cache whole copies of read-only files in DIR across runs
"""

from __future__ import annotations

import argparse
from pathlib import Path

from reference_agent.sandbox import SYSTEM_PATHS, SandboxError, SandboxRules

__all__ = ["SandboxOptionError", "add_sandbox_options", "sandbox_rules", "shared_cache_dir"]


class SandboxOptionError(ValueError):
    """A bad sandbox or cache option; the message names it."""


def add_sandbox_options(run: argparse.ArgumentParser) -> None:
    """Add the sandbox options and ``--cache-dir`` to ``aviary run``."""
    sandbox = run.add_argument_group(
        "sandbox",
        "Refused paths answer EACCES (ENOENT with --hide) to every path-taking syscall, "
        "through symlinks, '..', directory descriptors, /proc/self/root and /dev/fd. "
        "See docs/sandbox.md for what the kernel enforces and what is not guaranteed.",
    )
    sandbox.add_argument(
        "--deny", action="append", default=[], metavar="PATH", help="refuse PATH (repeatable)"
    )
    sandbox.add_argument(
        "--allow-only",
        action="extend",
        nargs="+",
        metavar="PATH",
        help="refuse everything outside these trees; the program, its interpreter and "
        "libraries must be inside them (or use --allow-system)",
    )
    sandbox.add_argument(
        "--allow-system",
        action="store_true",
        help="with --allow-only, also allow what programs need to start: " + " ".join(SYSTEM_PATHS),
    )
    sandbox.add_argument(
        "--read-only",
        action="append",
        default=[],
        metavar="PATH",
        help="refuse changes below PATH with EROFS (repeatable)",
    )
    sandbox.add_argument(
        "--hide", action="store_true", help="refused paths answer ENOENT instead of EACCES"
    )
    sandbox.add_argument(
        "--no-landlock",
        action="store_true",
        help="the agent's checks alone: no Landlock ruleset and (as root) no private mount "
        "namespace under them; see docs/sandbox.md",
    )
    run.add_argument(
        "--cache-dir",
        type=Path,
        metavar="DIR",
        help="with --cache whole: keep copies of remote files opened read-only in DIR, shared "
        "by runs and checked against the server's size and mtime at each open",
    )


def sandbox_rules(args: argparse.Namespace) -> SandboxRules | None:
    """The rules the options ask for; None when no sandbox option was given.

    Raises:
        SandboxOptionError: --hide or --allow-system without the rules they modify, an empty path.
    """
    if args.hide and not (args.deny or args.allow_only is not None):
        raise SandboxOptionError("--hide needs --deny or --allow-only")
    try:
        rules = SandboxRules.build(
            deny=args.deny,
            allow_only=args.allow_only,
            allow_system=args.allow_system,
            read_only=args.read_only,
            hide=args.hide,
            landlock=not args.no_landlock,
        )
    except SandboxError as exc:
        raise SandboxOptionError(str(exc)) from None
    return rules if rules.active else None


def shared_cache_dir(args: argparse.Namespace) -> Path | None:
    """``--cache-dir``, created if missing.

    Raises:
        SandboxOptionError: without ``--cache whole``, or it cannot be made a directory.
    """
    if args.cache_dir is None:
        return None
    if args.cache != "whole":
        raise SandboxOptionError("--cache-dir needs --cache whole")
    try:
        args.cache_dir.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise SandboxOptionError(f"--cache-dir {args.cache_dir}: {exc.strerror or exc}") from None
    return Path(args.cache_dir).resolve()

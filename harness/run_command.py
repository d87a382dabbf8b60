"""``aviary run``: a program under the agent, with remote storage in its namespace."""

from __future__ import annotations

import argparse
import os
import sys
import typing
from pathlib import Path

from harness.fs_command import add_wait_options, apply_recovery_budget

if typing.TYPE_CHECKING:
    from reference_agent.namespace import Mount

#: A mountlist larger than this is refused: a real one is a few lines (``-m /dev/zero``).
MAX_MOUNTLIST_BYTES = 1024 * 1024
#: The --block-size range the help promises.
BLOCK_SIZE_RANGE = (4 * 1024, 1024 * 1024)


def add_run_parser(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    run = sub.add_parser(
        "run",
        help="run a program with remote storage in its namespace (like parrot_run)",
        description="Run PROGRAM under aviary's ptrace agent. /chirp/HOST:PORT/path reaches a Chirp "
        "server; a mountlist maps any logical path onto a local or remote one.",
    )
    run.add_argument(
        "-m", "--mountlist", type=Path, help="mountlist file: LOGICAL PHYSICAL [ACCESS] per line"
    )
    run.add_argument(
        "-M",
        "--mount",
        action="append",
        default=[],
        metavar="LOGICAL=PHYSICAL",
        help="one more mount entry",
    )
    run.add_argument(
        "--cache",
        choices=("off", "cto", "whole"),
        default="off",
        help="off (default): every read and write goes to the server; cto: close-to-open, reads "
        "come from a read-ahead buffer per open (dropped at close), writes go through; whole: "
        "copy a file on open, write it back on close",
    )
    run.add_argument(
        "--chown",
        choices=("fail", "ignore"),
        default="fail",
        help="changing the owner of a remote file (servers keep their own owners): fail with "
        "EPERM (default), or ignore: report success and drop the change (tar, cp -a as root)",
    )
    run.add_argument(
        "--block-size",
        metavar="SIZE",
        help="st_blksize reported for remote files (4K .. 1M), the hint cp and others size their "
        "buffers by (default: what the server says)",
    )
    run.add_argument(
        "--trace", type=Path, help="write one JSON line per trapped syscall to this file"
    )
    run.add_argument(
        "--summary", action="store_true", help="print a table per syscall and mount at exit"
    )
    run.add_argument(
        "--no-fast-path",
        action="store_true",
        help="handle every trapped call in Python (default: calls on plainly local paths are "
        "resumed by a compiled loop, built with gcc on first use)",
    )
    run.add_argument(
        "--no-pin",
        action="store_true",
        help="let the agent and the program run on any CPU (default: one CPU, which makes each stop 4x cheaper)",
    )
    add_wait_options(run, "a server")
    from harness.run_environment import add_environment_options

    add_environment_options(run)
    from harness.run_sandbox import add_sandbox_options

    add_sandbox_options(run)
    run.add_argument("program", nargs=argparse.REMAINDER, help="-- PROGRAM ARGS...")


def run_run(args: argparse.Namespace) -> int:
    import shutil
    import tempfile

    from harness.run_environment import RunOptionError, merge_mounts, prepare_environment
    from reference_agent.agent import AgentOptions
    from reference_agent.namespace import MountlistError, Namespace, parse_mountlist
    from reference_agent.program import run_program

    program = args.program[1:] if args.program[:1] == ["--"] else args.program
    if not program:
        print(
            "aviary: run: no program given (aviary run [-m MOUNTLIST] -- PROGRAM ARGS...)",
            file=sys.stderr,
        )
        return 2
    start_cwd = os.getcwd()  # relative mountlist names and --private paths start here
    from harness.run_sandbox import SandboxOptionError, sandbox_rules, shared_cache_dir

    try:
        rules = sandbox_rules(args)
        shared_cache = shared_cache_dir(args)
    except SandboxOptionError as exc:
        print(f"aviary: run: {exc}", file=sys.stderr)
        return 2
    try:
        mounts = (
            parse_mountlist(_read_mountlist_text(args.mountlist), str(args.mountlist), start_cwd)
            if args.mountlist
            else []
        )
        mounts += parse_mountlist(_mount_options(args.mount), "-M", start_cwd)
        _check_hosts(mounts)
        Namespace(mounts)  # unknown protocols and bad addresses fail before anything is made
    except MountlistError as exc:
        print(f"aviary: run: {exc}", file=sys.stderr)
        return 2
    block_size = None
    if args.block_size is not None:
        from benchmarks.common import UsageError, parse_size

        try:
            block_size = parse_size(args.block_size)
            low, high = BLOCK_SIZE_RANGE
            if not low <= block_size <= high:
                raise UsageError(f"{args.block_size!r} is outside 4K .. 1M")
        except UsageError as exc:
            print(f"aviary: run: --block-size: {exc}", file=sys.stderr)
            return 2
    try:
        trace = open(args.trace, "w") if args.trace else None  # noqa: SIM115 - closed below
    except OSError as exc:
        print(f"aviary: run: --trace {args.trace}: {exc.strerror}", file=sys.stderr)
        return 2
    cache_dir = Path(tempfile.mkdtemp(prefix="aviary-run-"))
    try:
        environment = prepare_environment(args, cache_dir, start_cwd, os.environ)
    except RunOptionError as exc:
        print(f"aviary: run: {exc}", file=sys.stderr)
        shutil.rmtree(cache_dir, ignore_errors=True)
        if trace is not None:
            trace.close()
        return 2
    try:
        namespace = Namespace(merge_mounts(mounts, environment.mounts))
    except MountlistError as exc:
        print(f"aviary: run: {exc}", file=sys.stderr)
        environment.finish()
        shutil.rmtree(cache_dir, ignore_errors=True)
        if trace is not None:
            trace.close()
        return 2
    apply_recovery_budget(args.recovery_budget)
    try:
        cpu = None if args.no_pin else min(os.sched_getaffinity(0))
        options = AgentOptions(
            cache=args.cache,
            trace=trace,
            summary=args.summary,
            cpu=cpu,
            timeout=args.timeout,
            cache_dir=cache_dir,
            block_size=block_size,
            identity=environment.identity,
            name_list=environment.name_list,
            sandbox=rules,
            shared_cache=shared_cache,
            chown=args.chown,
            fast_path=not args.no_fast_path,
        )
        try:
            return run_program(namespace, options, program, env=environment.env, cwd=start_cwd)
        except OSError as exc:
            print(f"aviary: run: {program[0]}: {exc.strerror or exc}", file=sys.stderr)
            return 127 if exc.errno == 2 else 126
    finally:
        if trace is not None:
            trace.close()
        where = environment.finish()
        if where:
            print(where, file=sys.stderr)
        shutil.rmtree(cache_dir, ignore_errors=True)


def _read_mountlist_text(path: Path) -> str:
    """A mountlist file's text, read no further than :data:`MAX_MOUNTLIST_BYTES`.

    Raises:
        MountlistError: unreadable, too large, not text, or holding a NUL byte.
    """
    from reference_agent.namespace import MountlistError

    try:
        with open(path, "rb") as f:
            data = f.read(MAX_MOUNTLIST_BYTES + 1)
    except OSError as exc:
        raise MountlistError(f"{path}: cannot read mountlist: {exc.strerror}") from None
    if len(data) > MAX_MOUNTLIST_BYTES:
        raise MountlistError(f"{path}: mountlist larger than {MAX_MOUNTLIST_BYTES} bytes")
    if b"\0" in data:
        raise MountlistError(f"{path}: mountlist holds a NUL byte (not text)")
    try:
        return data.decode()
    except UnicodeDecodeError:
        raise MountlistError(f"{path}: mountlist is not text") from None


def _check_hosts(mounts: list[Mount]) -> None:
    """Refuse a mount whose URL names no server (``chirp:///x``, ``ftp://:21/x``).

    Raises:
        MountlistError: naming the entry.
    """
    from drivers import parse_url
    from reference_agent.namespace import MountlistError

    for mount in mounts:
        if mount.physical is None or "://" not in mount.physical:
            continue
        try:
            location = parse_url(mount.physical)
        except ValueError as exc:
            raise MountlistError(f"{mount.source or mount.logical}: {exc}") from None
        if location.scheme != "file" and not location.host:
            raise MountlistError(
                f"{mount.source or mount.logical}: {mount.physical!r} names no server"
            )


def _mount_options(entries: list[str]) -> str:
    """The ``-M LOGICAL=PHYSICAL`` options as mountlist text.

    Raises:
        MountlistError: an entry without ``=``, with an empty side, or spanning lines.
    """
    from reference_agent.namespace import MountlistError

    lines = []
    for entry in entries:
        logical, equals, physical = entry.partition("=")
        if not equals or not logical.strip() or not physical.strip():
            raise MountlistError(f"-M {entry!r}: expected LOGICAL=PHYSICAL, both non-empty")
        if any(c in entry for c in "\n\r\0"):
            raise MountlistError(f"-M {entry!r}: a line break or NUL has no place in a path")
        lines.append(f"{logical} {physical}")
    return "\n".join(lines)

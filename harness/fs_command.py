"""``aviary fs``: poke any server through its driver, without the agent.

Every subcommand takes driver URLs (``chirp://127.0.0.1:9094/dir/file``,
``file:///tmp/x``). A failure prints one line, ``aviary: VERB URL: ENAME
(message)``, and exits 1; a malformed URL or an unknown scheme exits 2.
"""

from __future__ import annotations

import argparse
import errno
import os
import stat as stat_module
import sys
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager

from drivers import COMMON_RECOVERY_ENV, STAT_FIELDS, Driver, FileType, StatResult, open_url

__all__ = [
    "DEFAULT_RECOVERY_BUDGET",
    "add_fs_parser",
    "add_wait_options",
    "apply_recovery_budget",
    "budget_seconds",
    "format_stat",
    "run_fs",
    "timeout_seconds",
]

#: Seconds every driver keeps reconnecting after a connection that worked broke.
DEFAULT_RECOVERY_BUDGET = 60.0
#: The longest --timeout or --recovery-budget taken: a day (longer is a typo, not a plan).
_MAX_SECONDS = 86400.0


def timeout_seconds(text: str) -> float:
    """An argparse type: seconds > 0, finite (``inf`` and ``nan`` are refused)."""
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a number of seconds: {text!r}") from None
    if not 0 < value <= _MAX_SECONDS:
        raise argparse.ArgumentTypeError(
            f"seconds must be > 0 and at most {_MAX_SECONDS:g}, not {text!r}"
        )
    return value


def budget_seconds(text: str) -> float:
    """An argparse type: seconds >= 0, finite (0 turns recovery off)."""
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a number of seconds: {text!r}") from None
    if not 0 <= value <= _MAX_SECONDS:
        raise argparse.ArgumentTypeError(
            f"seconds must be >= 0 and at most {_MAX_SECONDS:g}, not {text!r}"
        )
    return value


def add_wait_options(parser: argparse.ArgumentParser, what: str) -> None:
    """``--timeout`` and ``--recovery-budget``: together they bound every network wait."""
    parser.add_argument(
        "--timeout",
        type=timeout_seconds,
        default=30.0,
        help=f"seconds to wait for {what} in any one wait (default 30)",
    )
    parser.add_argument(
        "--recovery-budget",
        type=budget_seconds,
        default=None,
        metavar="SECONDS",
        help="seconds to keep reconnecting after a connection that worked broke; a call "
        f"ends within --timeout plus this (default {DEFAULT_RECOVERY_BUDGET:g}, or "
        f"${COMMON_RECOVERY_ENV}; 0: fail at once)",
    )


def apply_recovery_budget(budget: float | None) -> None:
    """Give every driver made from now on ``budget`` (None: leave the environment's)."""
    # The drivers read their budget when made, from the agent as from ``fs``;
    # the environment is the one channel that reaches all of them, third-party
    # drivers included, without a new constructor argument.
    if budget is not None:
        os.environ[COMMON_RECOVERY_ENV] = f"{budget:g}"


_TYPE_CHAR = {
    FileType.DIRECTORY: "d",
    FileType.SYMLINK: "l",
    FileType.FIFO: "p",
    FileType.SOCKET: "s",
    FileType.CHARDEV: "c",
    FileType.BLOCKDEV: "b",
}


class FsCommandError(Exception):
    """One line for the user; the exit status is 1 (2 for bad usage)."""

    def __init__(self, message: str, status: int = 1) -> None:
        super().__init__(message)
        self.status = status


def errno_name(code: int | None) -> str:
    return errno.errorcode.get(code or 0, f"errno {code}")


def describe_oserror(verb: str, target: str, exc: OSError) -> str:
    reason = exc.strerror or str(exc)
    return f"{verb} {target}: {errno_name(exc.errno)} ({reason})"


def add_fs_parser(subparsers: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    fs = subparsers.add_parser("fs", help="run one file operation through a driver URL")
    add_wait_options(fs, "the server")
    fs.add_argument(
        "--counters", action="store_true", help="print the driver's traffic counters to stderr"
    )
    ops = fs.add_subparsers(dest="fs_command", required=True, metavar="COMMAND")
    ls = ops.add_parser("ls", help="list a directory")
    ls.add_argument("-l", action="store_true", help="long format: mode, links, owner, size, mtime")
    ls.add_argument("-a", action="store_true", help="also names starting with '.'")
    ls.add_argument("url")
    st = ops.add_parser("stat", help="every stat field of a path")
    st.add_argument("-L", action="store_true", help="follow a final symlink (stat, not lstat)")
    st.add_argument("urls", nargs="+", metavar="url")
    cat = ops.add_parser("cat", help="print files")
    cat.add_argument("urls", nargs="+", metavar="url")
    put = ops.add_parser("put", help="copy a local file to a URL")
    put.add_argument("local")
    put.add_argument("url")
    get = ops.add_parser("get", help="copy a URL to a local file ('-' for stdout)")
    get.add_argument("url")
    get.add_argument("local")
    mkdir = ops.add_parser("mkdir", help="make directories")
    mkdir.add_argument("-p", action="store_true", help="make parents; no error if it exists")
    mkdir.add_argument("urls", nargs="+", metavar="url")
    rm = ops.add_parser("rm", help="remove files (-r: whole trees)")
    rm.add_argument("-r", action="store_true", help="remove directories and their contents")
    rm.add_argument("urls", nargs="+", metavar="url")
    rmdir = ops.add_parser("rmdir", help="remove empty directories")
    rmdir.add_argument("urls", nargs="+", metavar="url")
    mv = ops.add_parser("mv", help="rename within one server")
    mv.add_argument("source")
    mv.add_argument("dest")


@contextmanager
def _driver(url: str, timeout: float, counters: bool) -> Iterator[tuple[Driver, str]]:
    try:
        driver, path = open_url(url, timeout=timeout)
    except (ValueError, LookupError) as exc:
        raise FsCommandError(str(exc), status=2) from None
    try:
        yield driver, path
    finally:
        if counters:
            for op, c in sorted(driver.counters.snapshot().items()):
                print(
                    f"counters {driver.describe()} {op}: calls={c.calls} round_trips={c.round_trips} "
                    f"connections={c.connections} sent={c.bytes_sent} received={c.bytes_received}",
                    file=sys.stderr,
                )
        driver.close_driver()


def format_mode(mode: int) -> str:
    return stat_module.filemode(mode)


def format_stat(path: str, st: StatResult) -> str:
    lines = [f"path: {path}", f"type: {st.file_type.value}"]
    for name in STAT_FIELDS:
        value = getattr(st, name)
        shown = f"{value:o} ({format_mode(value)})" if name == "st_mode" else str(value)
        mark = "  (synthesized)" if name in st.synthesized else ""
        lines.append(f"{name}: {shown}{mark}")
    return "\n".join(lines)


def _ls(args: argparse.Namespace) -> None:
    with _driver(args.url, args.timeout, args.counters) as (driver, path):
        entries = sorted(driver.readdir(path), key=lambda e: e.name)
        for entry in entries:
            if entry.name.startswith(".") and not args.a:
                continue
            if not args.l:
                print(entry.name)
                continue
            child = path.rstrip("/") + "/" + entry.name
            st = driver.lstat(child)
            when = time.strftime("%Y-%m-%d %H:%M", time.localtime(st.st_mtime_ns / 1e9))
            name = entry.name
            if st.is_lnk():
                name += " -> " + driver.readlink(child)
            print(
                f"{format_mode(st.st_mode)} {st.st_nlink:>3} {st.st_uid:>5} {st.st_gid:>5} "
                f"{st.st_size:>10} {when} {name}"
            )


def _for_each(
    urls: list[str], args: argparse.Namespace, verb: str, action: Callable[[Driver, str], None]
) -> None:
    for url in urls:
        with _driver(url, args.timeout, args.counters) as (driver, path):
            try:
                action(driver, path)
            except OSError as exc:
                raise FsCommandError(describe_oserror(verb, url, exc)) from None


def _stat(args: argparse.Namespace) -> None:
    def show(driver: Driver, path: str) -> None:
        st = driver.stat(path) if args.L else driver.lstat(path)
        print(format_stat(path, st))

    _for_each(args.urls, args, "stat", show)


def _cat(args: argparse.Namespace) -> None:
    def show(driver: Driver, path: str) -> None:
        sys.stdout.buffer.write(driver.read_file(path))
        sys.stdout.buffer.flush()

    _for_each(args.urls, args, "cat", show)


def _put(args: argparse.Namespace) -> None:
    try:
        with open(args.local, "rb") as f:
            data = f.read()
            mode = stat_module.S_IMODE(os.fstat(f.fileno()).st_mode)
    except OSError as exc:
        raise FsCommandError(describe_oserror("put", args.local, exc)) from None
    _for_each([args.url], args, "put", lambda d, p: d.write_file(p, data, mode))


def _get(args: argparse.Namespace) -> None:
    def fetch(driver: Driver, path: str) -> None:
        data = driver.read_file(path)
        if args.local == "-":
            sys.stdout.buffer.write(data)
            sys.stdout.buffer.flush()
            return
        try:
            with open(args.local, "wb") as f:
                f.write(data)
        except OSError as exc:
            raise FsCommandError(describe_oserror("get", args.local, exc)) from None

    _for_each([args.url], args, "get", fetch)


def _mkdir(args: argparse.Namespace) -> None:
    def make(driver: Driver, path: str) -> None:
        if not args.p:
            driver.mkdir(path)
            return
        current = ""
        for part in [p for p in path.split("/") if p]:
            current += "/" + part
            try:
                driver.mkdir(current)
            except OSError as exc:
                if exc.errno != errno.EEXIST or not driver.stat(current).is_dir():
                    raise

    _for_each(args.urls, args, "mkdir", make)


def remove_tree(driver: Driver, path: str) -> None:
    """rm -r through the driver interface: children first, then the directory."""
    if not driver.lstat(path).is_dir():
        driver.unlink(path)
        return
    for entry in driver.readdir(path):
        remove_tree(driver, path.rstrip("/") + "/" + entry.name)
    driver.rmdir(path)


def _rm(args: argparse.Namespace) -> None:
    def remove(driver: Driver, path: str) -> None:
        if args.r:
            remove_tree(driver, path)
        else:
            driver.unlink(path)

    _for_each(args.urls, args, "rm", remove)


def _rmdir(args: argparse.Namespace) -> None:
    _for_each(args.urls, args, "rmdir", lambda d, p: d.rmdir(p))


def _mv(args: argparse.Namespace) -> None:
    with _driver(args.source, args.timeout, args.counters) as (driver, old):
        with _driver(args.dest, args.timeout, False) as (other, new):
            if other.describe() != driver.describe():
                raise FsCommandError(
                    f"mv {args.source} {args.dest}: EXDEV (source and destination are on different servers)"
                )
        try:
            driver.rename(old, new)
        except OSError as exc:
            raise FsCommandError(describe_oserror("mv", args.source, exc)) from None


_COMMANDS: dict[str, Callable[[argparse.Namespace], None]] = {
    "ls": _ls,
    "stat": _stat,
    "cat": _cat,
    "put": _put,
    "get": _get,
    "mkdir": _mkdir,
    "rm": _rm,
    "rmdir": _rmdir,
    "mv": _mv,
}


def run_fs(args: argparse.Namespace) -> int:
    """Run one ``aviary fs`` subcommand; returns the exit status."""
    apply_recovery_budget(args.recovery_budget)
    try:
        _COMMANDS[args.fs_command](args)
    except FsCommandError as exc:
        print(f"aviary: {exc}", file=sys.stderr)
        return exc.status
    except OSError as exc:  # from ls, whose URL is a single argument
        target = getattr(args, "url", "") or ""
        print(f"aviary: {describe_oserror(args.fs_command, target, exc)}", file=sys.stderr)
        return 1
    return 0

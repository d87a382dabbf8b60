"""Portable packages: the files a program used, copied out so it runs where they are missing.

    aviary run --name-list names --env-list env -- PROGRAM ARGS...     record what it uses
    aviary package create --name-list names --env-list env --out DIR    copy it into DIR
    aviary package run DIR -- PROGRAM ARGS...                           run it from DIR

Parrot's ``parrot_package_create`` and ``parrot_package_run``, the slides'
"portable Python". A package is a directory:

    DIR/manifest.json   what was copied, skipped or missing, and from which names
    DIR/env.list        the recorded environment (NUL-separated, with PWD=)
    DIR/root/...        the files at their original paths

Creating it copies every recorded name that exists here: regular files with
their times (so Python's cached bytecode stays valid), directories as empty
directories (the files in them that were used are recorded by name), and
symlinks as symlinks, following each chain so its target comes too. An
absolute link target is rewritten relative to the link, so the kernel, which
follows links inside the package itself, stays inside it. The ELF interpreter
and the ``#!`` interpreter of every program executed are added as well: the
kernel opens those without a syscall the agent sees. ``/proc``, ``/dev`` and
``/sys`` are never copied; they stay the host's at run time.

Running it mounts ``/`` on ``DIR/root`` with ``/proc``, ``/dev`` and ``/sys``
left local, starts the program in the recorded directory with the recorded
environment, and finds the program itself inside the package. Writes land in
the package (its ``/tmp`` is ``DIR/root/tmp``).
"""

from __future__ import annotations

import argparse
import json
import os
import posixpath
import shutil
import stat
import sys
import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from reference_agent.interpreters import MAX_INTERPRETERS, interpreter_of
from reference_agent.namespace import Mount, MountlistError, Special, parse_mountlist
from reference_agent.recording import RecordingError, read_env_list, read_name_list

__all__ = [
    "PackageError",
    "PackageReport",
    "add_package_parser",
    "create_package",
    "package_mounts",
    "run_package",
]

MANIFEST = "manifest.json"
ENV_LIST = "env.list"
ROOT = "root"
FORMAT = "aviary-package/1"
#: Host trees a package never copies: the kernel's views, the same on every machine.
HOST_TREES = ("/proc", "/dev", "/sys")
#: Symlinks followed in one chain before giving up (the kernel's ELOOP limit).
MAX_LINKS = 40
_EXEC_CALLS = ("execve", "execveat")


class PackageError(ValueError):
    """A package that cannot be made or run; the message says why in one line."""


@dataclass
class PackageReport:
    """What ``create_package`` did, as the manifest records it."""

    files: dict[str, dict[str, Any]] = field(default_factory=dict)
    missing: set[str] = field(default_factory=set)
    skipped: set[str] = field(default_factory=set)
    copied_bytes: int = 0


class _Builder:
    """Copies host paths into a package root, components and symlink chains included."""

    def __init__(self, root: Path) -> None:
        self.root = root
        self.report = PackageReport()
        self._dir_modes: dict[Path, int] = {}

    def inside(self, path: str) -> Path:
        return self.root / path.lstrip("/")

    def add(self, path: str, links: int = 0) -> str | None:
        """Copy ``path`` (absolute, normalised) in; return the host file it ends at, if any."""
        if any(path == t or path.startswith(t + "/") for t in HOST_TREES):
            self.report.skipped.add(path)
            return None
        if links > MAX_LINKS:
            self.report.missing.add(path)
            return None
        parts = [p for p in path.split("/") if p]
        current = "/"
        for index, name in enumerate(parts):
            host = posixpath.join(current, name)
            try:
                st = os.lstat(host)
            except OSError:
                self.report.missing.add(path)
                return None
            last = index == len(parts) - 1
            if stat.S_ISLNK(st.st_mode):
                target = self._link(host)
                rest = parts[index + 1 :]
                return self.add(posixpath.normpath(posixpath.join(target, *rest)), links + 1)
            if not last:
                if not stat.S_ISDIR(st.st_mode):
                    self.report.missing.add(path)  # ENOTDIR: nothing to copy
                    return None
                self._directory(host, st)
                current = host
                continue
            return self._leaf(host, st)
        self._directory("/", os.lstat("/"))
        return "/"

    def _link(self, host: str) -> str:
        """Recreate the link at ``host``; return its target as an absolute host path."""
        text = os.readlink(host)
        parent = posixpath.dirname(host)
        absolute = posixpath.normpath(posixpath.join(parent, text))
        copy = self.inside(host)
        if host not in self.report.files:
            self._directory(parent, os.lstat(parent))
            stored = posixpath.relpath(absolute, parent) if text.startswith("/") else text
            if not copy.is_symlink():
                copy.symlink_to(stored)
            self.report.files[host] = {"kind": "symlink", "target": text, "stored": stored}
        return absolute

    def _directory(self, host: str, st: os.stat_result) -> None:
        copy = self.inside(host)
        if host not in self.report.files:
            copy.mkdir(parents=True, exist_ok=True)
            self._dir_modes[copy] = stat.S_IMODE(st.st_mode)
            self.report.files[host] = {"kind": "directory", "mode": oct(stat.S_IMODE(st.st_mode))}

    def _leaf(self, host: str, st: os.stat_result) -> str | None:
        if stat.S_ISDIR(st.st_mode):
            self._directory(host, st)
            return host
        if not stat.S_ISREG(st.st_mode):
            self.report.skipped.add(host)  # a socket, FIFO or device is the host's own
            return None
        if host not in self.report.files:
            self._directory(posixpath.dirname(host), os.lstat(posixpath.dirname(host)))
            try:
                shutil.copy2(host, self.inside(host), follow_symlinks=False)
            except OSError:
                self.report.missing.add(host)  # unreadable here: it cannot travel
                return None
            self.report.copied_bytes += st.st_size
            self.report.files[host] = {
                "kind": "file",
                "size": st.st_size,
                "mode": oct(stat.S_IMODE(st.st_mode)),
            }
        return host

    def add_interpreters(self, program: str) -> None:
        """Add the ELF interpreter or ``#!`` interpreter of ``program``, and theirs."""
        for _ in range(MAX_INTERPRETERS):
            host = self.add(program)
            if host is None:
                return
            interpreter = interpreter_of(host)
            if interpreter is None:
                return
            program = interpreter.path

    def finish(self) -> None:
        """Give directories their modes last, deepest first (a 0555 one would refuse copies)."""
        for path in sorted(self._dir_modes, key=lambda p: len(p.parts), reverse=True):
            path.chmod(self._dir_modes[path] | stat.S_IWUSR | stat.S_IXUSR)


def create_package(name_list: Path, env_list: Path, out: Path) -> PackageReport:
    """Copy the files of a name list, and the environment list, into package ``out``.

    Args:
        name_list: written by ``aviary run --name-list``.
        env_list: written by ``aviary run --env-list``.
        out: the package directory; created, and must not hold anything yet.

    Returns:
        What was copied, skipped (host trees, devices) and missing (gone since).

    Raises:
        PackageError: a list is missing or malformed, or ``out`` is not empty.
    """
    try:
        names = read_name_list(name_list)
        _env, cwd = read_env_list(env_list)  # read now: a bad list fails before copying
    except RecordingError as exc:
        raise PackageError(str(exc)) from None
    if out.exists() and (not out.is_dir() or any(out.iterdir())):
        raise PackageError(f"--out {out}: exists and is not an empty directory")
    root = out / ROOT
    root.mkdir(parents=True)
    builder = _Builder(root)
    for name, syscall in names:
        if syscall in _EXEC_CALLS:
            builder.add_interpreters(name)
        else:
            builder.add(name)
    for path in (cwd, "/tmp", *HOST_TREES):  # where it starts, and mount points to show in /
        builder.inside(path).mkdir(parents=True, exist_ok=True)
    builder.inside("/tmp").chmod(0o1777)
    builder.finish()
    shutil.copyfile(env_list, out / ENV_LIST)
    report = builder.report
    manifest = {
        "format": FORMAT,
        "root": ROOT,
        "env_list": ENV_LIST,
        "cwd": cwd,
        "names": len(names),
        "copied_bytes": report.copied_bytes,
        "files": dict(sorted(report.files.items())),
        "missing": sorted(report.missing),
        "skipped": sorted(report.skipped),
    }
    (out / MANIFEST).write_text(json.dumps(manifest, indent=1) + "\n")
    return report


def package_mounts(package: Path) -> list[Mount]:
    """The namespace of a package: ``/`` is its root; the host's /proc, /dev and /sys.

    Raises:
        PackageError: ``package`` is not a directory made by ``create_package``.
    """
    manifest = package / MANIFEST
    try:
        fmt = json.loads(manifest.read_text()).get("format")
    except (OSError, ValueError, AttributeError):
        raise PackageError(f"{package}: not a package (no readable {MANIFEST})") from None
    if fmt != FORMAT:
        raise PackageError(f"{package}: package format {fmt!r}, this aviary reads {FORMAT!r}")
    root = (package / ROOT).resolve()
    if not root.is_dir():
        raise PackageError(f"{package}: not a package (no {ROOT}/ directory)")
    mounts = [Mount("/", str(root), source=f"package {package}")]
    mounts += [Mount(tree, None, special=Special.LOCAL, source="package") for tree in HOST_TREES]
    return mounts


# -- the command line ---------------------------------------------------------------------


def add_package_parser(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    """``aviary package create|run``."""
    package = sub.add_parser(
        "package", help="portable packages: copy what a program used, run it from the copy"
    )
    actions = package.add_subparsers(dest="package_action", required=True, metavar="ACTION")
    create = actions.add_parser(
        "create", help="copy the files of a --name-list and the --env-list into a package"
    )
    create.add_argument("--name-list", type=Path, required=True, metavar="FILE")
    create.add_argument("--env-list", type=Path, required=True, metavar="FILE")
    create.add_argument("--out", type=Path, required=True, metavar="DIR", help="a new directory")
    run = actions.add_parser(
        "run", help="run a program with a package as its whole namespace and environment"
    )
    run.add_argument("package", type=Path, metavar="DIR")
    run.add_argument(
        "-M",
        "--mount",
        action="append",
        default=[],
        metavar="LOGICAL=PHYSICAL",
        help="one more mount entry (e.g. a data directory from the host)",
    )
    run.add_argument(
        "--trace", type=Path, help="write one JSON line per trapped syscall to this file"
    )
    run.add_argument("--no-pin", action="store_true", help="let the agent run on any CPU")
    run.add_argument("program", nargs=argparse.REMAINDER, help="-- PROGRAM ARGS...")


def run_package(args: argparse.Namespace) -> int:
    """Run ``aviary package create|run``; one-line errors, 2 for bad usage."""
    if args.package_action == "create":
        try:
            report = create_package(args.name_list, args.env_list, args.out)
        except PackageError as exc:
            print(f"aviary: package create: {exc}", file=sys.stderr)
            return 2
        kinds = [entry["kind"] for entry in report.files.values()]
        print(
            f"package {args.out}: {kinds.count('file')} files ({report.copied_bytes} bytes), "
            f"{kinds.count('directory')} directories, {kinds.count('symlink')} symlinks; "
            f"{len(report.missing)} names missing, {len(report.skipped)} skipped"
        )
        return 0
    return _run(args)


def _run(args: argparse.Namespace) -> int:
    from reference_agent.agent import AgentOptions
    from reference_agent.namespace import Namespace
    from reference_agent.program import run_program

    program = args.program[1:] if args.program[:1] == ["--"] else args.program
    if not program:
        print(
            "aviary: package run: no program given (aviary package run DIR -- PROGRAM)",
            file=sys.stderr,
        )
        return 2
    try:
        mounts = package_mounts(args.package)
        env, cwd = read_env_list(args.package / ENV_LIST)
        extra = "\n".join(m.replace("=", " ", 1) for m in args.mount)
        namespace = Namespace([*parse_mountlist(extra, "-M", os.getcwd()), *mounts])
    except (PackageError, RecordingError, MountlistError) as exc:
        print(f"aviary: package run: {exc}", file=sys.stderr)
        return 2
    cache_dir = Path(tempfile.mkdtemp(prefix="aviary-package-"))
    trace = open(args.trace, "w") if args.trace else None  # noqa: SIM115 - closed below
    try:
        options = AgentOptions(
            trace=trace,
            cpu=None if args.no_pin else min(os.sched_getaffinity(0)),
            cache_dir=cache_dir,
        )
        try:
            return run_program(namespace, options, program, env=env, cwd=cwd)
        except OSError as exc:
            print(
                f"aviary: package run: {program[0]}: {exc.strerror or exc} in {args.package}",
                file=sys.stderr,
            )
            return 127 if exc.errno == 2 else 126
    finally:
        if trace is not None:
            trace.close()
        shutil.rmtree(cache_dir, ignore_errors=True)

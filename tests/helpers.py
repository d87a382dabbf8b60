"""Small helpers shared by the test modules."""

from __future__ import annotations

import errno
import json
import os
import subprocess
import sys
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import pytest

from harness.cli import main
from servers import RunningServer, ServerUnavailable, start_server

ROOT = Path(__file__).resolve().parent.parent
#: What a scenario program prints: one JSON list of steps, each a list of what it saw.
Seen = list[list[Any]]


def compile_c(source: Path, binary: Path) -> Path:
    """``source``, a C program of the tests, built with gcc as ``binary`` (bounded in time)."""
    subprocess.run(
        ["gcc", "-O1", "-Wall", "-pthread", "-o", str(binary), str(source)],
        check=True,
        capture_output=True,
        timeout=120,
    )
    return binary


def errno_name(call: object, *args: object) -> str | None:
    """The errno name ``call(*args)`` fails with ("ENOENT"), or None if it succeeds."""
    assert callable(call)
    try:
        call(*args)
    except OSError as exc:
        return errno.errorcode.get(exc.errno or 0, str(exc.errno))
    return None


def start_or_skip(key: str) -> RunningServer:
    """Start a real server; not installed is a failure under CI and a skip (with the fix) elsewhere."""
    try:
        return start_server(key)
    except ServerUnavailable as exc:
        if os.environ.get("CI"):
            pytest.fail(f"{key} is required in CI: {exc}")
        pytest.skip(f"{key} not installed: {exc.hint}")


@contextmanager
def served(key: str) -> Iterator[RunningServer]:
    """A started server for the block, stopped by PID afterwards whatever happens."""
    server = start_or_skip(key)
    try:
        yield server
    finally:
        server.stop()


def run_under_agent(
    *argv: str, env: Mapping[str, str] | None = None, timeout: float = 120, text: bool = True
) -> subprocess.CompletedProcess[str] | subprocess.CompletedProcess[bytes]:
    """``aviary run -- ARGV`` as a real subprocess, with extra environment (a server's client_env)."""
    return subprocess.run(
        [sys.executable, "-m", "harness.cli", "run", "--", *argv],
        cwd=ROOT,
        capture_output=True,
        text=text,
        timeout=timeout,
        env={**os.environ, **(env or {})},
    )


def fs_round_trip(server: RunningServer, local: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """mkdir, put, mv, cat and rm -r through ``aviary fs``; the server's directory ends empty."""
    url = server.url
    assert main(["fs", "mkdir", url("/dir")]) == 0
    assert main(["fs", "put", str(local), url("/dir/in.txt")]) == 0
    assert main(["fs", "mv", url("/dir/in.txt"), url("/dir/moved.txt")]) == 0
    capsys.readouterr()
    assert main(["fs", "cat", url("/dir/moved.txt")]) == 0
    assert capsys.readouterr().out == local.read_text()
    assert main(["fs", "stat", url("/dir/nope")]) == 1
    assert "ENOENT" in capsys.readouterr().err
    assert main(["fs", "mkdir", url("/dir")]) == 1
    assert "EEXIST" in capsys.readouterr().err
    assert main(["fs", "rm", "-r", url("/dir")]) == 0
    assert list(server.data_dir.iterdir()) == []


def warm_up_xrootd_bindings() -> None:
    """The XRootD bindings start their poller (pipes, epoll descriptors) once per process, on
    first use; tests do that before the leak check takes its first look, so only real leaks
    show."""
    server = start_or_skip("root/xrootd")
    try:
        with server.driver(timeout=5) as driver:
            driver.stat("/")
    finally:
        server.stop()


def printed_steps(argv: Sequence[str]) -> Seen:
    """What the scenario program ``argv`` prints, run natively (it must succeed)."""
    done = subprocess.run(list(argv), capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stderr
    seen: Seen = json.loads(done.stdout)
    return seen


def scenario_script(factory: pytest.TempPathFactory, name: str, source: str) -> Path:
    """``source`` written to a new file, for a test module's scenario program."""
    path = factory.mktemp(name) / "scenario.py"
    path.write_text(source)
    return path


def native_steps(script: Path, factory: pytest.TempPathFactory) -> Seen:
    """What scenario ``script`` prints on a local directory, given as its work directory and
    as the directory another client sees (natively the same)."""
    work = factory.mktemp("local") / "work"
    return printed_steps([sys.executable, str(script), str(work), str(work)])


def printed_steps_under_agent(
    cli: str,
    seeded: str,
    agent_options: Sequence[str],
    argv: Sequence[str],
    env: Mapping[str, str] | None = None,
) -> Seen:
    """What ``argv`` prints under ``aviary run AGENT_OPTIONS``, started through ``cli`` (a
    ``python -c`` program that plants the regression named ``seeded``, if it knows it, then
    calls ``harness.cli.main``), with extra environment (a server's client_env); the run
    must succeed."""
    done = subprocess.run(
        [sys.executable, "-c", cli, seeded, "run", *agent_options, "--", *argv],
        cwd=ROOT, capture_output=True, text=True, timeout=120,
        env={**os.environ, **(env or {}), "PYTHONPATH": str(ROOT)},
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    seen: Seen = json.loads(done.stdout)
    return seen

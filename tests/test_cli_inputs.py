"""Bad command lines fail closed: one line on stderr, exit 2, no traceback, bounded in time.

Covers: ``aviary run`` and ``aviary fs`` argument validation, first for each
bad input the issue found (a mountlist without end, a --trace into a missing
directory, a timeout of -3, inf or nan, malformed URLs, ``-M =``, port 0, an
empty host, a NUL byte, a block size out of range), each in a real
subprocess of the project's interpreter; then hypothesis over fragments of
argv, run in-process (an uncaught exception is what would have been a
traceback), asserting the documented exit codes.
"""

from __future__ import annotations

import contextlib
import io
import os
import subprocess
import sys
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from drivers._network import COMMON_RECOVERY_ENV
from harness.cli import main

ROOT = Path(__file__).resolve().parent.parent
CLOSED_PORT = 1  # 127.0.0.1:1: nothing listens there, a connect is refused at once
CALL_BOUND = 60  # seconds any one aviary command may take here (all fail fast or run `true`)


def fails_closed(status: int, stderr: str, allowed: set[int]) -> str | None:
    """Why an aviary outcome breaks the fail-closed rule, or None if it keeps it."""
    if "Traceback" in stderr or "internal error" in stderr:
        return f"traceback: {stderr[-400:]}"
    if status not in allowed:
        return f"exit status {status}, expected one of {sorted(allowed)}: {stderr[-400:]}"
    if status == 2 and len(stderr.strip().splitlines()) != 1:
        return f"usage error not on one line: {stderr!r}"
    return None


def _aviary(*argv: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "harness.cli", *argv],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=CALL_BOUND,
        stdin=subprocess.DEVNULL,
    )


def _nul_mountlist(tmp: Path) -> str:
    path = tmp / "nul.mountlist"
    path.write_bytes(b"/a /tmp\0/b\n")
    return str(path)


BAD_INPUTS: list[list[str]] = [
    ["run", "-m", "/dev/zero", "--", "true"],
    ["run", "--trace", "/nonexistent-aviary-dir/trace.jsonl", "--", "true"],
    ["run", "--timeout", "-3", "--", "true"],
    ["run", "--timeout", "inf", "--", "true"],
    ["run", "--timeout", "nan", "--", "true"],
    ["run", "--timeout", "0", "--", "true"],
    ["run", "--recovery-budget", "-1", "--", "true"],
    ["run", "-M", "=", "--", "true"],
    ["run", "-M", "/x=", "--", "true"],
    ["run", "-M", "/x=chirp:///y", "--", "true"],
    ["run", "-M", "/x=chirp://127.0.0.1:0/y", "--", "true"],
    ["run", "-M", "/x=chirp://h/a%00b", "--", "true"],
    ["run", "--block-size", "8M", "--", "true"],
    ["run", "--block-size", "1K", "--", "true"],
    ["run", "--block-size", "lots", "--", "true"],
    ["fs", "stat", "nope"],
    ["fs", "stat", "chirp://127.0.0.1:0/x"],
    ["fs", "stat", "chirp:///x"],
    ["fs", "stat", "chirp://127.0.0.1:99999/x"],
    ["fs", "stat", "chirp://127.0.0.1:9094/a%00b"],
    ["fs", "stat", "gopher://127.0.0.1/x"],
    ["fs", "--timeout", "nan", "stat", "file:///"],
    ["fs", "--recovery-budget", "inf", "stat", "file:///"],
]


@pytest.mark.parametrize("argv", BAD_INPUTS, ids=[" ".join(a) for a in BAD_INPUTS])
def test_bad_input_is_one_line_and_exit_2(argv: list[str]) -> None:
    done = _aviary(*argv)
    problem = fails_closed(done.returncode, done.stderr, {2})
    assert problem is None, problem


def test_mountlist_with_a_nul_byte(tmp_path: Path) -> None:
    done = _aviary("run", "-m", _nul_mountlist(tmp_path), "--", "true")
    problem = fails_closed(done.returncode, done.stderr, {2})
    assert problem is None, problem


def test_fails_closed_catches_what_it_names() -> None:
    """The checker itself: a traceback, a wrong status and a multi-line usage error all fail."""
    traceback = 'Traceback (most recent call last):\n  File "x", line 1\nValueError: x\n'
    assert fails_closed(1, traceback, {1, 2}) is not None
    assert fails_closed(1, "aviary: bad\n", {2}) is not None
    assert fails_closed(2, "usage: aviary ...\naviary: error: x\n", {2}) is not None
    assert fails_closed(2, "aviary run: --timeout: bad\n", {2}) is None


# -- fuzzing argv fragments, in-process ---------------------------------------------------

_SECONDS = st.sampled_from(
    ["-3", "0", "0.5", "2", "inf", "-inf", "nan", "1e400", "", " ", "x", "1e-9", "86401"]
)
_HOSTS = st.sampled_from(["127.0.0.1", "", "[::1]", "h\u00e9", "a b", "127.0.0.1:0"])
_PORTS = st.sampled_from([f":{CLOSED_PORT}", ":0", ":65536", ":-1", ":x", ""])
_PATHS = st.sampled_from(["/x", "", "/a%00b", "/%zz", "/../..", "//", "/" + "n" * 5000])
_SCHEMES = st.sampled_from(["chirp", "ftp", "http", "dav", "root", "sftp", "nope", "", "CHIRP"])


@st.composite
def urls(draw: st.DrawFn) -> str:
    return f"{draw(_SCHEMES)}://{draw(_HOSTS)}{draw(_PORTS)}{draw(_PATHS)}"


@st.composite
def fs_argv(draw: st.DrawFn) -> list[str]:
    argv = ["fs"]
    if draw(st.booleans()):
        argv += ["--timeout", draw(_SECONDS)]
    if draw(st.booleans()):
        argv += ["--recovery-budget", draw(_SECONDS)]
    verb = draw(st.sampled_from(["stat", "ls", "cat", "get"]))  # read-only verbs only
    argv += [verb, draw(urls())]
    if verb == "get":
        argv.append("-")
    return argv


@st.composite
def run_argv(draw: st.DrawFn) -> list[str]:
    argv = ["run"]
    for _ in range(draw(st.integers(0, 3))):
        option = draw(st.sampled_from(["--timeout", "--recovery-budget", "-M", "--block-size"]))
        if option == "-M":
            logical = draw(st.sampled_from(["/x", "x", "", "/", "/a\nb"]))
            argv += ["-M", f"{logical}{draw(st.sampled_from(['=', '', '==']))}{draw(urls())}"]
        elif option == "--block-size":
            argv += [option, draw(st.sampled_from(["4K", "1M", "2M", "0", "-4K", "x", "4k"]))]
        else:
            argv += [option, draw(_SECONDS)]
    return [*argv, "--", "true"]


def _run_in_process(argv: list[str]) -> tuple[int, str]:
    err = io.StringIO()
    out = io.TextIOWrapper(io.BytesIO())  # cat and get write bytes to sys.stdout.buffer
    saved = os.environ.get(COMMON_RECOVERY_ENV)
    try:
        with contextlib.redirect_stderr(err), contextlib.redirect_stdout(out):
            try:
                status = main(argv)
            except SystemExit as exc:  # argparse's exit
                status = exc.code if isinstance(exc.code, int) else 2
    finally:
        if saved is None:
            os.environ.pop(COMMON_RECOVERY_ENV, None)
        else:
            os.environ[COMMON_RECOVERY_ENV] = saved
    return status, err.getvalue()


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(argv=fs_argv())
def test_fs_argv_fuzz(argv: list[str]) -> None:
    status, stderr = _run_in_process(argv)
    problem = fails_closed(status, stderr, {0, 1, 2})
    assert problem is None, f"aviary {argv}: {problem}"


@settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(argv=run_argv())
def test_run_argv_fuzz(argv: list[str]) -> None:
    status, stderr = _run_in_process(argv)
    # 0: `true` ran; 1: a mount that parses but whose server is unreachable fails at first use;
    # 2: bad usage.
    problem = fails_closed(status, stderr, {0, 1, 2})
    assert problem is None, f"aviary {argv}: {problem}"

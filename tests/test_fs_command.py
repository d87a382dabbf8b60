"""``aviary fs`` against both Chirp servers: identical results, one-line errors."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from drivers.chirp import ChirpDriver
from harness.cli import main
from servers import RunningServer, free_port
from tests.helpers import start_or_skip


def run(capsys: pytest.CaptureFixture[str], *argv: str) -> tuple[int, str, str]:
    status = main(["fs", *argv])
    out, err = capsys.readouterr()
    return status, out, err


def session(
    server: RunningServer, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> list[object]:
    """One scripted session of put/get/ls/stat/mkdir/mv/rm, with errors; the transcript."""
    local = tmp_path / "in.txt"
    local.write_bytes(b"hello, chirp\n")
    fetched = tmp_path / f"out-{server.spec.implementation}.txt"
    url = server.url
    steps: list[tuple[str, ...]] = [
        ("put", str(local), url("/hello.txt")),
        ("mkdir", url("/dir")),
        ("mkdir", "-p", url("/dir/a/b")),
        ("mv", url("/hello.txt"), url("/dir/hello.txt")),
        ("ls", url("/dir")),
        ("ls", "-l", url("/dir")),
        ("stat", url("/dir/hello.txt")),
        ("get", url("/dir/hello.txt"), str(fetched)),
        ("cat", url("/dir/hello.txt")),
        # errors: missing, a directory where a file is expected, not empty, exists
        ("stat", url("/nope")),
        ("cat", url("/dir")),
        ("rmdir", url("/dir")),
        ("mkdir", url("/dir")),
        ("ls", url("/dir/hello.txt")),
        ("rm", url("/dir")),
        ("rm", url("/dir/hello.txt")),
        ("rm", "-r", url("/dir")),
        ("ls", url("/")),
    ]
    transcript: list[object] = []
    for step in steps:
        status, out, err = run(capsys, *step)
        # What legitimately differs between two servers: ports, inodes, devices, times.
        out = out.replace(str(server.port), "PORT")
        out = re.sub(r"(st_ino|st_dev|st_[amc]time_ns): \d+", r"\1: N", out)
        out = re.sub(r"\d{4}-\d\d-\d\d \d\d:\d\d", "DATE", out)
        err = err.replace(str(server.port), "PORT")
        transcript.append((step[0], status, out, err))
    transcript.append(("fetched", fetched.read_bytes()))
    return transcript


def test_both_servers_give_identical_results(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    transcripts = {}
    for key in ("chirp/cctools", "chirp/aviary"):
        server = start_or_skip(key)
        try:
            transcripts[key] = session(server, tmp_path, capsys)
        finally:
            server.stop()
    cctools, aviary = transcripts["chirp/cctools"], transcripts["chirp/aviary"]
    for ours, theirs in zip(aviary, cctools, strict=True):
        assert ours == theirs
    # And the transcript says what it should, so that agreeing on nonsense fails.
    by_step: dict[int, Any] = dict(enumerate(cctools))
    assert by_step[4] == ("ls", 0, "a\nhello.txt\n", "")
    assert "st_size: 13" in by_step[6][2] and "type: regular" in by_step[6][2]
    assert by_step[8][2] == "hello, chirp\n"
    expected_errors = {
        9: "ENOENT",
        10: "EISDIR",
        11: "ENOTEMPTY",
        12: "EEXIST",
        13: "ENOTDIR",
        14: "EISDIR",
    }
    for index, name in expected_errors.items():
        verb, status, _, err = by_step[index]
        assert status == 1 and err.startswith(f"aviary: {verb} ") and f": {name} (" in err
        assert err.count("\n") == 1
    assert by_step[17] == ("ls", 0, "", "")
    assert cctools[-1] == ("fetched", b"hello, chirp\n")


def test_permission_denied_is_eacces(
    chirp_server: RunningServer, capsys: pytest.CaptureFixture[str]
) -> None:
    with chirp_server.driver() as driver:
        assert isinstance(driver, ChirpDriver)
        driver.mkdir("/ro")
        driver.setacl("/ro", "address:127.0.0.1", "rl")
    status, _, err = run(capsys, "mkdir", chirp_server.url("/ro/sub"))
    assert status == 1 and ": EACCES (" in err


def test_server_not_listening_is_econnrefused(capsys: pytest.CaptureFixture[str]) -> None:
    status, _, err = run(capsys, "ls", f"chirp://127.0.0.1:{free_port()}/")
    assert status == 1 and ": ECONNREFUSED (" in err


def test_bad_urls_are_one_line_errors_from_the_real_command() -> None:
    for argv, message in (
        (["fs", "ls", "gopher://host/x"], "no driver for URL scheme 'gopher'"),
        (["fs", "stat", "not-a-url"], "not a URL"),
        (["fs", "cat", "chirp://127.0.0.1:99999999/"], "bad port"),
    ):
        result = subprocess.run(
            [sys.executable, "-m", "harness.cli", *argv], capture_output=True, text=True, timeout=60
        )
        assert result.returncode != 0
        assert message in result.stderr
        assert result.stderr.count("\n") == 1, result.stderr
        assert "Traceback" not in result.stderr

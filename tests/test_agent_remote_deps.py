"""Remote dependencies on demand: Python's standard library (and interpreter) from a server.

The slides' CVMFS use case: ``/usr/lib/python3.X`` is mapped onto a Chirp (or
HTTP) server holding a copy of it; ``--cache whole --cache-dir DIR`` fetches
each file the program opens once, into a directory that later runs share.
"""

from __future__ import annotations

import json
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from tests.helpers import ROOT, served

SYSTEM_PYTHON = Path("/usr/bin/python3")
#: Parts of the standard library no test imports: left out of the server's copy to save time.
NOT_COPIED = shutil.ignore_patterns(
    "config-*", "test", "lib2to3", "pydoc_data", "distutils", "idlelib", "tkinter",
    "ensurepip", "site-packages", "dist-packages", "turtledemo",
)  # fmt: skip
SUMMARY = re.compile(
    r"whole-file cache .*: (\d+) hits, (\d+) fetched \((\d+) bytes\), (\d+) replaced"
)


def system_stdlib() -> Path:
    """The directory of the system Python's standard library (/usr/lib/python3.X)."""
    if not SYSTEM_PYTHON.exists():
        pytest.skip("no system Python at /usr/bin/python3")
    found = subprocess.run(
        [str(SYSTEM_PYTHON), "-c", "import os; print(os.path.dirname(os.__file__))"],
        capture_output=True,
        text=True,
        check=True,
        timeout=30,
    ).stdout.strip()
    return Path(found)


def aviary(*argv: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "harness.cli", "run", *argv],
        capture_output=True,
        text=True,
        timeout=120,
        cwd=ROOT,
    )


def cache_counts(stderr: str) -> tuple[int, int, int, int]:
    """(hits, fetched, bytes, replaced) from ``--summary``."""
    found = SUMMARY.search(stderr)
    assert found is not None, stderr
    return int(found[1]), int(found[2]), int(found[3]), int(found[4])


def cached_paths(cache: Path) -> set[str]:
    """The remote paths the cache holds copies of (its names end with the path, "/" as "%")."""
    names = [p.name for p in cache.iterdir()]
    assert not [n for n in names if n.startswith(".")], names  # no half-fetched leftovers
    return {"/" + name.split("-", 4)[4].replace("%", "/") for name in names}


def remote_opens(trace: Path, endpoint: str) -> set[str]:
    records = [json.loads(line) for line in trace.read_text().splitlines()]
    return {
        r["path"]
        for r in records
        if r["syscall"] in ("open", "openat")
        and r["driver"] == endpoint
        and r["result"] == "native"
    }


def test_python_runs_with_its_standard_library_on_chirp(tmp_path: Path) -> None:
    stdlib = system_stdlib()
    with served("chirp/aviary") as server:
        export = server.data_dir / stdlib.name
        shutil.copytree(stdlib, export, ignore=NOT_COPIED, symlinks=True)
        (export / "aviary_probe.py").write_text("VALUE = 1\n")
        endpoint = f"chirp://127.0.0.1:{server.port}"
        cache, trace = tmp_path / "cache", tmp_path / "trace.jsonl"
        program = (
            "import json, aviary_probe; print(json.dumps([aviary_probe.VALUE]), json.__file__)"
        )
        run = [
            "--cache", "whole", "--cache-dir", str(cache), "--summary",
            "-M", f"{stdlib}={endpoint}/{stdlib.name}", "--trace", str(trace),
            "--", str(SYSTEM_PYTHON), "-B", "-c", program,
        ]  # fmt: skip

        cold = aviary(*run)
        assert cold.returncode == 0, cold.stderr
        assert cold.stdout == f"[1] {stdlib}/json/__init__.py\n"
        hits, fetched, size, _ = cache_counts(cold.stderr)
        assert fetched > 5 and size > 0
        # Only what was opened was fetched: exactly the regular files the program opened there.
        opened = {
            p.replace(str(stdlib), f"/{stdlib.name}", 1)
            for p in remote_opens(trace, endpoint)
            if (export / Path(p).relative_to(stdlib)).is_file()
        }
        assert cached_paths(cache) == opened
        assert len(opened) == fetched
        in_export = sum(1 for p in export.rglob("*") if p.is_file())
        assert fetched < in_export / 20, (fetched, in_export)
        assert any(p.startswith(f"/{stdlib.name}/json/") and "decoder" in p for p in opened)
        assert not [p for p in opened if "/email/" in p or "/asyncio/" in p]
        entries = {p.name: p.stat().st_mtime_ns for p in cache.iterdir()}

        warm = aviary(*run)
        assert warm.returncode == 0, warm.stderr
        assert warm.stdout == cold.stdout
        assert cache_counts(warm.stderr) == (hits + fetched, 0, 0, 0)  # nothing new fetched
        assert {p.name: p.stat().st_mtime_ns for p in cache.iterdir()} == entries

        # A file changed on the server is fetched again, and its old copy goes.
        (export / "aviary_probe.py").write_text("VALUE = 22222\n")
        changed = aviary(*run)
        assert changed.returncode == 0, changed.stderr
        assert changed.stdout.startswith("[22222] ")
        assert cache_counts(changed.stderr)[1:] == (1, len("VALUE = 22222\n"), 1)
        assert len(list(cache.iterdir())) == len(entries)


def test_concurrent_runs_share_one_cache(tmp_path: Path) -> None:
    stdlib = system_stdlib()
    with served("chirp/aviary") as server:
        shutil.copytree(stdlib, server.data_dir / stdlib.name, ignore=NOT_COPIED, symlinks=True)
        cache = tmp_path / "cache"
        argv = [
            sys.executable, "-m", "harness.cli", "run", "--cache", "whole",
            "--cache-dir", str(cache), "--summary",
            "-M", f"{stdlib}=chirp://127.0.0.1:{server.port}/{stdlib.name}",
            "--", str(SYSTEM_PYTHON), "-B", "-c", "import json; print(json.dumps('ok'))",
        ]  # fmt: skip
        runs = [
            subprocess.Popen(
                argv, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, cwd=ROOT
            )
            for _ in range(2)
        ]
        outputs = [run.communicate(timeout=120) for run in runs]
        assert [run.returncode for run in runs] == [0, 0], outputs
        assert [out for out, _ in outputs] == ['"ok"\n', '"ok"\n']
        copies = cached_paths(cache)  # whole copies only, no leftovers
        third = aviary(*argv[4:])
        assert third.returncode == 0, third.stderr
        assert cache_counts(third.stderr)[1] == 0
        assert cached_paths(cache) == copies


def test_interpreter_and_modules_both_remote(tmp_path: Path) -> None:
    """The interpreter itself is exec'd from the server (through a local copy in the cache)."""
    stdlib = system_stdlib()
    with served("chirp/aviary") as server:
        prefix = server.data_dir / "py"
        (prefix / "bin").mkdir(parents=True)
        interpreter = SYSTEM_PYTHON.resolve()
        shutil.copy2(interpreter, prefix / "bin" / interpreter.name)
        shutil.copytree(stdlib, prefix / "lib" / stdlib.name, ignore=NOT_COPIED, symlinks=True)
        cache = tmp_path / "cache"
        result = aviary(
            "--cache", "whole", "--cache-dir", str(cache), "--summary",
            "-M", f"/opt/py=chirp://127.0.0.1:{server.port}/py",
            "--", "/bin/sh", "-c",
            f"exec /opt/py/bin/{interpreter.name} -B -c 'import json, sys; print(sys.prefix, json.__file__)'",
        )  # fmt: skip
        assert result.returncode == 0, result.stderr
        assert result.stdout == f"/opt/py /opt/py/lib/{stdlib.name}/json/__init__.py\n"
        assert f"/py/bin/{interpreter.name}" in cached_paths(cache)


def test_python_standard_library_over_http(tmp_path: Path) -> None:
    """The same from a plain web server (nginx with its listings): read-only is enough."""
    stdlib = system_stdlib()
    with served("http/nginx") as server:
        shutil.copytree(stdlib, server.data_dir / stdlib.name, ignore=NOT_COPIED, symlinks=True)
        cache = tmp_path / "cache"
        run = [
            "--cache", "whole", "--cache-dir", str(cache), "--summary",
            "-M", f"{stdlib}={server.url('/' + stdlib.name)}",
            "--", str(SYSTEM_PYTHON), "-B", "-c", "import json; print(json.dumps({'via': 'http'}))",
        ]  # fmt: skip
        cold = aviary(*run)
        assert cold.returncode == 0, cold.stderr
        assert cold.stdout == '{"via": "http"}\n'
        fetched = cache_counts(cold.stderr)[1]
        assert fetched > 5
        warm = aviary(*run)
        assert warm.stdout == cold.stdout
        assert cache_counts(warm.stderr)[:2] == (fetched, 0)


def test_cache_dir_is_refused_without_whole_file_caching() -> None:
    result = aviary("--cache-dir", "/tmp/unused", "--", "true")
    assert result.returncode == 2
    assert result.stderr == "aviary: run: --cache-dir needs --cache whole\n"

"""copy_file_range and sendfile with remote files: the same results, offsets and bytes as Linux.

The native run keeps its "remote" files on another file system (tmpfs) than its local
ones, as a mount is: copy_file_range between them is EXDEV there too. Each source is read
a byte before the copies: under ``--cache cto`` that first read hands the small file to the
kernel (``RemoteFile.fill``), whose offset the copies must then use and move.
"""

from __future__ import annotations

import shutil
import subprocess
import sys
import tempfile
import textwrap
from pathlib import Path

import pytest

from servers import RunningServer

# Copies between a "remote" and a "local" directory in every direction; prints each result,
# each descriptor's offset afterwards and each file's bytes, one line per step.
COPIER = textwrap.dedent(
    """
    import errno, os, socket, sys, zlib
    remote, local = sys.argv[1], sys.argv[2]
    def show(label, call):
        try:
            print(label, call())
        except OSError as exc:
            print(label, errno.errorcode[exc.errno])
    def make(path, data):
        with open(path, "wb") as f:
            f.write(data)
    make(f"{remote}/src", bytes(range(256)) * 40)
    make(f"{local}/src", b"local bytes " * 300)
    pairs = [("r2l", f"{remote}/src", f"{local}/dst1"), ("l2r", f"{local}/src", f"{remote}/dst2"),
             ("r2r", f"{remote}/src", f"{remote}/dst3")]
    for name, src, dst in pairs:
        i = os.open(src, os.O_RDONLY)
        o = os.open(dst, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o644)
        show(name + " first byte", lambda: os.read(i, 1))
        os.lseek(i, 100, os.SEEK_SET)
        show(name + " cfr", lambda: os.copy_file_range(i, o, 1000))
        show(name + " offsets", lambda: (os.lseek(i, 0, 1), os.lseek(o, 0, 1)))
        show(name + " cfr at", lambda: os.copy_file_range(i, o, 500, 3000, 50))
        show(name + " offsets", lambda: (os.lseek(i, 0, 1), os.lseek(o, 0, 1)))
        show(name + " cfr eof", lambda: os.copy_file_range(i, o, 100, 1 << 20, 0))
        show(name + " sendfile", lambda: os.sendfile(o, i, None, 700))
        show(name + " sendfile at", lambda: os.sendfile(o, i, 7, 33))
        show(name + " offsets", lambda: (os.lseek(i, 0, 1), os.lseek(o, 0, 1)))
        show(name + " wrong way", lambda: os.copy_file_range(o, i, 10))
        os.close(i); os.close(o)
        with open(dst, "rb") as f:
            data = f.read()
        print(name, "bytes", len(data), zlib.crc32(data))
    a, b = socket.socketpair()
    i = os.open(f"{remote}/src", os.O_RDONLY)
    show("to socket", lambda: os.sendfile(a.fileno(), i, None, 64))
    show("socket got", lambda: b.recv(100) == (bytes(range(256)) * 40)[:64])
    show("in offset", lambda: os.lseek(i, 0, 1))
    show("read on", lambda: os.read(i, 4) == (bytes(range(256)) * 40)[64:68])
    show("to socket again", lambda: os.sendfile(a.fileno(), i, None, 64))
    show("socket got", lambda: b.recv(100) == (bytes(range(256)) * 40)[68:132])
    show("in offset", lambda: os.lseek(i, 0, 1))
    """
)


def _copier(remote: str, local: Path, *prefix: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [*prefix, sys.executable, "-c", COPIER, remote, str(local)],
        capture_output=True,
        text=True,
        timeout=60,
    )


@pytest.mark.parametrize("cache", ["off", "cto"])
def test_copies_with_remote_files_match_native(
    chirp_server: RunningServer, tmp_path: Path, cache: str
) -> None:
    native_local, local = tmp_path / "nl", tmp_path / "l"
    for directory in (native_local, local):
        directory.mkdir()
    native_remote = Path(tempfile.mkdtemp(dir="/dev/shm"))
    try:
        assert native_remote.stat().st_dev != tmp_path.stat().st_dev
        native = _copier(str(native_remote), native_local)
        _compare(chirp_server, native, native_remote, native_local, local, cache)
    finally:
        shutil.rmtree(native_remote)


def _compare(
    chirp_server: RunningServer,
    native: subprocess.CompletedProcess[str],
    native_remote: Path,
    native_local: Path,
    local: Path,
    cache: str = "off",
) -> None:
    assert native.returncode == 0, native.stderr
    assert "r2l cfr EXDEV" in native.stdout and "r2r cfr 1000" in native.stdout
    assert "r2l sendfile 700" in native.stdout
    traced = _copier(
        f"/chirp/127.0.0.1:{chirp_server.port}",
        local,
        *(sys.executable, "-m", "harness.cli", "run", "--cache", cache, "--"),
    )
    assert traced.returncode == 0, traced.stderr
    assert traced.stdout == native.stdout
    assert traced.stderr == ""
    for name in ("src", "dst2", "dst3"):
        assert (chirp_server.data_dir / name).read_bytes() == (native_remote / name).read_bytes()
    for name in ("src", "dst1"):
        assert (local / name).read_bytes() == (native_local / name).read_bytes()

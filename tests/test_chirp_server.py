"""aviary's Chirp server: exact wire answers (raw sockets) and the real cctools client.

Expected bytes were checked against cctools' chirp_server (Debian coop-computing-tools)
with the same requests; see chirp_server/_server.py for the few deliberate differences.
"""

from __future__ import annotations

import getpass
import os
import re
import shutil
import socket
import subprocess
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import replace
from pathlib import Path

import pytest

from chirp_server._fs import ServerFS, collapse_path, dirname, fix_path
from chirp_server._server import ChirpServer, ChirpServerConfig

ADDRESS_LOGIN = b"yes\nyes\nyes\naddress\n127.0.0.1\n"
STAT_LINE = re.compile(rb"(-?\d+ ){12}-?\d+")


# -- fixtures: one in-process server per test ---------------------------------------------------


@pytest.fixture
def config(tmp_path: Path) -> ChirpServerConfig:
    acl = tmp_path / "default.acl"
    acl.write_text("address:127.0.0.1 rwlda\n")
    return ChirpServerConfig(
        root=tmp_path / "root",
        port=0,
        auth_methods=("address",),
        default_acl=acl,
        challenge_dir=tmp_path,
    )


@contextmanager
def _serve(config: ChirpServerConfig) -> Iterator[ChirpServer]:
    """A server on a free port, accepting in a background thread until the block ends."""
    with ChirpServer(config) as server:
        yield server


@pytest.fixture
def server(config: ChirpServerConfig) -> Iterator[ChirpServer]:
    with _serve(config) as running:
        yield running


@pytest.fixture
def root(server: ChirpServer) -> Path:
    return server.config.root


class Client:
    """A raw Chirp connection: send lines, read exact answers."""

    def __init__(self, port: int, login: bytes | None = b"address\n") -> None:
        self.sock = socket.create_connection(("127.0.0.1", port), timeout=10)
        self.file = self.sock.makefile("rb")
        if login is not None:
            self.sock.sendall(login)
            assert self.read(len(ADDRESS_LOGIN)) == ADDRESS_LOGIN

    def send(self, data: bytes) -> None:
        self.sock.sendall(data)

    def line(self) -> bytes:
        return self.file.readline()

    def read(self, n: int) -> bytes:
        return self.file.read(n)

    def code(self, request: bytes, payload: bytes = b"") -> int:
        self.send(request + b"\n" + payload)
        return int(self.line())

    def closed(self) -> bool:
        return self.file.read(1) == b""

    def close(self) -> None:
        self.file.close()
        self.sock.close()


@pytest.fixture
def client(server: ChirpServer) -> Iterator[Client]:
    c = Client(server.port)
    yield c
    c.close()


# -- pure path handling ------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("raw", "fixed"),
    [
        ("a/b", "/a/b"),
        ("/../../etc/passwd", "/etc/passwd"),
        ("%2E%2E/%2e%2e/x", "/x"),
        ("/a/./b//c/", "/a/b/c/"),
        ("/a/b/..", "/a"),
        ("/a/.", "/a/"),
        ("my%20file", "/my file"),
        ("cut%00here", "/cut"),
    ],
)
def test_fix_path(raw: str, fixed: str) -> None:
    assert fix_path(raw) == fixed


def test_collapse_and_dirname() -> None:
    assert collapse_path("/a/b/../../..") == "/"
    assert dirname("/a/b") == "/a"
    assert dirname("/a") == "/"
    assert dirname("/a/b//") == "/a"
    assert dirname("/") == "/"


def test_ServerFS_stays_inside_the_root(tmp_path: Path) -> None:
    (tmp_path / "secret").write_text("outside")
    root = tmp_path / "root"
    root.mkdir()
    os.symlink("/secret", root / "abs")
    os.symlink("../secret", root / "rel")
    os.symlink("../../../../../..", root / "up")
    (root / "secret").write_text("inside")
    fs = ServerFS(root)
    try:
        assert fs.read_file("/abs") == b"inside"  # absolute targets start at the root
        assert fs.read_file("/up/secret") == b"inside"  # .. stops at the root
        assert fs.read_file("/rel") == b"inside"  # ../secret from the root: the root's
    finally:
        fs.close()


def test_ServerFS_rel_link_lands_in_root(tmp_path: Path) -> None:
    root = tmp_path / "root"
    (root / "d").mkdir(parents=True)
    (root / "f").write_text("in root")
    os.symlink("../f", root / "d" / "lnk")
    fs = ServerFS(root)
    try:
        assert fs.read_file("/d/lnk") == b"in root"
    finally:
        fs.close()


# -- authentication --------------------------------------------------------------------------------


def test_address_login_bytes(server: ChirpServer) -> None:
    c = Client(server.port, login=None)
    try:
        c.send(b"kerberos\nunix\naddress\n")
        assert c.read(len(b"no\nno\n" + ADDRESS_LOGIN)) == b"no\nno\n" + ADDRESS_LOGIN
        c.send(b"whoami 100\n")
        assert c.line() == b"17\n"
        assert c.read(17) == b"address:127.0.0.1"
    finally:
        c.close()


def test_unix_login_exchange(config: ChirpServerConfig) -> None:
    with _serve(replace(config, auth_methods=("unix",))) as server:
        c = Client(server.port, login=None)
        try:
            c.send(b"unix\n")
            assert c.line() == b"yes\n"
            challenge = c.line().rstrip(b"\n").decode()
            assert challenge.startswith(f"{config.challenge_dir}/challenge.{os.getpid()}.")
            Path(challenge).write_text("")
            c.send(b"yes\n")
            me = getpass.getuser().encode()
            assert c.read(len(b"yes\nyes\nunix\n" + me + b"\n")) == b"yes\nyes\nunix\n" + me + b"\n"
            assert not Path(challenge).exists()  # the server removes the challenge
        finally:
            c.close()


def test_unix_login_fails_without_the_file(config: ChirpServerConfig) -> None:
    cfg = replace(config, auth_methods=("unix", "address"), unix_timeout=0.2)
    with _serve(cfg) as server:
        c = Client(server.port, login=None)
        try:
            c.send(b"unix\n")
            assert c.line() == b"yes\n"
            c.line()  # the challenge, which we do not meet
            c.send(b"yes\n")
            assert c.line() == b"no\n"
            c.send(b"address\n")  # back to negotiation
            assert c.read(len(ADDRESS_LOGIN)) == ADDRESS_LOGIN
        finally:
            c.close()


def test_hostname_login(config: ChirpServerConfig) -> None:
    name = socket.getnameinfo(("127.0.0.1", 0), 0)[0].encode()
    with _serve(replace(config, auth_methods=("hostname",))) as server:
        c = Client(server.port, login=None)
        try:
            c.send(b"hostname\n")
            expected = b"yes\nyes\nyes\nhostname\n" + name + b"\n"
            assert c.read(len(expected)) == expected
        finally:
            c.close()


def test_unknown_auth_method_is_a_configuration_error(config: ChirpServerConfig) -> None:
    with pytest.raises(ValueError):
        ChirpServer(replace(config, auth_methods=("kerberos",)))


# -- open files ---------------------------------------------------------------------------------------


def test_open_pwrite_pread_close(client: Client, root: Path) -> None:
    client.send(b"open /f rwc 420\n")
    assert client.line() == b"0\n"
    fields = client.line().split()
    assert len(fields) == 13 and int(fields[2]) == 0o100600 and fields[7] == b"0"
    assert client.code(b"pwrite 0 5 0", b"hello") == 5
    client.send(b"pread 0 100 0\n")
    assert client.line() == b"5\n" and client.read(5) == b"hello"
    assert client.code(b"pread 0 100 5") == 0  # end of file
    client.send(b"pread 0 3 1\n")
    assert client.line() == b"3\n" and client.read(3) == b"ell"
    assert client.code(b"pread 0 -1 0") == -8
    client.send(b"fstat 0\n")
    assert client.line() == b"0\n" and client.line().split()[7] == b"5"
    assert client.code(b"close 0") == 0
    assert client.code(b"close 0") == -12  # double close
    assert client.code(b"pread 0 1 0") == -12
    assert client.code(b"fstat 9") == -12
    assert (root / "f").read_bytes() == b"hello"


def test_fds_are_lowest_free_and_per_connection(client: Client, server: ChirpServer) -> None:
    for expected in range(3):
        client.send(b"open /f%d wc 420\n" % expected)
        assert client.line() == b"%d\n" % expected
        client.line()
    assert client.code(b"close 1") == 0
    client.send(b"open /again wc 420\n")
    assert client.line() == b"1\n"
    client.line()
    other = Client(server.port)
    try:
        other.send(b"open /f2 r 0\n")
        assert other.line() == b"0\n"  # a second connection has its own table
        other.line()
    finally:
        other.close()


def test_clients_are_served_concurrently(client: Client, server: ChirpServer) -> None:
    assert client.code(b"putfile /slow 420 10") == 0  # this client now owes 10 bytes
    other = Client(server.port)
    try:
        assert other.code(b"whoami 7") == 7
        assert other.read(7) == b"address"
    finally:
        other.close()
    client.send(b"0123456789")
    assert client.line() == b"10\n"


def test_pwrite_soaks_what_exceeds_16_MiB(client: Client) -> None:
    client.send(b"open /big wc 420\n")
    client.line(), client.line()
    n = 16 * 1024 * 1024 + 10
    client.send(b"pwrite 0 %d 0\n" % n + b"x" * n + b"whoami 4\n")
    assert client.line() == b"16777216\n"
    assert client.line() == b"4\n" and client.read(4) == b"addr"


def test_umask_setting_changes_created_modes(config: ChirpServerConfig) -> None:
    with _serve(replace(config, umask=0o022)) as server:
        c = Client(server.port)
        try:
            c.send(b"open /f wc 511\n")  # 0777: owner x, group and other kept
            assert c.line() == b"0\n"
            assert int(c.line().split()[2]) == 0o100755
            assert c.code(b"mkdir /d 511") == 0
            assert (server.config.root / "d").stat().st_mode & 0o777 == 0o755
        finally:
            c.close()


# -- namespace and listings ---------------------------------------------------------------------------


def _entries(c: Client, long: bool) -> dict[bytes, bytes]:
    assert c.line() == b"0\n"
    entries = {}
    while (name := c.line()) != b"\n":
        entries[name.rstrip(b"\n")] = c.line().rstrip(b"\n") if long else b""
    return entries


def test_getlongdir_and_getdir_format(client: Client, root: Path) -> None:
    assert client.code(b"mkdir /d 493") == 0  # writes /d/.__acl
    assert client.code(b"putfile /d/f 420 3", b"") == 0
    client.send(b"abc")
    assert client.line() == b"3\n"
    client.send(b"getlongdir /d\n")
    entries = _entries(client, long=True)
    assert set(entries) == {b".", b"..", b"f"}  # .__acl hidden, . and .. listed
    assert all(STAT_LINE.fullmatch(st) for st in entries.values())
    assert entries[b"f"].split()[7] == b"3"
    client.send(b"getdir /d\n")
    assert set(_entries(client, long=False)) == {b".", b"..", b"f"}
    assert (root / "d" / ".__acl").exists()


def test_error_codes(client: Client, root: Path) -> None:
    (root / "f").write_text("data")
    (root / "d" / "sub").mkdir(parents=True)
    assert client.code(b"stat /missing") == -3
    assert client.code(b"getfile /d") == -13
    assert client.code(b"open /f/x r 0") == -14
    assert client.code(b"rmdir /d") == -15
    assert client.code(b"mkdir /d 493") == -4
    assert client.code(b"unlink /d") == -13
    assert client.code(b"rmdir /f") == -14
    assert client.code(b"readlink /f 100") == -8
    assert client.code(b"frobnicate /f") == -8
    assert client.code(b"lsalloc /") == -8  # a real cctools RPC this server does not offer
    assert client.code(b"whoami -1") == -8
    assert client.code(b"hash sha3 /f") == -8


def test_user_visibly_empty_directory_is_removed(client: Client, root: Path) -> None:
    assert client.code(b"mkdir /d 493") == 0
    assert (root / "d" / ".__acl").exists()
    assert client.code(b"rmdir /d") == 0
    assert not (root / "d").exists()


def test_permission_denied_after_setacl(client: Client, root: Path) -> None:
    assert client.code(b"setacl / address:127.0.0.1 rl") == 0
    client.send(b"getacl /\n")
    assert client.line() == b"0\n"
    assert client.line() == b"address:127.0.0.1 rl\n" and client.line() == b"\n"
    assert client.code(b"open /new wc 420") == -2
    assert client.code(b"putfile /new 420 1") == -2
    assert client.code(b"mkdir /x 493") == -2
    assert client.code(b"setacl / address:127.0.0.1 rwlda") == -2  # no admin right left
    assert client.code(b"stat /") == 0
    assert not (root / "new").exists()


def test_paths_never_leave_the_root(client: Client, root: Path, tmp_path: Path) -> None:
    (tmp_path / "outside").write_text("secret")
    assert client.code(b"stat /../../etc/passwd") == -3
    assert client.code(b"getfile /%2E%2E/outside") == -3
    assert client.code(b"symlink /etc /etc_link") == 0
    assert client.code(b"stat /etc_link/passwd") == -3
    assert client.code(b"symlink ../../../.. /up") == 0
    assert client.code(b"getfile /up/outside") == -3
    assert client.code(b"putfile /../../outside2 420 1") == 0
    client.send(b"x")
    assert client.line() == b"1\n"
    assert (root / "outside2").read_text() == "x"
    assert not (tmp_path / "outside2").exists()
    assert (tmp_path / "outside").read_text() == "secret"


def test_putfile_is_two_phase(client: Client, root: Path) -> None:
    (root / "d").mkdir()
    assert client.code(b"putfile /f 420 5") == 0  # go ahead ...
    client.send(b"hello")
    assert client.line() == b"5\n"  # ... final length
    client.send(b"getfile /f\n")
    assert client.line() == b"5\n" and client.read(5) == b"hello"
    # A refused putfile reads no data: what follows is the next request.
    client.send(b"putfile /d 420 5\nstat /f\n")
    assert client.line() == b"-13\n"
    assert client.line() == b"0\n" and client.line().split()[7] == b"5"


def test_putfile_cut_short_leaves_no_file(server: ChirpServer, root: Path) -> None:
    c = Client(server.port)
    try:
        assert c.code(b"putfile /partial 420 100") == 0
        c.send(b"only ten..")
    finally:
        c.close()
    deadline = time.monotonic() + 5
    while (root / "partial").exists() and time.monotonic() < deadline:
        time.sleep(0.02)
    assert not (root / "partial").exists()


def test_request_line_rules(client: Client, server: ChirpServer) -> None:
    (server.config.root / "foo").write_text("x")
    client.send(b"\r\n\nstat /foo\r\n")  # CR dropped, empty lines ignored
    assert client.line() == b"0\n" and STAT_LINE.fullmatch(client.line().rstrip())
    assert client.code(b"stat /foo extra tokens") == 0
    client.line()
    assert client.code(b"statfoo") == 0  # like sscanf("stat %s"): /foo
    client.line()
    assert client.code(b"statfs /foo") == -14  # statfs is matched before stat
    assert client.code(b"stat /" + b"a" * 1017) == -24  # a 1023-character line is fine
    client.send(b"stat /" + b"a" * 1018 + b"\n")  # 1024 characters: disconnected
    assert client.closed()
    eot = Client(server.port)
    try:
        eot.send(b"\x04\nstat /foo\n")
        assert eot.closed()
    finally:
        eot.close()


def test_idle_clients_are_disconnected(config: ChirpServerConfig) -> None:
    with _serve(replace(config, idle_timeout=0.3)) as server:
        c = Client(server.port)
        try:
            assert c.closed()
        finally:
            c.close()


# -- the real cctools client -------------------------------------------------------------------------


def _chirp_cli() -> str:
    path = shutil.which("chirp")
    if path is None:
        if os.environ.get("CI"):
            pytest.fail("cctools' chirp client is required in CI")
        pytest.skip("cctools' chirp client not installed: apt-get install coop-computing-tools")
    return path


def chirp(server: ChirpServer, *args: str, auth: str = "address") -> str:
    result = subprocess.run(
        [_chirp_cli(), "-t", "10", "-a", auth, f"127.0.0.1:{server.port}", *args],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode == 0, (args, result.stdout, result.stderr)
    return result.stdout


def test_cli_put_get_cat_stat(server: ChirpServer, root: Path, tmp_path: Path) -> None:
    local = tmp_path / "local.txt"
    local.write_bytes(b"some data\n" * 1000)
    chirp(server, "put", str(local), "/remote.txt")
    assert (root / "remote.txt").read_bytes() == local.read_bytes()
    chirp(server, "get", "/remote.txt", str(tmp_path / "back.txt"))
    assert (tmp_path / "back.txt").read_bytes() == local.read_bytes()
    assert chirp(server, "cat", "/remote.txt") == local.read_text()
    assert re.search(r"^size:\s+10000$", chirp(server, "stat", "/remote.txt"), re.M)


def test_cli_ls_mkdir_mv_rm_rmdir(server: ChirpServer, root: Path, tmp_path: Path) -> None:
    chirp(server, "mkdir", "/dir")
    assert (root / "dir").is_dir()
    (root / "dir" / "a.txt").write_text("12345")
    (root / "dir" / "a.txt").chmod(0o640)
    listing = chirp(server, "ls", "-la", "/dir").splitlines()
    names = {line.split()[-1]: line.split() for line in listing}
    assert set(names) == {".", "..", "a.txt"}
    assert names["a.txt"][0] == "-rw-r-----"
    assert names["a.txt"][4] == "5"
    assert names["."][0] == "drwx------"  # mkdir over Chirp: umask 077, as cctools
    chirp(server, "mv", "/dir/a.txt", "/dir/b.txt")
    assert (root / "dir" / "b.txt").read_text() == "12345"
    assert chirp(server, "ls", "/dir").split() == ["b.txt"]
    chirp(server, "rm", "/dir/b.txt")
    assert not (root / "dir" / "b.txt").exists()
    chirp(server, "rmdir", "/dir")
    assert not (root / "dir").exists()


def test_cli_acls(server: ChirpServer) -> None:
    assert chirp(server, "getacl", "/").splitlines() == ["address:127.0.0.1 rwldpa"]
    chirp(server, "setacl", "/", "hostname:*.example.org", "rl")
    assert chirp(server, "getacl", "/").splitlines() == [
        "address:127.0.0.1 rwldpa",
        "hostname:*.example.org rl",
    ]
    assert chirp(server, "whoami").strip() == "address:127.0.0.1"


def test_cli_unix_login(config: ChirpServerConfig, tmp_path: Path) -> None:
    me = getpass.getuser()
    acl = tmp_path / "unix.acl"
    acl.write_text(f"unix:{me} rwlda\n")
    cfg = replace(config, auth_methods=("unix",), default_acl=acl)
    with _serve(cfg) as server:
        assert chirp(server, "whoami", auth="unix").strip() == f"unix:{me}"
        local = tmp_path / "u.txt"
        local.write_text("via unix")
        chirp(server, "put", str(local), "/u.txt", auth="unix")
        assert (cfg.root / "u.txt").read_text() == "via unix"

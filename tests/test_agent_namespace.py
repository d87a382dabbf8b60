"""The agent's mount table and lexical resolution."""

from __future__ import annotations

import errno
from pathlib import Path

import pytest

from reference_agent.namespace import (
    Access,
    LocalTarget,
    MountlistError,
    Namespace,
    Refused,
    RemoteTarget,
    ServiceDirectory,
    logical_path,
    parse_mountlist,
    read_mountlist,
)

MOUNTLIST = """
# the seeds' SP5 ran with the whole tree remote
/                  /chirp/server.example:9094/root
/tmp               LOCAL
/home              DENY
/secret            ENOENT
/data              chirp://127.0.0.1:9123/exports/data   rx
/scratch           /var/tmp/scratch
/usr               rx
"""


def test_mountlist_parses_every_form() -> None:
    mounts = {m.logical: m for m in parse_mountlist(MOUNTLIST)}
    assert mounts["/data"].physical == "chirp://127.0.0.1:9123/exports/data"
    assert mounts["/data"].access == Access(read=True, write=False, execute=True)
    assert mounts["/usr"].physical == "/usr" and not mounts["/usr"].access.write
    assert mounts["/home"].special is not None


def test_resolution_takes_the_longest_prefix() -> None:
    ns = Namespace(parse_mountlist(MOUNTLIST))
    assert ns.resolve("/etc/passwd") == RemoteTarget(
        "chirp", "server.example", 9094, "/root/etc/passwd"
    )
    assert ns.resolve("/tmp/x") == LocalTarget("/tmp/x")
    assert ns.resolve("/home/alice") == Refused(errno.EACCES)
    assert ns.resolve("/secret") == Refused(errno.ENOENT)
    data = ns.resolve("/data/set/../file")
    assert isinstance(data, RemoteTarget) and (data.port, data.path) == (9123, "/exports/data/file")
    assert ns.resolve("/scratch/job1") == LocalTarget("/var/tmp/scratch/job1")
    assert ns.resolve("/datafile") == RemoteTarget(
        "chirp", "server.example", 9094, "/root/datafile"
    )


def test_dotdot_crosses_the_mount_boundary_logically() -> None:
    ns = Namespace(parse_mountlist("/mnt/remote /chirp/h:1/exp\n"))
    assert ns.resolve("..", cwd="/mnt/remote") == LocalTarget("/mnt")
    assert ns.resolve("../../etc", cwd="/mnt/remote/a") == LocalTarget("/mnt/etc")
    assert ns.resolve("sub/./f", cwd="/mnt/remote") == RemoteTarget("chirp", "h", 1, "/exp/sub/f")


def test_service_prefixes_without_a_mountlist() -> None:
    ns = Namespace()
    assert ns.resolve("/chirp/127.0.0.1:9094/dir/f") == RemoteTarget(
        "chirp", "127.0.0.1", 9094, "/dir/f"
    )
    assert ns.resolve("/chirp/host/f") == RemoteTarget("chirp", "host", 9094, "/f")
    assert ns.resolve("/chirp/host:9") == RemoteTarget("chirp", "host", 9, "/")
    assert ns.resolve("/chirp") == ServiceDirectory("chirp")
    assert ns.resolve("/chirpy/x") == LocalTarget("/chirpy/x")
    assert ns.resolve("f", cwd="/chirp/h:7/d") == RemoteTarget("chirp", "h", 7, "/d/f")


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("relative /x\n", "mountlist:1: logical path must be absolute"),
        ("/a\n", "mountlist:1: expected LOGICAL PHYSICAL"),
        ("/a /b rwz\n", "mountlist:1: unknown access 'rwz'"),
        ("/a /b\n/a /c\n", "mountlist:2: /a is already mounted at mountlist:1"),
        ("/a b/c\n", "unknown access 'b/c'"),
        ("/a /b rw extra\n", "expected LOGICAL PHYSICAL"),
    ],
)
def test_malformed_mountlists_name_the_line(text: str, message: str) -> None:
    with pytest.raises(MountlistError, match=message):
        parse_mountlist(text)


def test_unknown_protocol_and_bad_addresses_fail_before_anything_runs() -> None:
    with pytest.raises(MountlistError, match="unknown protocol 'gopher'"):
        Namespace(parse_mountlist("/g gopher://host/x\n"))
    with pytest.raises(MountlistError, match="bad server address"):
        Namespace(parse_mountlist("/c /chirp/host:notaport/x\n"))


def test_unreadable_mountlist(tmp_path: Path) -> None:
    with pytest.raises(MountlistError, match="cannot read mountlist"):
        read_mountlist(tmp_path / "missing")
    (tmp_path / "bin").write_bytes(b"\xff\xfe\x00")
    with pytest.raises(MountlistError, match="not text"):
        read_mountlist(tmp_path / "bin")


def test_logical_path() -> None:
    assert logical_path("a/../b", "/x") == "/x/b"
    assert logical_path("//a//b/", "/") == "/a/b"
    assert logical_path("../../..", "/a") == "/"


def test_service_paths_carry_a_login() -> None:
    ns = Namespace(services={"chirp": 9094, "ftp": 21})
    target = ns.resolve("/ftp/alice:s%40cret@127.0.0.1:2121/pub/f")
    assert target == RemoteTarget(
        "ftp", "127.0.0.1", 2121, "/pub/f", user="alice", password="s@cret"
    )
    assert isinstance(target, RemoteTarget) and target.endpoint == "ftp://alice@127.0.0.1:2121"


def test_no_service_prefix_shadows_a_system_directory() -> None:
    """xrootd's URL scheme is "root": as a prefix it sent root's home to a server named "lib"."""
    from reference_agent.namespace._resolve import registered_services

    ns = Namespace(services=registered_services())
    assert ns.resolve("/root/lib/python311.zip") == LocalTarget("/root/lib/python311.zip")
    assert ns.resolve("/xrootd/127.0.0.1:1094/f") == RemoteTarget("xrootd", "127.0.0.1", 1094, "/f")
    mounted = Namespace(parse_mountlist("/data root://127.0.0.1:1094/d\n"), registered_services())
    assert mounted.resolve("/data/f") == RemoteTarget("root", "127.0.0.1", 1094, "/d/f")
    assert ns.resolve("/root") == LocalTarget("/root")
    assert "/xrootd" in ns.service_prefixes and "/root" not in ns.service_prefixes

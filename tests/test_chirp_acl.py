"""Chirp ACLs: rights text, subject matching, and cctools' check outcomes on a real tree."""

from __future__ import annotations

import errno
import getpass
import os
from collections.abc import Iterator
from pathlib import Path

import pytest

from chirp_server import _acl as acl
from chirp_server._acl import ChirpAcl
from chirp_server._fs import ServerFS

ALICE = "unix:alice"

# -- rights text ---------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "normal"),
    [
        ("rwlda", "rwldpa"),  # w implies p
        ("r", "r"),
        ("p", "p"),
        ("w", "wp"),
        ("x", "x"),
        ("adlrwx", "rwldpax"),  # order is always rwldpax
        ("", "n"),
        ("n", "n"),
        ("none", "n"),
        ("-", "n"),
        ("v(rwl)", "v(rwl)"),
        ("v", "v()"),
        ("rwlv(rwlvadpx)", "rwlpv(rwldpvax)"),
        ("v(q)r", "rv()"),
    ],
)
def test_text_to_flags_and_back(text: str, normal: str) -> None:
    assert acl.flags_to_text(acl.text_to_flags(text)) == normal


def test_flag_values_match_cctools() -> None:
    assert (acl.READ, acl.WRITE, acl.LIST, acl.DELETE) == (1, 2, 4, 8)
    assert (acl.ADMIN, acl.EXECUTE, acl.PUT, acl.RESERVE) == (16, 32, 64, 1 << 15)
    assert acl.text_to_flags("rwlda") == 1 | 2 | 4 | 8 | 16 | 64


def test_every_flag_combination_round_trips() -> None:
    reserved = (1 << 15) - (1 << 7)  # the v(...) letters
    for flags in range(1 << 16):
        expected = flags | (acl.PUT if flags & acl.WRITE else 0)
        if not flags & acl.RESERVE:
            expected &= ~reserved  # v(...) letters exist only inside v(...)
        assert acl.text_to_flags(acl.flags_to_text(flags)) == expected, bin(flags)


@pytest.mark.parametrize(
    ("pattern", "subject", "expected"),
    [
        ("unix:alice", "unix:alice", True),
        ("unix:alice", "unix:alicex", False),
        ("unix:*", "unix:alice", True),
        ("unix:*", "address:1.2.3.4", False),
        ("hostname:*.nd.edu", "hostname:ccl.nd.edu", True),
        ("hostname:*.nd.edu", "hostname:nd.edu.evil", False),
        ("*", "anything", True),
        ("*:127.0.0.1", "address:127.0.0.1", True),
        ("a*b*c", "aXb*c", True),  # only the first * is a wildcard
        ("a*b*c", "aXbYc", False),
        ("ab*ba", "aba", True),  # head and tail may overlap, as in cctools
        ("abc*", "ab", False),
    ],
)
def test_subject_matches(pattern: str, subject: str, expected: bool) -> None:
    assert acl.subject_matches(pattern, subject) is expected


def test_parse_acl_skips_what_cctools_skips() -> None:
    text = (
        "unix:alice rwlda\n"
        "unix:bob n\n"  # "n" is not a rights letter: the line is dropped
        "nospace\n"
        " unix:leading rw\n"
        "unix:carol   rl\n"
        "unix:dave rwlq junk\n"  # rights stop at the first other character
        "unix:tab\tx rw\n"  # the subject runs to the first space
        "unix:last v(rw)"
    )
    assert acl.parse_acl(text) == [
        ("unix:alice", acl.text_to_flags("rwlda")),
        ("unix:carol", acl.READ | acl.LIST),
        ("unix:dave", acl.text_to_flags("rwl")),
        ("unix:tab\tx", acl.text_to_flags("rw")),
        ("unix:last", acl.text_to_flags("v(rw)")),
    ]


def test_flags_for_requests() -> None:
    assert acl.flags_from_open(os.O_RDONLY) == acl.READ
    assert acl.flags_from_open(os.O_WRONLY) == acl.WRITE
    assert acl.flags_from_open(os.O_RDWR) == acl.READ | acl.WRITE
    assert acl.flags_from_open(os.O_RDONLY | os.O_CREAT) == acl.WRITE
    assert acl.flags_from_access(os.F_OK) == acl.READ
    assert acl.flags_from_access(os.W_OK | os.X_OK) == acl.WRITE | acl.EXECUTE


# -- checks on a tree ---------------------------------------------------------------------------


@pytest.fixture
def tree(tmp_path: Path) -> Iterator[ServerFS]:
    """/ (alice rl), /sub (alice rwlda), /sub2 (nobody), /noacl (no ACL file)."""
    root = tmp_path / "root"
    for d in ("sub", "sub2", "noacl"):
        (root / d).mkdir(parents=True)
    (root / ".__acl").write_text("unix:alice rl\n")
    (root / "sub" / ".__acl").write_text("unix:alice rwlda\n")
    (root / "sub2" / ".__acl").write_text("unix:bob rwlda\n")
    (root / "sub" / "file").write_text("x")
    (root / "sub2" / "target").write_text("y")
    os.symlink("/sub2/target", root / "sub" / "lnk")
    fs = ServerFS(root)
    yield fs
    fs.close()


def _errno(call: object, *args: object) -> int:
    assert callable(call)
    try:
        call(*args)
    except OSError as exc:
        return exc.errno or 0
    return 0


def test_rights_in_directories(tree: ServerFS) -> None:
    policy = ChirpAcl(tree)
    assert policy.rights("/", ALICE) == acl.READ | acl.LIST
    assert policy.rights("/sub", ALICE) == acl.text_to_flags("rwlda")
    assert policy.rights("/sub2", ALICE) == 0
    assert policy.rights("/noacl", ALICE) is None


def test_check_dir_errno_outcomes(tree: ServerFS) -> None:
    policy = ChirpAcl(tree)
    assert _errno(policy.check_dir, "/sub", ALICE, acl.WRITE) == 0
    assert _errno(policy.check_dir, "/", ALICE, acl.WRITE) == errno.EACCES
    assert _errno(policy.check_dir, "/noacl", ALICE, acl.LIST) == errno.EACCES
    assert _errno(policy.check_dir, "/missing", ALICE, acl.LIST) == errno.ENOENT


def test_delete_is_checked_one_directory_up(tree: ServerFS) -> None:
    policy = ChirpAcl(tree)
    # Deleting /sub needs d in / (alice has rl there) ...
    assert _errno(policy.check_dir, "/sub", ALICE, acl.DELETE) == errno.EACCES
    assert _errno(policy.check_link, "/sub/file", ALICE, acl.DELETE) == errno.EACCES
    # ... while check_dir on the entry itself looks at /sub, where alice has d.
    assert _errno(policy.check_dir, "/sub/file", ALICE, acl.DELETE) == 0
    # With other rights asked too, the directory's own d counts as well.
    assert _errno(policy.check_dir, "/sub", ALICE, acl.READ | acl.DELETE) == 0


def test_check_follows_symlinks_but_check_link_does_not(tree: ServerFS) -> None:
    policy = ChirpAcl(tree)
    assert _errno(policy.check, "/sub/file", ALICE, acl.READ) == 0
    assert _errno(policy.check, "/sub/lnk", ALICE, acl.READ) == errno.EACCES  # judged in /sub2
    assert _errno(policy.check_link, "/sub/lnk", ALICE, acl.READ) == 0  # judged in /sub
    assert _errno(policy.check, "/sub/new", ALICE, acl.WRITE) == 0  # new names: their dir
    assert _errno(policy.check, "/new", ALICE, acl.WRITE) == errno.EACCES


def test_acl_file_needs_admin_and_is_never_deleted(tree: ServerFS) -> None:
    policy = ChirpAcl(tree)
    assert _errno(policy.check, "/sub/.__acl", ALICE, acl.WRITE) == 0  # alice has a
    tree.write_file("/sub/.__acl", b"unix:alice rwld\n")
    assert _errno(policy.check, "/sub/.__acl", ALICE, acl.WRITE) == errno.EACCES
    assert _errno(policy.check, "/sub/file", ALICE, acl.WRITE) == 0
    assert _errno(policy.check_link, "/sub/.__acl", ALICE, acl.DELETE) == errno.EACCES


def test_default_acl_and_inheritance(tree: ServerFS, tmp_path: Path) -> None:
    default = tmp_path / "default.acl"
    default.write_text("unix:* rl\n")
    policy = ChirpAcl(tree, default_acl=default)
    assert policy.rights("/noacl", "unix:zed") == acl.READ | acl.LIST
    # cctools quirk: a directory that does not exist gets the default ACL too.
    assert _errno(policy.check_dir, "/missing", "unix:zed", acl.LIST) == 0
    inherit = ChirpAcl(tree, inherit_default=True)
    assert inherit.rights("/noacl", ALICE) == acl.READ | acl.LIST  # from /
    assert inherit.rights("/noacl", "unix:zed") == 0


def test_read_only_grants_at_most_read_and_list(tree: ServerFS) -> None:
    policy = ChirpAcl(tree, read_only=True)
    assert policy.rights("/sub", ALICE) == acl.READ | acl.LIST
    assert _errno(policy.check, "/sub/file", ALICE, acl.WRITE) == errno.EACCES


def test_set_replaces_adds_and_removes(tree: ServerFS, tmp_path: Path) -> None:
    policy = ChirpAcl(tree)
    policy.set("/sub", "unix:bob", acl.text_to_flags("rl"))
    policy.set("/sub", ALICE, acl.text_to_flags("rwl"))
    assert (tmp_path / "root/sub/.__acl").read_text() == "unix:alice rwlp\nunix:bob rl\n"
    policy.set("/sub", "unix:bob", 0)
    policy.set("/sub", "unix:nobody", 0)  # written as "n", never read back
    assert (tmp_path / "root/sub/.__acl").read_text() == "unix:alice rwlp\nunix:nobody n\n"
    assert policy.effective("/sub") == [(ALICE, acl.text_to_flags("rwl"))]
    policy.set("/sub", ALICE, acl.text_to_flags("r") | acl.ADMIN, reset=True)
    assert policy.effective("/sub") == [(ALICE, acl.READ | acl.ADMIN)]
    assert _errno(policy.set, "/sub/file", ALICE, acl.READ) == errno.ENOTDIR
    assert not [p for p in (tmp_path / "root/sub").iterdir() if p.name.startswith(".__acl.")]


def test_set_starts_from_the_default_acl(tree: ServerFS, tmp_path: Path) -> None:
    default = tmp_path / "default.acl"
    default.write_text("address:127.0.0.1 rwlda\n")
    ChirpAcl(tree, default_acl=default).set("/noacl", "unix:bob", acl.READ)
    text = (tmp_path / "root/noacl/.__acl").read_text()
    assert text == "address:127.0.0.1 rwldpa\nunix:bob r\n"


def test_init_root(tmp_path: Path) -> None:
    fs = ServerFS(tmp_path / "empty")
    try:
        ChirpAcl(fs, default_acl=tmp_path / "none").init_root("someone")
        assert (tmp_path / "empty/.__acl").read_text() == "unix:someone rwlda\n"
        (tmp_path / "empty/.__acl").write_text("unix:x r\n")
        ChirpAcl(fs).init_root(getpass.getuser())
        assert (tmp_path / "empty/.__acl").read_text() == "unix:x r\n"  # kept
    finally:
        fs.close()
    default = tmp_path / "default.acl"
    default.write_text("unix:* rl\n")
    fs = ServerFS(tmp_path / "withdefault")
    try:
        ChirpAcl(fs, default_acl=default).init_root("someone")
        assert not (tmp_path / "withdefault/.__acl").exists()
    finally:
        fs.close()


def test_init_copy_and_reserve(tree: ServerFS, tmp_path: Path) -> None:
    policy = ChirpAcl(tree)
    tree.mkdir("/sub/new", 0o755)
    assert policy.init_copy("/sub/new")
    assert policy.effective("/sub/new") == policy.effective("/sub")
    tree.write_file("/sub/.__acl", b"unix:alice v(rl)\nunix:bob v\n")
    tree.mkdir("/sub/r1", 0o755)
    assert policy.init_reserve("/sub/r1", ALICE)
    assert (tmp_path / "root/sub/r1/.__acl").read_text() == "unix:alice rl\n"
    tree.mkdir("/sub/r2", 0o755)
    assert policy.init_reserve("/sub/r2", "unix:bob")  # bare v reserves rwlda
    assert (tmp_path / "root/sub/r2/.__acl").read_text() == "unix:bob rwlda\n"
    tree.mkdir("/noacl/r3", 0o755)
    assert not policy.init_reserve("/noacl/r3", ALICE)  # no ACL above: refused

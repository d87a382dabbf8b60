"""A program that uses files the ways real programs do and prints what the kernel says.

Run as ``python file_semantics.py SCENARIO DIRECTORY``: it makes DIRECTORY, plays the
scenario in it and prints one JSON list of what each step saw (bytes as hex). Natively on
a local disk it prints the kernel's answers; ``tests/test_file_semantics.py`` runs it under
the agent on a remote mount and compares. Every step is deterministic: processes take
turns through pipes.
"""

from __future__ import annotations

import contextlib
import ctypes
import errno
import fcntl
import json
import mmap
import os
import sqlite3
import sys
from collections.abc import Callable

Seen = list[list[object]]


def _attempt(action: Callable[[], object]) -> object:
    """The result, or the errno's name."""
    try:
        return action()
    except OSError as exc:
        return errno.errorcode.get(exc.errno or 0, str(exc.errno))


def _hex(data: object) -> object:
    return data.hex() if isinstance(data, bytes) else data


class Scenario:
    """The directory a scenario works in and what it saw."""

    def __init__(self, base: str) -> None:
        self.base = base
        self.seen: Seen = []

    def path(self, name: str) -> str:
        return os.path.join(self.base, name)

    def note(self, step: str, *values: object) -> None:
        self.seen.append([step, *(_hex(value) for value in values)])

    def whole(self, name: str) -> object:
        def read() -> bytes:
            with open(self.path(name), "rb") as file:
                return file.read()

        return _hex(_attempt(read))

    def put(self, name: str, data: bytes) -> None:
        with open(self.path(name), "wb") as file:
            file.write(data)


def descriptors(s: Scenario) -> None:
    """Offsets shared through fork and dup, O_APPEND set late, reopening through /proc."""
    fd = os.open(s.path("a"), os.O_RDWR | os.O_CREAT | os.O_TRUNC, 0o644)
    os.write(fd, b"hello ")
    child = os.fork()
    if child == 0:
        os.write(fd, b"child ")
        os._exit(0)
    os.waitpid(child, 0)
    os.write(fd, b"parent")
    s.note("fork shares the offset", os.lseek(fd, 0, os.SEEK_CUR), os.pread(fd, 100, 0))
    os.lseek(fd, 0, os.SEEK_SET)
    flags = fcntl.fcntl(fd, fcntl.F_GETFL)
    fcntl.fcntl(fd, fcntl.F_SETFL, flags | os.O_APPEND)
    os.write(fd, b"+app")
    s.note("O_APPEND set by fcntl", os.lseek(fd, 0, os.SEEK_CUR), s.whole("a"))
    os.close(fd)

    fd = os.open(s.path("d"), os.O_RDWR | os.O_CREAT | os.O_TRUNC, 0o644)
    os.pwrite(fd, b"end", 10)
    os.write(fd, b"start")
    s.note("a hole, then a write at 0", os.pread(fd, 100, 0), os.fstat(fd).st_size)
    moved = os.dup2(fd, 40)
    os.close(fd)
    os.write(moved, b"!")
    s.note("through dup2 after close", os.lseek(moved, 0, os.SEEK_CUR), s.whole("d"))
    again = os.open(f"/proc/self/fd/{moved}", os.O_RDWR)
    os.write(again, b"PROC")
    s.note("reopened through /proc", os.pread(moved, 100, 0), os.lseek(again, 0, os.SEEK_CUR))
    os.close(again)
    os.close(moved)


def names(s: Scenario) -> None:
    """Renames and unlinks of open files, O_TRUNC under a reader, reading past writes."""
    fd = os.open(s.path("e"), os.O_RDWR | os.O_CREAT | os.O_TRUNC, 0o644)
    os.write(fd, b"one")
    os.rename(s.path("e"), s.path("e2"))
    os.write(fd, b"two")
    s.note("written after a rename", os.pread(fd, 100, 0), s.whole("e"), s.whole("e2"))
    os.close(fd)
    fd = os.open(s.path("f"), os.O_RDWR | os.O_CREAT | os.O_TRUNC, 0o644)
    os.write(fd, b"gone")
    os.unlink(s.path("f"))
    os.write(fd, b"still")
    s.note("written after an unlink", os.pread(fd, 100, 0), os.fstat(fd).st_size, s.whole("f"))
    os.close(fd)

    s.put("c", b"abcdefghij")
    reader = os.open(s.path("c"), os.O_RDONLY)
    first = os.read(reader, 4)
    truncating = os.open(s.path("c"), os.O_WRONLY | os.O_TRUNC)
    os.write(truncating, b"XY")
    os.close(truncating)
    rest = os.read(reader, 100)
    s.note(
        "O_TRUNC under a reader", first, rest, os.pread(reader, 100, 0), os.fstat(reader).st_size
    )
    os.close(reader)

    writer = os.open(s.path("n"), os.O_WRONLY | os.O_CREAT, 0o644)
    reader = os.open(s.path("n"), os.O_RDONLY)
    os.write(writer, b"abc")
    early = os.read(reader, 10)
    os.write(writer, b"def")
    s.note("a reader follows a writer", early, os.read(reader, 10), os.fstat(reader).st_size)
    os.close(writer)
    os.close(reader)


def sizes(s: Scenario) -> None:
    """Truncating up and down, seeking past the end, vectors, positions far away."""
    fd = os.open(s.path("g"), os.O_RDWR | os.O_CREAT, 0o644)
    os.write(fd, b"abc")
    os.ftruncate(fd, 8)
    s.note("grown", os.pread(fd, 20, 0), os.lseek(fd, 0, os.SEEK_END))
    s.note("seek data", _attempt(lambda: os.lseek(fd, 100, os.SEEK_DATA)))
    s.note("negative seek", _attempt(lambda: os.lseek(fd, -1, os.SEEK_SET)))
    os.ftruncate(fd, 2)
    os.lseek(fd, 5, os.SEEK_SET)
    os.write(fd, b"!")
    s.note("cut, then written past the end", s.whole("g"), os.fstat(fd).st_size)
    os.close(fd)

    fd = os.open(s.path("v"), os.O_RDWR | os.O_CREAT, 0o644)
    os.writev(fd, [b"", b"ab", b"", b"cdef"])
    os.pwritev(fd, [b"X", b"Y"], 1)
    os.lseek(fd, 0, os.SEEK_SET)
    empty, small, large = bytearray(0), bytearray(3), bytearray(10)
    count = os.readv(fd, [empty, small, large])
    s.note("vectors", count, bytes(small), bytes(large), os.lseek(fd, 0, os.SEEK_CUR))
    os.close(fd)


def mappings(s: Scenario) -> None:
    """A shared mapping next to writes through the descriptor that made it; a private
    mapping made again after writes through two descriptors."""
    fd = os.open(s.path("m"), os.O_RDWR | os.O_CREAT | os.O_TRUNC, 0o644)
    os.write(fd, b"0123456789")
    mapped = mmap.mmap(fd, 10)
    mapped[0:3] = b"abc"
    mapped.flush()
    s.note("a store, read through the descriptor", os.pread(fd, 100, 0))
    os.write(fd, b"XY")
    s.note("a write, seen by both", os.pread(fd, 100, 0), bytes(mapped[:10]))
    mapped.close()
    os.close(fd)
    s.note("after close", s.whole("m"))

    s.put("p", b"0123456789")
    fd = os.open(s.path("p"), os.O_RDWR)
    first = mmap.mmap(fd, 10, flags=mmap.MAP_PRIVATE)
    before = bytes(first[:10])
    first.close()
    os.pwrite(fd, b"AB", 0)
    other = os.open(s.path("p"), os.O_RDWR)
    os.pwrite(other, b"CD", 4)
    os.close(other)
    again = mmap.mmap(fd, 10, flags=mmap.MAP_PRIVATE)
    s.note("a private mapping made after writes", before, bytes(again[:10]))
    again.close()
    os.close(fd)

    # A map that outlives its descriptor (Python's mmap keeps one of its own: libc's here).
    s.put("q", b"0123456789")
    fd = os.open(s.path("q"), os.O_RDWR)
    _LIBC.mmap.restype = ctypes.c_void_p
    _LIBC.mmap.argtypes = [ctypes.c_void_p, ctypes.c_size_t, ctypes.c_int, ctypes.c_int,
                           ctypes.c_int, ctypes.c_long]  # fmt: skip
    _LIBC.munmap.argtypes = [ctypes.c_void_p, ctypes.c_size_t]
    address = _LIBC.mmap(None, 10, mmap.PROT_READ | mmap.PROT_WRITE, mmap.MAP_SHARED, fd, 0)
    os.close(fd)
    ctypes.memmove(address, b"abc", 3)
    _LIBC.munmap(address, 10)
    s.note("stored through a map whose descriptor was closed", s.whole("q"))


def processes(s: Scenario) -> None:
    """Two processes taking turns: appends through their own opens, writes through one
    shared description, a reader seeing each write made before it was told."""
    turn_r, turn_w = os.pipe()
    back_r, back_w = os.pipe()

    def in_turns(child_step: Callable[[int], object], parent_step: Callable[[int], object]) -> None:
        child = os.fork()
        if child == 0:
            for i in range(3):
                os.read(turn_r, 1)
                child_step(i)
                os.write(back_w, b"x")
            os._exit(0)
        for i in range(3):
            parent_step(i)
            os.write(turn_w, b"x")
            os.read(back_r, 1)
        os.waitpid(child, 0)

    s.put("log", b"")
    parents = os.open(s.path("log"), os.O_WRONLY | os.O_APPEND)
    childs = os.open(s.path("log"), os.O_WRONLY | os.O_APPEND)
    in_turns(lambda i: os.write(childs, b"c%d;" % i), lambda i: os.write(parents, b"p%d;" % i))
    s.note("appends in turns", s.whole("log"))
    os.close(parents)
    os.close(childs)

    shared = os.open(s.path("shared"), os.O_RDWR | os.O_CREAT, 0o644)
    in_turns(lambda i: os.write(shared, b"C%d" % i), lambda i: os.write(shared, b"P%d" % i))
    s.note("one description, in turns", s.whole("shared"), os.lseek(shared, 0, os.SEEK_CUR))
    os.close(shared)

    writer = os.open(s.path("seen"), os.O_RDWR | os.O_CREAT, 0o644)
    reader = os.open(s.path("seen"), os.O_RDONLY)
    seen_r, seen_w = os.pipe()
    in_turns(
        lambda i: os.write(seen_w, os.pread(reader, 100, 0).ljust(8, b".")),
        lambda i: os.write(writer, b"%d" % i),
    )
    s.note("a reader in the other process", os.read(seen_r, 24))
    os.close(writer)
    os.close(reader)


def directories(s: Scenario) -> None:
    """A working directory and a directory descriptor whose directories are renamed (a
    new directory then made under the old name), *at calls through the descriptor, and
    ".." after a symlink (in a path, in a working directory entered through one, relative to
    a descriptor opened through one and after fchdir to it), and a
    working directory removed (a new directory then made under its name)."""
    os.makedirs(s.path("a/sub"))
    home = os.getcwd()
    os.chdir(s.path("a"))
    os.rename(s.path("a"), s.path("b"))
    os.mkdir(s.path("a"))
    with open("written", "w") as file:
        file.write("here")
    s.note("a write in the moved working directory", sorted(os.listdir(s.path("a"))))
    s.note("where it landed", sorted(os.listdir(s.path("b"))), os.path.basename(os.getcwd()))
    opened = _attempt(lambda: os.open("sub", os.O_RDONLY | os.O_DIRECTORY))
    os.chdir(home)
    if not isinstance(opened, int):
        s.note("sub opened from the moved working directory", opened)
        return
    directory = opened
    os.rename(s.path("b/sub"), s.path("b/moved"))
    made = os.open("f", os.O_WRONLY | os.O_CREAT, 0o644, dir_fd=directory)
    os.close(made)
    os.mkdir("d", dir_fd=directory)
    os.rename("f", "g", src_dir_fd=directory, dst_dir_fd=directory)
    os.symlink("g", "l", dir_fd=directory)
    s.note(
        "through a descriptor of a moved directory",
        sorted(os.listdir(directory)),
        os.readlink("l", dir_fd=directory),
        _attempt(lambda: os.rmdir("missing", dir_fd=directory)),
    )
    os.fchdir(directory)
    s.note("fchdir into it", os.path.basename(os.getcwd()), sorted(os.listdir(".")))
    os.chdir(home)
    os.close(directory)

    os.makedirs(s.path("real/deep"))
    os.symlink("real/deep", s.path("link"))
    open(s.path("link/../beside-the-target"), "w").close()
    os.chdir(s.path("link"))
    open("../from-the-linked-directory", "w").close()
    s.note("entered through a link", os.path.basename(os.getcwd()))
    os.chdir(home)
    linked = os.open(s.path("link"), os.O_RDONLY | os.O_DIRECTORY)
    os.close(os.open("../through-a-descriptor", os.O_WRONLY | os.O_CREAT, 0o644, dir_fd=linked))
    os.fchdir(linked)
    os.close(os.open("../after-fchdir", os.O_WRONLY | os.O_CREAT, 0o644))
    os.chdir(home)
    os.close(linked)
    s.note("where '..' after a link led", sorted(os.listdir(s.path("real"))))

    os.mkdir(s.path("gone"))
    os.chdir(s.path("gone"))
    os.rmdir(s.path("gone"))
    os.mkdir(s.path("gone"))
    outcome = _attempt(lambda: os.close(os.open("x", os.O_WRONLY | os.O_CREAT, 0o644)))
    os.chdir(home)
    s.note(
        "a file made in a removed working directory", outcome, sorted(os.listdir(s.path("gone")))
    )


def replaced(s: Scenario) -> None:
    """Descriptors of files whose names were renamed over or unlinked and made again: a
    change through them stays with their file, never the new one under the name."""
    s.put("a", b"new")
    s.put("b", b"old")
    os.chmod(s.path("a"), 0o600)
    os.chmod(s.path("b"), 0o600)
    fd = os.open(s.path("b"), os.O_RDWR)
    os.rename(s.path("a"), s.path("b"))
    os.fchmod(fd, 0o640)
    os.write(fd, b"OLD")
    mode = os.stat(s.path("b")).st_mode & 0o777
    s.note("fchmod after a rename over its name", oct(mode), oct(os.fstat(fd).st_mode & 0o777))
    os.close(fd)
    s.note("the new file under the name", s.whole("b"))

    fd = os.open(s.path("c"), os.O_RDWR | os.O_CREAT, 0o600)
    os.unlink(s.path("c"))
    s.put("c", b"another")
    os.chmod(s.path("c"), 0o600)
    os.fchmod(fd, 0o640)
    os.write(fd, b"gone")
    os.close(fd)
    mode = os.stat(s.path("c")).st_mode & 0o777
    s.note("fchmod after an unlink and a new file", oct(mode), s.whole("c"))


def locks(s: Scenario) -> None:
    """Record locks and flock locks are on the file, not its name: another process asking
    through the name a locked file was renamed to is refused, and a new file made under
    the name of an unlinked locked one is another file, free to lock."""
    s.put("a", b"locked")
    holder = os.open(s.path("a"), os.O_RDWR)
    fcntl.lockf(holder, fcntl.LOCK_EX)
    fcntl.flock(holder, fcntl.LOCK_EX)

    def asked_by_another_process(name: str) -> object:
        answers_r, answers_w = os.pipe()
        child = os.fork()
        if child == 0:
            fd = os.open(s.path(name), os.O_RDWR)
            record = _attempt(lambda: fcntl.lockf(fd, fcntl.LOCK_EX | fcntl.LOCK_NB))
            whole = _attempt(lambda: fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB))
            os.write(answers_w, json.dumps([record, whole]).encode())
            os._exit(0)
        os.waitpid(child, 0)
        os.close(answers_w)
        answers = json.loads(os.read(answers_r, 1000))
        os.close(answers_r)
        return answers

    s.note("locked, by its name", asked_by_another_process("a"))
    os.rename(s.path("a"), s.path("b"))
    s.note("locked, by the name it was renamed to", asked_by_another_process("b"))
    os.close(holder)

    s.put("c", b"locked")
    holder = os.open(s.path("c"), os.O_RDWR)
    fcntl.lockf(holder, fcntl.LOCK_EX)
    fcntl.flock(holder, fcntl.LOCK_EX)
    os.unlink(s.path("c"))
    s.put("c", b"another file")
    s.note("a new file under the unlinked name", asked_by_another_process("c"))
    os.close(holder)


_LIBC = ctypes.CDLL(None, use_errno=True)
_UTIME_OMIT = (1 << 30) - 2


class _Timespec(ctypes.Structure):
    _fields_ = [("seconds", ctypes.c_long), ("nanoseconds", ctypes.c_long)]


class _Dirent(ctypes.Structure):
    _fields_ = [
        ("ino", ctypes.c_ulong),
        ("off", ctypes.c_long),
        ("reclen", ctypes.c_ushort),
        ("type", ctypes.c_ubyte),
        ("name", ctypes.c_char * 256),
    ]


def _utimensat(path: str, atime: tuple[int, int], mtime: tuple[int, int]) -> int:
    times = (_Timespec * 2)(_Timespec(*atime), _Timespec(*mtime))
    return int(_LIBC.utimensat(-100, os.fsencode(path), times, 0))


def links(s: Scenario) -> None:
    """Hard links (one file under two names), symbolic links, times set one at a time."""
    s.put("a", b"hello")
    os.link(s.path("a"), s.path("b"))
    s.note("a hard link", os.stat(s.path("a")).st_nlink)
    with open(s.path("b"), "ab") as other_name:
        other_name.write(b" world")
    s.note("written through the other name", s.whole("a"))
    os.unlink(s.path("a"))
    s.note("one name unlinked", os.stat(s.path("b")).st_nlink, s.whole("b"))

    os.utime(s.path("b"), ns=(1_000_000_000_000_000_000, 1_100_000_000_000_000_000))
    omitted_atime = _utimensat(s.path("b"), (0, _UTIME_OMIT), (1_200_000_000, 0))
    st = os.stat(s.path("b"))
    s.note("mtime alone", omitted_atime, st.st_atime_ns, st.st_mtime_ns)
    omitted_mtime = _utimensat(s.path("b"), (1_300_000_000, 0), (0, _UTIME_OMIT))
    st = os.stat(s.path("b"))
    s.note("atime alone", omitted_mtime, st.st_atime_ns, st.st_mtime_ns)

    os.symlink("b", s.path("l"))
    os.chmod(s.path("l"), 0o600)
    s.note(
        "a symlink", os.readlink(s.path("l")), os.lstat(s.path("l")).st_size,
        oct(os.stat(s.path("b")).st_mode & 0o777), os.stat(s.path("l")).st_size,
    )  # fmt: skip
    os.symlink("target", s.path("dangling"))
    s.note("dangling", _attempt(lambda: os.stat(s.path("dangling"))), s.whole("dangling"))
    made = os.open(s.path("dangling"), os.O_WRONLY | os.O_CREAT, 0o644)
    os.write(made, b"made through the link")
    os.close(made)
    link = _attempt(lambda: os.readlink(s.path("dangling")))
    s.note("created through a dangling link", s.whole("target"), link)
    s.note(
        "access", os.access(s.path("b"), os.R_OK), os.access(s.path("b"), os.X_OK),
        os.access(s.path("nothing"), os.F_OK),
    )  # fmt: skip

    s.put("shared", b"base;")
    os.symlink("shared", s.path("to-shared"))
    os.link(s.path("shared"), s.path("shared-too"))
    one = os.open(s.path("shared"), os.O_WRONLY | os.O_APPEND)
    two = os.open(s.path("to-shared"), os.O_WRONLY | os.O_APPEND)
    three = os.open(s.path("shared-too"), os.O_WRONLY | os.O_APPEND)
    for fd, text in ((one, b"one;"), (two, b"two;"), (three, b"three;"), (one, b"four;")):
        os.write(fd, text)
    for fd in (two, three, one):
        os.close(fd)
    s.note("one file open under three names", s.whole("shared"), s.whole("shared-too"))

    reader = os.open(s.path("to-shared"), os.O_RDONLY)
    writer = os.open(s.path("shared-too"), os.O_RDWR)
    before = os.pread(reader, 4, 0)
    os.pwrite(writer, b"AB", 0)
    after_write = os.pread(reader, 40, 0)
    os.ftruncate(writer, 5)
    s.note(
        "a reader by one name, a writer by another", before, after_write, os.pread(reader, 40, 0)
    )
    os.truncate(s.path("shared"), 3)
    s.note("truncated by a third name", os.pread(reader, 40, 0), os.fstat(reader).st_size)
    os.close(writer)
    os.close(reader)


def appends(s: Scenario) -> None:
    """pwrite on an O_APPEND descriptor appends (Linux ignores its offset), on a new file and
    on one with bytes; a truncate by name is seen through descriptors already open."""
    fd = os.open(s.path("new"), os.O_RDWR | os.O_CREAT | os.O_APPEND, 0o644)
    os.write(fd, b"0123")
    s.note("pwrite appends to a new file", os.pwrite(fd, b"XY", 0), os.pread(fd, 20, 0))
    os.close(fd)
    fd = os.open(s.path("mirrored"), os.O_RDWR | os.O_CREAT, 0o644)
    os.write(fd, b"0123")
    s.note(
        "RWF_APPEND on a new file",
        os.pwritev(fd, [b"Q"], 1, os.RWF_APPEND),
        os.write(fd, b"!"),
        os.pread(fd, 20, 0),
    )
    os.close(fd)
    s.put("old", b"abcdef")
    fd = os.open(s.path("old"), os.O_RDWR | os.O_APPEND)
    s.note("read first", os.pread(fd, 3, 0))
    s.note("pwrite appends to a file", os.pwrite(fd, b"XY", 1), os.pread(fd, 20, 0))
    os.close(fd)
    fd = os.open(s.path("old"), os.O_RDWR)
    os.lseek(fd, 2, os.SEEK_SET)
    s.note(
        "RWF_APPEND appends",
        os.pwritev(fd, [b"Q"], 0, os.RWF_APPEND),
        os.pwritev(fd, [b"R"], -1, os.RWF_APPEND),
        os.lseek(fd, 0, os.SEEK_CUR),
        os.pread(fd, 20, 0),
    )
    os.close(fd)

    s.put("cut", b"0123456789")
    reader = os.open(s.path("cut"), os.O_RDONLY)
    writer = os.open(s.path("cut"), os.O_RDWR)
    s.note("read before", os.pread(reader, 4, 0))
    os.truncate(s.path("cut"), 3)
    s.note("truncated by name", os.pread(reader, 20, 0), os.fstat(writer).st_size)
    os.pwrite(writer, b"!", 5)
    os.close(writer)
    s.note("written past the cut", os.pread(reader, 20, 0), s.whole("cut"))
    s.note(
        "seek data and hole", os.lseek(reader, 0, os.SEEK_DATA), os.lseek(reader, 0, os.SEEK_HOLE)
    )
    os.close(reader)

    fd = os.open(s.path("touched"), os.O_RDWR | os.O_CREAT, 0o644)
    os.write(fd, b"data")
    os.utime(s.path("touched"), ns=(1_500_000_000_000_000_000, 1_500_000_000_000_000_000))
    os.close(fd)
    s.note("times set by name while open for writing", os.stat(s.path("touched")).st_mtime_ns)


def listings(s: Scenario) -> None:
    """A directory read in parts with telldir and seekdir, emptied while it is read, and the
    errors of removing and renaming directories."""
    os.mkdir(s.path("dir"))
    for i in range(50):
        s.put(f"dir/f{i:02d}", b"")
    _LIBC.opendir.restype = ctypes.c_void_p
    _LIBC.readdir.restype = ctypes.c_void_p
    _LIBC.readdir.argtypes = [ctypes.c_void_p]
    _LIBC.telldir.restype = ctypes.c_long
    _LIBC.telldir.argtypes = [ctypes.c_void_p]
    _LIBC.seekdir.argtypes = [ctypes.c_void_p, ctypes.c_long]
    _LIBC.closedir.argtypes = [ctypes.c_void_p]
    stream = _LIBC.opendir(os.fsencode(s.path("dir")))

    def entry() -> str | None:
        found = _LIBC.readdir(stream)
        if not found:
            return None
        return str(ctypes.cast(found, ctypes.POINTER(_Dirent)).contents.name.decode())

    first = [entry() for _ in range(20)]
    place = _LIBC.telldir(stream)
    after = [entry() for _ in range(5)]
    _LIBC.seekdir(stream, place)
    again = [entry() for _ in range(5)]
    rest = []
    while (name := entry()) is not None:
        rest.append(name)
    _LIBC.closedir(stream)
    seen = sorted(str(name) for name in first + after + rest)
    s.note("seekdir back to telldir", after == again, len(seen), seen[:3])

    with os.scandir(s.path("dir")) as listing:
        numbers = [e.inode() == os.stat(e.path, follow_symlinks=False).st_ino for e in listing]
    s.note("listed inode numbers are stat's", len(numbers), all(numbers))

    removed = 0
    with os.scandir(s.path("dir")) as listing:
        for each in listing:
            os.unlink(each.path)
            removed += 1
    s.note("emptied while listed", removed, os.listdir(s.path("dir")))
    s.put("file", b"")
    os.mkdir(s.path("full"))
    s.put("full/x", b"")
    s.note(
        "directory errors",
        _attempt(lambda: os.rmdir(s.path("file"))),
        _attempt(lambda: os.rmdir(s.path("full"))),
        _attempt(lambda: os.rename(s.path("file"), s.path("full"))),
        _attempt(lambda: os.rename(s.path("full"), s.path("file"))),
        _attempt(lambda: os.rename(s.path("full"), s.path("full/sub"))),
        _attempt(lambda: os.mkdir(s.path("file/x"))),
        _attempt(lambda: os.truncate(s.path("full"), 0)),
    )
    s.note("rmdir", _attempt(lambda: os.rmdir(s.path("dir"))), sorted(os.listdir(s.base)))


def database(s: Scenario) -> None:
    """Three processes inserting into one sqlite database at once (its locks, its journal,
    its fsyncs, and its check that the database file is still the one it opened)."""
    path = s.path("t.db")
    with contextlib.closing(sqlite3.connect(path)) as connection:
        connection.execute("create table t(x)")
        connection.commit()
    children = []
    for k in range(3):
        child = os.fork()
        if child == 0:
            code = 0
            try:
                with contextlib.closing(sqlite3.connect(path, timeout=60)) as connection:
                    for i in range(20):
                        connection.execute("insert into t values (?)", (k * 100 + i,))
                        connection.commit()
            except sqlite3.Error:
                code = 1
            os._exit(code)
        children.append(child)
    codes = [os.waitstatus_to_exitcode(os.waitpid(child, 0)[1]) for child in children]
    with contextlib.closing(sqlite3.connect(path)) as connection:
        rows = list(connection.execute("select count(*), sum(x) from t").fetchone())
        check = connection.execute("pragma integrity_check").fetchone()[0]
    s.note("three writers", codes, rows, check)


SCENARIOS: dict[str, Callable[[Scenario], None]] = {
    "descriptors": descriptors,
    "names": names,
    "sizes": sizes,
    "mappings": mappings,
    "processes": processes,
    "directories": directories,
    "replaced": replaced,
    "locks": locks,
    "links": links,
    "appends": appends,
    "listings": listings,
    "database": database,
}


def main() -> None:
    name, base = sys.argv[1], sys.argv[2]
    os.mkdir(base)
    scenario = Scenario(base)
    SCENARIOS[name](scenario)
    print(json.dumps(scenario.seen))


if __name__ == "__main__":
    main()

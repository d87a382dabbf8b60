"""Reads of one file in the ways programs read, printed as JSON steps.

Usage: ``remote_reads.py WORK_DIR`` (on a local disk, or a remote mount under ``aviary
run``). Writes a 5 MiB file of fixed pseudo-random bytes into WORK_DIR, then reads it:
in 1 MiB and 300,000-byte blocks, a byte at a time and then in blocks, at positions
(pread, lseek from the start, the current offset and the end), through a descriptor
shared with a forked child and a dup, into buffers at odd addresses (libc's read, so the
kernel's copy is misaligned), into a bad address, from three threads at once, after
another open wrote to the file, and at and past its end (moved by that write). Each step
prints what it read (length and MD5) and where the offset was left; run natively and
under the agent it must print the same.
"""

from __future__ import annotations

import ctypes
import errno
import hashlib
import json
import os
import random
import sys
import threading

MIB = 1 << 20
SIZE = 5 * MIB + 12345  # not a multiple of any block a step reads in


def digest(data: bytes) -> str:
    return f"{len(data)}:{hashlib.md5(data).hexdigest()}"


def read_all(fd: int, block: int) -> tuple[str, int]:
    """What reads of ``block`` bytes bring until end of file, and how many reads it took
    (stopping past twice the file's size: an offset that never moves reads forever)."""
    pieces, reads, total = [], 0, 0
    while total <= 2 * SIZE and (chunk := os.read(fd, block)):
        pieces.append(chunk)
        reads += 1
        total += len(chunk)
    return digest(b"".join(pieces)), reads


def main(work: str) -> None:
    os.makedirs(work, exist_ok=True)
    path = os.path.join(work, "data")
    content = random.Random(7).randbytes(SIZE)
    with open(path, "wb") as out:
        out.write(content)
    steps: list[tuple[object, ...]] = []
    step = steps.append
    libc = ctypes.CDLL(None, use_errno=True)
    libc.read.argtypes = [ctypes.c_int, ctypes.c_void_p, ctypes.c_size_t]
    libc.read.restype = ctypes.c_ssize_t

    for block in (MIB, 300_000, 4 * MIB):
        fd = os.open(path, os.O_RDONLY)
        step((f"read in blocks of {block}", read_all(fd, block)))
        step((f"offset after blocks of {block}", os.lseek(fd, 0, os.SEEK_CUR)))
        os.close(fd)

    fd = os.open(path, os.O_RDONLY)
    head = b"".join(os.read(fd, 1) for _ in range(100))
    step(("a byte at a time, then blocks", digest(head), read_all(fd, MIB)))
    positions = ((0, 1), (4095, MIB), (MIB - 3, 5), (SIZE - 10, 100), (SIZE, 10), (SIZE + 100, 10))
    step(("pread", [digest(os.pread(fd, count, at)) for at, count in positions]))
    os.lseek(fd, 12345, os.SEEK_SET)
    step(("lseek from the start", digest(os.read(fd, MIB)), os.lseek(fd, 0, os.SEEK_CUR)))
    os.lseek(fd, MIB, os.SEEK_CUR)
    step(("lseek from here", digest(os.read(fd, MIB)), os.lseek(fd, 0, os.SEEK_CUR)))
    os.lseek(fd, -100, os.SEEK_END)
    step(("lseek from the end", digest(os.read(fd, MIB)), os.lseek(fd, 0, os.SEEK_CUR)))
    os.close(fd)

    fd = os.open(path, os.O_RDONLY)
    os.read(fd, 1000)
    child = os.fork()
    if child == 0:  # the child reads on the descriptor it shares with its parent
        os.read(fd, MIB)
        os._exit(0)
    os.waitpid(child, 0)
    step(("offset after a child's read", os.lseek(fd, 0, os.SEEK_CUR), digest(os.read(fd, MIB))))
    twin = os.dup(fd)
    first = os.read(fd, MIB)
    step(("a dup shares the offset", digest(first), digest(os.read(twin, MIB))))
    os.close(twin)
    os.close(fd)

    fd = os.open(path, os.O_RDONLY)
    buffer = ctypes.create_string_buffer(MIB + 128)
    misaligned = []
    for skew in (0, 1, 7, 8, 16, 24, 63, 64, 100):
        got = libc.read(fd, ctypes.addressof(buffer) + skew, MIB)
        misaligned.append(digest(ctypes.string_at(ctypes.addressof(buffer) + skew, max(got, 0))))
    step(("reads into buffers at odd addresses", misaligned))
    got = libc.read(fd, 1, MIB)  # address 1: never mapped
    step(("a read into a bad address", got, errno.errorcode.get(ctypes.get_errno(), "-")))
    step(("offset after the bad read", os.lseek(fd, 0, os.SEEK_CUR)))

    # Threads reading one descriptor at once: preads at their own offsets, reads sharing the
    # offset (each read takes a run of bytes no other read takes, as the kernel's do).
    results: dict[str, object] = {}

    def pread_at(k: int) -> None:
        at = [((k * 8 + i) * 99_991) % (SIZE - 300_000) for i in range(8)]
        results[f"pread {k}"] = [os.pread(fd, 300_000, a) == content[a : a + 300_000] for a in at]

    pieces: list[tuple[int, bytes]] = []

    def read_on(k: int) -> None:  # stops past twice the size, as read_all does
        while sum(len(chunk) for _, chunk in pieces) <= 2 * SIZE and (
            chunk := os.read(fd, 65536 * (k + 1))
        ):
            pieces.append((k, chunk))

    os.lseek(fd, 0, os.SEEK_SET)
    for target in (pread_at, read_on):
        threads = [threading.Thread(target=target, args=(k,)) for k in range(3)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
    whole = sum(len(chunk) for _, chunk in pieces) == SIZE
    runs = all(content.find(chunk) >= 0 for _, chunk in pieces)
    step(("threads reading one descriptor", sorted(results.items()), whole, runs))

    writer = os.open(path, os.O_WRONLY)  # the file grows: a new version by any measure
    os.pwrite(writer, b"changed by another open", SIZE - 5)
    os.close(writer)
    step(("a write through another open is read", digest(os.pread(fd, MIB, SIZE - MIB))))
    os.lseek(fd, 0, os.SEEK_END)
    step(("at the end", digest(os.read(fd, MIB)), os.lseek(fd, 0, os.SEEK_CUR)))
    os.close(fd)
    print(json.dumps(steps))


if __name__ == "__main__":
    main(sys.argv[1])

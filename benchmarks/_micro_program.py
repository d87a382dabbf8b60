"""The programs the micro benchmarks time, as C source, and how to build and read them.

``MICRO_C`` (``benchmarks.micro``): after a warm-up, it times ``iterations`` calls of getpid
(the raw syscall, so libc's cache is not measured), stat, open/close, read of 1 byte and of
8 KB, each with ``clock_gettime(CLOCK_MONOTONIC)``, then reads the bandwidth file in 1 MiB
blocks for an untimed and a few timed passes.

``REMOTE_C`` (``benchmarks.remote_micro``): after one untimed stat, it times stat (of
the small and the bandwidth file in turn), open/close, open+read+close, read 1 B and
read 8 KB on a remote file, then reads the bandwidth file once.

Both print one JSON object of ns/op and MB/s, which :func:`read_result` checks.
"""

from __future__ import annotations

import json
import shutil
import subprocess
from collections.abc import Sequence
from pathlib import Path

from benchmarks.common import last_line, run_bounded

__all__ = ["COMPILE_TIMEOUT", "MICRO_C", "REMOTE_C", "BenchError", "compile_program", "read_result"]

COMPILE_TIMEOUT = 120.0  # seconds for gcc


class BenchError(Exception):
    """A step of the benchmark failed; the message is the one line the user sees."""


def _prelude(comment: str, name: str) -> str:
    """What both programs open with: headers, the clock, and ``die`` naming ``name``."""
    return f'/* {comment} */\n#define PROGRAM "{name}"\n' + _COMMON


_COMMON = r"""#define _GNU_SOURCE
#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#include <time.h>
#include <unistd.h>

static double now_ns(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec * 1e9 + (double)ts.tv_nsec;
}

static void die(const char *what, const char *path) {
    fprintf(stderr, PROGRAM ": %s %s: %s\n", what, path, strerror(errno));
    exit(1);
}

/* One sequential read of path in reads of block bytes into buf: its MB/s. */
static double read_mbs(const char *path, char *buf, size_t block) {
    long long total = 0;
    ssize_t got;
    int fd = open(path, O_RDONLY);
    if (fd < 0) die("open", path);
    double t0 = now_ns();
    while ((got = read(fd, buf, block)) > 0) total += got;
    double elapsed = now_ns() - t0;
    if (got < 0) die("read", path);
    close(fd);
    return (double)total / elapsed * 1e3;  /* bytes/ns -> MB/s */
}

"""

MICRO_C = (
    _prelude(
        "Figure 3 of the Parrot paper, measured: ns per call and MB/s, as one JSON object.", "micro"
    )
    + r"""static int by_value(const void *a, const void *b) {
    double x = *(const double *)a, y = *(const double *)b;
    return (x > y) - (x < y);
}

int main(int argc, char **argv) {
    if (argc != 6) {
        fprintf(stderr, "usage: micro SMALL BIG ITERATIONS PASSES BLOCK\n");
        return 2;
    }
    const char *small = argv[1], *big = argv[2];
    long n = atol(argv[3]), warm = n / 10 + 1, i;
    int passes = atoi(argv[4]), fd, p;
    size_t block = (size_t)atol(argv[5]);
    if (n < 1 || passes < 1 || passes > 64 || block < 1) {
        fprintf(stderr, "micro: bad arguments\n");
        return 2;
    }
    char buf[8192];
    struct stat st;
    double t0, getpid_ns, stat_ns, open_ns, read1_ns, read8_ns, mbs[64];

    for (i = 0; i < warm; i++) syscall(SYS_getpid);
    t0 = now_ns();
    for (i = 0; i < n; i++) syscall(SYS_getpid);
    getpid_ns = (now_ns() - t0) / n;

    for (i = 0; i < warm; i++) if (stat(small, &st) != 0) die("stat", small);
    t0 = now_ns();
    for (i = 0; i < n; i++) if (stat(small, &st) != 0) die("stat", small);
    stat_ns = (now_ns() - t0) / n;

    for (i = 0; i < warm + n; i++) {
        if (i == warm) t0 = now_ns();
        if ((fd = open(small, O_RDONLY)) < 0) die("open", small);
        if (close(fd) != 0) die("close", small);
    }
    open_ns = (now_ns() - t0) / n;

    if ((fd = open(small, O_RDONLY)) < 0) die("open", small);
    for (i = 0; i < warm + n; i++) {
        if (i == warm) t0 = now_ns();
        if (pread(fd, buf, 1, 0) != 1) die("pread 1 byte of", small);
    }
    read1_ns = (now_ns() - t0) / n;
    for (i = 0; i < warm + n; i++) {
        if (i == warm) t0 = now_ns();
        if (pread(fd, buf, sizeof buf, 0) != (ssize_t)sizeof buf) die("pread 8 KB of", small);
    }
    read8_ns = (now_ns() - t0) / n;
    close(fd);

    char *block_buf = malloc(block);
    if (block_buf == NULL) die("malloc for", big);
    memset(block_buf, 0, block);
    for (p = 0; p <= passes; p++) {  /* pass 0 is untimed: it only warms the page cache */
        double rate = read_mbs(big, block_buf, block);
        if (p > 0) mbs[p - 1] = rate;
    }
    qsort(mbs, (size_t)passes, sizeof mbs[0], by_value);
    printf("{\"getpid\": %.3f, \"stat\": %.3f, \"open/close\": %.3f, \"read 1B\": %.3f, "
           "\"read 8KB\": %.3f, \"bandwidth\": %.3f}\n",
           getpid_ns, stat_ns, open_ns, read1_ns, read8_ns, mbs[passes / 2]);
    free(block_buf);
    return 0;
}
"""
)

REMOTE_C = (
    _prelude("Small remote operations: ns per call and MB/s, as one JSON object.", "remote-micro")
    + r"""int main(int argc, char **argv) {
    if (argc != 5) {
        fprintf(stderr, "usage: remote-micro SMALL BIG ITERATIONS BLOCK\n");
        return 2;
    }
    const char *small = argv[1], *big = argv[2];
    long n = atol(argv[3]), i;
    size_t block = (size_t)atol(argv[4]);
    if (n < 1 || block < 1) {
        fprintf(stderr, "remote-micro: bad arguments\n");
        return 2;
    }
    char buf[8192];
    struct stat st;
    int fd;
    double t0, stat_ns, open_ns, whole_ns, read1_ns, read8_ns;

    if (stat(small, &st) != 0) die("stat", small);  /* one untimed call: connections made */
    /* Two names in turn: no client answers from its reply to the same question asked just
     * before; what is timed is a question the server answers. */
    t0 = now_ns();
    for (i = 0; i < n; i++) {
        const char *name = i % 2 ? big : small;
        if (stat(name, &st) != 0) die("stat", name);
    }
    stat_ns = (now_ns() - t0) / n;

    t0 = now_ns();
    for (i = 0; i < n; i++) {
        if ((fd = open(small, O_RDONLY)) < 0) die("open", small);
        if (close(fd) != 0) die("close", small);
    }
    open_ns = (now_ns() - t0) / n;

    t0 = now_ns();
    for (i = 0; i < n; i++) {  /* what cat does: read until a read returns 0 */
        ssize_t got;
        if ((fd = open(small, O_RDONLY)) < 0) die("open", small);
        while ((got = read(fd, buf, sizeof buf)) > 0) {}
        if (got < 0) die("read", small);
        if (close(fd) != 0) die("close", small);
    }
    whole_ns = (now_ns() - t0) / n;

    if ((fd = open(small, O_RDONLY)) < 0) die("open", small);
    t0 = now_ns();
    for (i = 0; i < n; i++)
        if (pread(fd, buf, 1, i % (long)sizeof buf) != 1) die("pread 1 byte of", small);
    read1_ns = (now_ns() - t0) / n;
    t0 = now_ns();
    for (i = 0; i < n; i++)
        if (pread(fd, buf, sizeof buf, 0) != (ssize_t)sizeof buf) die("pread 8 KB of", small);
    read8_ns = (now_ns() - t0) / n;
    close(fd);

    char *block_buf = malloc(block);
    if (block_buf == NULL) die("malloc for", big);
    double bandwidth = read_mbs(big, block_buf, block);
    printf("{\"stat\": %.1f, \"open/close\": %.1f, \"open+read+close\": %.1f, "
           "\"read 1B\": %.1f, \"read 8KB\": %.1f, \"bandwidth\": %.3f}\n",
           stat_ns, open_ns, whole_ns, read1_ns, read8_ns, bandwidth);
    free(block_buf);
    return 0;
}
"""
)


def compile_program(source: str, workdir: Path, name: str) -> Path:
    """``source`` built with gcc as ``workdir/name``.

    Raises:
        BenchError: gcc is missing, fails, or does not finish within COMPILE_TIMEOUT.
    """
    gcc = shutil.which("gcc")
    if gcc is None:
        raise BenchError("gcc not installed: apt-get install gcc")
    source_file, binary = workdir / f"{name}.c", workdir / name
    source_file.write_text(source)
    try:
        done = run_bounded(
            [gcc, "-O2", "-Wall", "-o", str(binary), str(source_file)], COMPILE_TIMEOUT, workdir
        )
    except TimeoutError as exc:
        raise BenchError(f"gcc: {exc}") from None
    if done.returncode != 0:
        raise BenchError(f"gcc failed: {last_line(done.stderr)}")
    return binary


def read_result(done: subprocess.CompletedProcess[str], columns: Sequence[str]) -> dict[str, float]:
    """One run's JSON line, checked: it exited 0 and gave a positive value per column.

    Raises:
        BenchError: a non-zero exit (with the program's last line), no JSON line with
            every column, or a value that is not positive.
    """
    if done.returncode != 0:
        why = last_line(done.stderr) or last_line(done.stdout) or "no output"
        raise BenchError(f"exit status {done.returncode}: {why}")
    try:
        data = json.loads(last_line(done.stdout))
        values = {column: float(data[column]) for column in columns}
    except (ValueError, KeyError, TypeError):
        raise BenchError(
            f"no JSON result on stdout (got {last_line(done.stdout)[:80]!r})"
        ) from None
    if not all(v > 0 for v in values.values()):
        raise BenchError(f"non-positive measurement {values}")
    return values

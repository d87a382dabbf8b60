"""The program the micro benchmark times, as C source (compiled by ``benchmarks.micro``).

After a warm-up, it times ``iterations`` calls of getpid (the raw syscall, so libc's cache is
not measured), stat, open/close, read of 1 byte and of 8 KB, each with
``clock_gettime(CLOCK_MONOTONIC)``, then reads the bandwidth file in 1 MiB
blocks for an untimed and a few timed passes, and prints one JSON object of
ns/op and MB/s.
"""

__all__ = ["MICRO_C"]

MICRO_C = r"""
/* Figure 3 of the Parrot paper, measured: ns per call and MB/s, as one JSON object. */
#define _GNU_SOURCE
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
    fprintf(stderr, "micro: %s %s: %s\n", what, path, strerror(errno));
    exit(1);
}

static int by_value(const void *a, const void *b) {
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
        long long total = 0;
        ssize_t got;
        if ((fd = open(big, O_RDONLY)) < 0) die("open", big);
        t0 = now_ns();
        while ((got = read(fd, block_buf, block)) > 0) total += got;
        double elapsed = now_ns() - t0;
        if (got < 0) die("read", big);
        close(fd);
        if (p > 0) mbs[p - 1] = (double)total / elapsed * 1e3;  /* bytes/ns -> MB/s */
    }
    qsort(mbs, (size_t)passes, sizeof mbs[0], by_value);
    printf("{\"getpid\": %.3f, \"stat\": %.3f, \"open/close\": %.3f, \"read 1B\": %.3f, "
           "\"read 8KB\": %.3f, \"bandwidth\": %.3f}\n",
           getpid_ns, stat_ns, open_ns, read1_ns, read8_ns, mbs[passes / 2]);
    free(block_buf);
    return 0;
}
"""

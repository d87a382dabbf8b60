/* Attempts to read a file the sandbox denies, each by a way around a path check.
 *
 * Usage: sandbox_escape MODE ARGS...; prints "MODE result=R errno=E" and, when
 * something was read, "DATA:<bytes>". The test asserts the secret never shows.
 */
#define _GNU_SOURCE
#include <errno.h>
#include <fcntl.h>
#include <linux/filter.h>
#include <linux/openat2.h>
#include <linux/seccomp.h>
#include <pthread.h>
#include <signal.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/prctl.h>
#include <sys/ptrace.h>
#include <sys/syscall.h>
#include <sys/types.h>
#include <sys/uio.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

static void report(const char *mode, long result, int error) {
    printf("%s result=%ld errno=%d\n", mode, result, error);
}

static void show(int fd) {
    char data[256];
    ssize_t n = read(fd, data, sizeof data - 1);
    if (n > 0) {
        data[n] = 0;
        printf("DATA:%s", data);
    }
}

/* i386 open(2) and read(2) through int 0x80, from a 64-bit program. */
static int int80(const char *path) {
    char *low = mmap(NULL, 4096, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS | MAP_32BIT,
                     -1, 0);
    if (low == MAP_FAILED) return 2;
    strncpy(low, path, 1000);
    long fd;
    __asm__ volatile("int $0x80" : "=a"(fd) : "a"(5), "b"(low), "c"(0), "d"(0) : "memory");
    report("int80", fd, fd < 0 ? (int)-fd : 0);
    if (fd >= 0) {
        long n;
        __asm__ volatile("int $0x80" : "=a"(n) : "a"(3), "b"(fd), "c"(low + 1024), "d"(200)
                         : "memory");
        if (n > 0) printf("DATA:%.*s", (int)n, low + 1024);
    }
    return 0;
}

/* openat(2) with the x32 bit set on the syscall number. */
static int x32(const char *path) {
    long fd = syscall(0x40000000 | SYS_openat, AT_FDCWD, path, O_RDONLY);
    report("x32", fd, fd < 0 ? errno : 0);
    if (fd >= 0) show((int)fd);
    return 0;
}

static int uring(void) {
    unsigned char params[120] = {0};
    long fd = syscall(425, 8, params); /* io_uring_setup */
    report("io_uring_setup", fd, fd < 0 ? errno : 0);
    return 0;
}

static int tracing(void) {
    long r = ptrace(PTRACE_TRACEME, 0, NULL, NULL);
    report("traceme", r, r < 0 ? errno : 0);
    pid_t child = fork();
    if (child == 0) {
        pause();
        _exit(0);
    }
    r = ptrace(PTRACE_ATTACH, child, NULL, NULL);
    report("attach", r, r < 0 ? errno : 0);
    kill(child, SIGKILL);
    waitpid(child, NULL, 0);
    return 0;
}

static int vmwrite(const char *path) {
    /* Rewrite our own path buffer from "outside": refused before the kernel sees it. */
    char buffer[64] = "harmless";
    struct iovec local = {(void *)path, strlen(path) + 1}, remote = {buffer, sizeof buffer};
    long r = syscall(SYS_process_vm_writev, getpid(), &local, 1, &remote, 1, 0);
    report("process_vm_writev", r, r < 0 ? errno : 0);
    return 0;
}

static int own_filter(void) {
    /* A filter of the program's own that answers every call SECCOMP_RET_USER_NOTIF would
     * outrank the agent's RET_TRACE; even a plain ALLOW filter is refused. */
    struct sock_filter allow = BPF_STMT(BPF_RET | BPF_K, SECCOMP_RET_ALLOW);
    struct sock_fprog program = {1, &allow};
    long r = prctl(PR_SET_SECCOMP, SECCOMP_MODE_FILTER, &program, 0, 0);
    report("prctl_seccomp", r, r < 0 ? errno : 0);
    r = syscall(SYS_seccomp, SECCOMP_SET_MODE_FILTER, SECCOMP_FILTER_FLAG_NEW_LISTENER, &program);
    report("seccomp_listener", r, r < 0 ? errno : 0);
    return 0;
}

static int by_handle(const char *path) {
    struct {
        struct file_handle head;
        unsigned char bytes[128];
    } handle = {{.handle_bytes = 128}};
    int mount_id;
    long r = syscall(SYS_name_to_handle_at, AT_FDCWD, path, &handle.head, &mount_id, 0);
    report("name_to_handle_at", r, r < 0 ? errno : 0);
    r = syscall(SYS_open_by_handle_at, AT_FDCWD, &handle.head, O_RDONLY);
    report("open_by_handle_at", r, r < 0 ? errno : 0);
    if (r >= 0) show((int)r);
    return 0;
}

static int at_dirfd(const char *dir, const char *name) {
    int dirfd = open(dir, O_RDONLY | O_DIRECTORY);
    long fd = openat(dirfd, name, O_RDONLY);
    report("openat", fd, fd < 0 ? errno : 0);
    if (fd >= 0) show((int)fd);
    struct open_how how = {.flags = O_RDONLY};
    fd = syscall(SYS_openat2, dirfd, name, &how, sizeof how);
    report("openat2", fd, fd < 0 ? errno : 0);
    if (fd >= 0) show((int)fd);
    return 0;
}

/* TOCTOU: one thread flips a path buffer between an allowed and a denied file while
 * the other opens it in a loop. */
static char flipping[4096];
static char allowed_path[4096], denied_path[4096];
static atomic_int stop;

static void *flipper(void *unused) {
    (void)unused;
    while (!atomic_load(&stop)) {
        strcpy(flipping, denied_path);
        for (volatile int spin = 0; spin < 2000; spin++) continue;
        strcpy(flipping, allowed_path);
        for (volatile int spin = 0; spin < 2000; spin++) continue;
    }
    return NULL;
}

/* Open `path` over and over for `seconds` while `racer` runs in a thread; print any secret
 * read, then a count line headed `label`. */
static int race_opens(const char *path, const char *label, void *(*racer)(void *),
                      const char *seconds) {
    pthread_t thread;
    pthread_create(&thread, NULL, racer, NULL);
    struct timespec start, now;
    clock_gettime(CLOCK_MONOTONIC, &start);
    long opened = 0, refused = 0, attempts = 0;
    char data[256];
    do {
        int fd = open(path, O_RDONLY);
        attempts++;
        if (fd >= 0) {
            ssize_t n = read(fd, data, sizeof data - 1);
            if (n > 0) {
                data[n] = 0;
                if (strstr(data, "TOPSECRET")) printf("DATA:%s", data);
            }
            close(fd);
            opened++;
        } else {
            refused++;
        }
        clock_gettime(CLOCK_MONOTONIC, &now);
    } while (attempts < 1000000 &&
             (now.tv_sec - start.tv_sec) + (now.tv_nsec - start.tv_nsec) / 1e9 < atof(seconds));
    atomic_store(&stop, 1);
    pthread_join(thread, NULL);
    printf("%s attempts=%ld opened=%ld refused=%ld\n", label, attempts, opened, refused);
    return 0;
}

static int toctou(const char *allowed, const char *denied, const char *seconds) {
    strncpy(allowed_path, allowed, sizeof allowed_path - 1);
    strncpy(denied_path, denied, sizeof denied_path - 1);
    memcpy(flipping, allowed_path, sizeof flipping);
    return race_opens(flipping, "toctou", flipper, seconds);
}

/* The same race on the file system: a thread swaps a symlink between an allowed and a
 * denied target (rename over it, atomically) while the other opens the link. */
static char link_path[4096];

static void *swapper(void *unused) {
    (void)unused;
    char spare[4200];
    snprintf(spare, sizeof spare, "%s.spare", link_path);
    while (!atomic_load(&stop)) {
        unlink(spare);
        if (symlink(denied_path, spare) == 0) rename(spare, link_path);
        for (volatile int spin = 0; spin < 2000; spin++) continue;
        unlink(spare);
        if (symlink(allowed_path, spare) == 0) rename(spare, link_path);
        for (volatile int spin = 0; spin < 2000; spin++) continue;
    }
    return NULL;
}

static int symlink_race(const char *link, const char *allowed, const char *denied,
                        const char *seconds) {
    strncpy(link_path, link, sizeof link_path - 1);
    strncpy(allowed_path, allowed, sizeof allowed_path - 1);
    strncpy(denied_path, denied, sizeof denied_path - 1);
    symlink(allowed_path, link_path);
    return race_opens(link_path, "symlink", swapper, seconds);
}

int main(int argc, char **argv) {
    setvbuf(stdout, NULL, _IONBF, 0);
    if (argc < 2) return 2;
    const char *mode = argv[1];
    if (!strcmp(mode, "int80") && argc == 3) return int80(argv[2]);
    if (!strcmp(mode, "x32") && argc == 3) return x32(argv[2]);
    if (!strcmp(mode, "uring")) return uring();
    if (!strcmp(mode, "ptrace")) return tracing();
    if (!strcmp(mode, "vmwrite") && argc == 3) return vmwrite(argv[2]);
    if (!strcmp(mode, "seccomp")) return own_filter();
    if (!strcmp(mode, "handle") && argc == 3) return by_handle(argv[2]);
    if (!strcmp(mode, "openat") && argc == 4) return at_dirfd(argv[2], argv[3]);
    if (!strcmp(mode, "toctou") && argc == 5) return toctou(argv[2], argv[3], argv[4]);
    if (!strcmp(mode, "symlink") && argc == 6)
        return symlink_race(argv[2], argv[3], argv[4], argv[5]);
    return 2;
}

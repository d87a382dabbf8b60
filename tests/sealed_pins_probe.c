/* Where the sandbox puts its checked copies of paths, seen from the traced program.
 *
 * Usage: sealed_pins_probe FILE [child]
 *
 * Opens FILE with a raw syscall and reads back from rsi where the agent pointed the call
 * (x86_64 keeps argument registers across a syscall). Prints one line per case:
 * "CASE copy=ADDRESS writable=0|1 sealed=0|1 opened=0|1"; "writable" is whether the
 * kernel can write there for the program (read() from a pipe into it), "sealed" whether
 * the mapping holding it is sealed (smaps VmFlags "sl"). Cases: the program after exec,
 * a fork child, 100 threads at once (more than one region's slots), a vfork child that
 * execs this program again ("child"), and opens while a signal handler, run 200 times,
 * makes path calls of its own; then 8 threads make, rename, link and remove names at once
 * (200 rounds through the rename gate).
 */
#define _GNU_SOURCE
#include <fcntl.h>
#include <pthread.h>
#include <signal.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#include <time.h>
#include <sys/wait.h>
#include <unistd.h>

#include "raw_path_call.h"

static const char *file;

static long raw_open(const char *path, long *copy) {
    long rdi;
    return raw_path_call(SYS_open, path, O_RDONLY, &rdi, copy);
}

static int writable(long address) {
    int fds[2];
    if (pipe(fds) != 0) return -1;
    write(fds[1], "x", 1);
    int result = read(fds[0], (char *)address, 1) == 1;
    close(fds[0]);
    close(fds[1]);
    return result;
}

static int sealed(long address) {
    FILE *smaps = fopen("/proc/self/smaps", "r");
    char line[512];
    int inside = 0, found = 0;
    if (!smaps) return -1;
    while (fgets(line, sizeof line, smaps)) {
        unsigned long start, end;
        if (sscanf(line, "%lx-%lx ", &start, &end) == 2 && strchr(line, ' ') - line > 8) {
            inside = (unsigned long)address >= start && (unsigned long)address < end;
        } else if (inside && strncmp(line, "VmFlags:", 8) == 0) {
            found = strstr(line, " sl") != NULL;
            break;
        }
    }
    fclose(smaps);
    return found;
}

static long probe(const char *label) {
    long copy = 0;
    long fd = raw_open(file, &copy);
    if (fd >= 0) close((int)fd);
    printf("%s copy=%#lx writable=%d sealed=%d opened=%d\n", label, copy, writable(copy),
           sealed(copy), fd >= 0);
    return copy;
}

static long thread_copies[100];
static pthread_barrier_t together;

static void *thread_probe(void *index) {
    long copy = 0;
    pthread_barrier_wait(&together); /* every thread alive at once: one slot each */
    long fd = raw_open(file, &copy);
    if (fd >= 0) close((int)fd);
    thread_copies[(long)index] = fd >= 0 ? copy : 0;
    pthread_barrier_wait(&together);
    return NULL;
}

static pthread_t main_thread;
static atomic_int signals_sent;

/* A bounded number of signals at the main thread while it opens: no livelock. */
static void *send_signals(void *unused) {
    (void)unused;
    struct timespec pause = {0, 500000};
    for (int i = 0; i < 200; i++) {
        pthread_kill(main_thread, SIGALRM);
        nanosleep(&pause, NULL);
    }
    atomic_store(&signals_sent, 1);
    return NULL;
}

/* Changers and checked calls from 8 threads at once, each in its own directory: all of
 * them get through the gate, in any order. */
static atomic_int gate_done;

static void *busy_names(void *index) {
    char dir[4200], a[4300], b[4300], c[4300];
    snprintf(dir, sizeof dir, "%s.d%ld", file, (long)index);
    snprintf(a, sizeof a, "%s/a", dir);
    snprintf(b, sizeof b, "%s/b", dir);
    snprintf(c, sizeof c, "%s/c", dir);
    for (int i = 0; i < 25; i++) {
        int ok = mkdir(dir, 0755) == 0;
        int fd = open(a, O_WRONLY | O_CREAT, 0644);
        ok = ok && fd >= 0 && close(fd) == 0;
        ok = ok && chmod(a, 0600) == 0 && rename(a, b) == 0 && link(b, c) == 0;
        ok = ok && unlink(b) == 0 && unlink(c) == 0 && rmdir(dir) == 0;
        if (ok) atomic_fetch_add(&gate_done, 1);
    }
    return NULL;
}

static void on_alarm(int signal) {
    struct stat info;
    (void)signal;
    stat(file, &info); /* a path call of the handler's own, between restarts */
}

int main(int argc, char **argv) {
    setvbuf(stdout, NULL, _IONBF, 0);
    if (argc < 2) return 2;
    file = argv[1];
    if (argc > 2) {
        probe("exec_after_vfork");
        return 0;
    }
    probe("exec");
    pid_t child = fork();
    if (child == 0) {
        probe("fork");
        _exit(0);
    }
    waitpid(child, NULL, 0);

    pthread_t threads[100];
    pthread_barrier_init(&together, NULL, 101);
    for (long i = 0; i < 100; i++) pthread_create(&threads[i], NULL, thread_probe, (void *)i);
    pthread_barrier_wait(&together);
    pthread_barrier_wait(&together);
    for (int i = 0; i < 100; i++) pthread_join(threads[i], NULL);
    int distinct = 1, all_read_only = 1;
    for (int i = 0; i < 100; i++) {
        if (!thread_copies[i] || writable(thread_copies[i]) != 0) all_read_only = 0;
        for (int j = 0; j < i; j++)
            if (thread_copies[i] / 65536 == thread_copies[j] / 65536) distinct = 0;
    }
    printf("threads distinct_slots=%d read_only=%d\n", distinct, all_read_only);

    child = vfork();
    if (child == 0) {
        execl(argv[0], argv[0], file, "child", (char *)NULL);
        _exit(127);
    }
    waitpid(child, NULL, 0);

    struct sigaction action = {.sa_handler = on_alarm, .sa_flags = SA_RESTART};
    sigaction(SIGALRM, &action, NULL);
    main_thread = pthread_self();
    pthread_t signaller;
    pthread_create(&signaller, NULL, send_signals, NULL);
    int failed = 0, opened = 0;
    while (!atomic_load(&signals_sent) || opened < 50) {
        int fd = open(file, O_RDONLY);
        char data[16] = "";
        if (fd < 0 || read(fd, data, sizeof data - 1) <= 0 || strncmp(data, "probe", 5) != 0)
            failed++;
        if (fd >= 0) close(fd);
        opened++;
    }
    pthread_join(signaller, NULL);
    printf("signals failed=%d\n", failed);

    pthread_t busy[8];
    for (long i = 0; i < 8; i++) pthread_create(&busy[i], NULL, busy_names, (void *)i);
    for (int i = 0; i < 8; i++) pthread_join(busy[i], NULL);
    printf("gate done=%d\n", atomic_load(&gate_done));
    return 0;
}

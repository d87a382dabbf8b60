/* The agent's hot path: the wait/resume loop for trapped calls that stay local.
 *
 * fp_wait() waits for the next tracee stop, as waitpid(-1, __WALL) does. A seccomp
 * stop for a whitelisted call whose path is plainly local (absolute, already in
 * normal form, under no prefix the agent was given) is resumed here with
 * PTRACE_CONT, exactly as the Python agent would resume it, and never reaches
 * Python; so is a relative path of a task whose working directory the agent said is
 * plainly local, when the name it makes passes the same test; so is a call on a descriptor (close, read, write, lseek, fstat...) while no
 * remote file is open anywhere. Every other stop
 * (fork, exec, exit, signals, other calls, relative or remote or unreadable paths)
 * is returned to the caller untouched, with its wait status, for the Python loop.
 *
 * Built by reference_agent/_fastpath.py with gcc into a cache directory and loaded
 * with ctypes: plain C, no Python API. Like every ptrace call, fp_wait must run on
 * the thread that seized the tracees.
 */
#define _GNU_SOURCE
#include <errno.h>
#include <signal.h>
#include <stddef.h>
#include <stdint.h>
#include <string.h>
#include <sys/ptrace.h>
#include <sys/uio.h>
#include <sys/user.h>
#include <sys/wait.h>
#include <unistd.h>

#define FP_MAX_NR 1024
#define FP_PATH_MAX 4096
#define FP_PREFIX_SPACE 65536
#define FP_PAGE 4096UL
#define FP_EVENT_SECCOMP 7
#define FP_MAX_CWDS 4096
#define FP_CWD_SPACE (1 << 20)
#define FP_AT_FDCWD (-100)

enum { FP_NONE = 0, FP_PATH = 1, FP_DESCRIPTOR = 2 };

/* What each syscall number is to the fast path, and the index of its path argument. */
static unsigned char kinds[FP_MAX_NR];
static unsigned char path_index[FP_MAX_NR];
/* NUL-separated prefixes ("/chirp\0/data\0"), each in normal form without a final slash;
 * "/" alone matches every path. */
static char prefixes[FP_PREFIX_SPACE];
static size_t prefixes_len;
static unsigned long answered;
/* The working directories of the tasks whose one is plainly local, by tid. */
static struct { int tid; size_t at; } cwds[FP_MAX_CWDS];
static size_t cwd_count;
static char cwd_space[FP_CWD_SPACE];
static size_t cwd_space_len;

void fp_clear_cwds(void) {
    cwd_count = 0;
    cwd_space_len = 0;
}

int fp_set_cwd(int tid, const char *cwd) {
    size_t n = strlen(cwd);
    if (cwd[0] != '/' || cwd_count == FP_MAX_CWDS || cwd_space_len + n + 1 > sizeof cwd_space)
        return -ENOSPC;
    memcpy(cwd_space + cwd_space_len, cwd, n + 1);
    cwds[cwd_count].tid = tid;
    cwds[cwd_count].at = cwd_space_len;
    cwd_count++;
    cwd_space_len += n + 1;
    return 0;
}

static const char *cwd_of(pid_t tid) {
    for (size_t i = 0; i < cwd_count; i++)
        if (cwds[i].tid == tid) return cwd_space + cwds[i].at;
    return NULL;
}

void fp_clear(void) {
    memset(kinds, 0, sizeof kinds);
    prefixes_len = 0;
    answered = 0;
}

int fp_set_call(long nr, int kind, int index) {
    if (nr < 0 || nr >= FP_MAX_NR || index < 0 || index > 5) return -EINVAL;
    kinds[nr] = (unsigned char)kind;
    path_index[nr] = (unsigned char)index;
    return 0;
}

int fp_add_prefix(const char *prefix) {
    size_t n = strlen(prefix);
    if (n == 0 || prefixes_len + n + 1 > sizeof prefixes) return -ENOSPC;
    memcpy(prefixes + prefixes_len, prefix, n + 1);
    prefixes_len += n + 1;
    return 0;
}

unsigned long fp_answered(void) { return answered; }

static unsigned long long arg_of(const struct user_regs_struct *r, int index) {
    switch (index) {
    case 0: return r->rdi;
    case 1: return r->rsi;
    case 2: return r->rdx;
    case 3: return r->r10;
    case 4: return r->r8;
    default: return r->r9;
    }
}

/* The tracee's NUL-terminated string at addr, read without crossing into a page that may
 * be unmapped; 0 when it is longer than what one read brings (Python then reads it). */
static size_t read_path(pid_t pid, unsigned long addr, char *buf) {
    if (addr == 0) return 0;
    size_t want = FP_PAGE - (addr % FP_PAGE);
    if (want < 256) want += FP_PAGE; /* a short tail: take the next page too, if it is there */
    if (want > FP_PATH_MAX) want = FP_PATH_MAX;
    struct iovec local = {buf, want};
    struct iovec remote = {(void *)addr, want};
    ssize_t got = process_vm_readv(pid, &local, 1, &remote, 1, 0);
    if (got <= 0) return 0;
    char *end = memchr(buf, '\0', (size_t)got);
    return end == NULL ? 0 : (size_t)(end - buf);
}

/* Absolute, and no "//", "." or ".." component: the namespace would see it as written. */
static int in_normal_form(const char *path, size_t n) {
    if (n == 0 || path[0] != '/') return 0;
    for (size_t i = 0; i < n; i++) {
        if (path[i] != '/') continue;
        const char *c = path + i + 1;
        size_t left = n - i - 1;
        if (left == 0) return 1; /* a final slash: the kernel keeps it, the prefix test drops it */
        if (c[0] == '/') return 0;
        if (c[0] == '.' && (left == 1 || c[1] == '/')) return 0;
        if (c[0] == '.' && c[1] == '.' && (left == 2 || c[2] == '/')) return 0;
    }
    return 1;
}

static int under_a_prefix(const char *path, size_t n) {
    if (n > 1 && path[n - 1] == '/') n--;
    for (size_t at = 0; at < prefixes_len;) {
        const char *p = prefixes + at;
        size_t len = strlen(p);
        at += len + 1;
        if (len == 1 && p[0] == '/') return 1;
        if (n >= len && memcmp(path, p, len) == 0 && (n == len || path[len] == '/')) return 1;
    }
    return 0;
}

/* Whether the stop of pid at call nr can be resumed without the agent. */
static int plainly_local(pid_t pid, long nr, int remote_files_open) {
    if (nr < 0 || nr >= FP_MAX_NR || kinds[nr] == FP_NONE) return 0;
    if (kinds[nr] == FP_DESCRIPTOR) return !remote_files_open;
    struct user_regs_struct regs;
    if (ptrace(PTRACE_GETREGS, pid, 0, &regs) != 0) return 0;
    if ((long)regs.orig_rax != nr) return 0;
    char path[FP_PATH_MAX];
    size_t n = read_path(pid, (unsigned long)arg_of(&regs, path_index[nr]), path);
    if (n == 0) return 0;
    if (path[0] == '/') return in_normal_form(path, n) && !under_a_prefix(path, n);
    /* Relative: only to the working directory (an *at call's dirfd is its first argument),
     * and only where that directory is plainly local; then the name it makes is tested. */
    if (path_index[nr] == 1 && (int)regs.rdi != FP_AT_FDCWD) return 0;
    const char *cwd = cwd_of(pid);
    if (cwd == NULL) return 0;
    char joined[2 * FP_PATH_MAX + 2];
    size_t base = strlen(cwd);
    if (base == 1) base = 0; /* "/" */
    if (base + 1 + n + 1 > sizeof joined) return 0;
    memcpy(joined, cwd, base);
    joined[base] = '/';
    memcpy(joined + base + 1, path, n + 1);
    size_t total = base + 1 + n;
    return in_normal_form(joined, total) && !under_a_prefix(joined, total);
}

/* The next stop for the agent: its pid (status in *status), or -errno (-ECHILD: none left). */
long fp_wait(int remote_files_open, int *status) {
    for (;;) {
        pid_t pid = waitpid(-1, status, __WALL);
        if (pid < 0) {
            if (errno == EINTR) return -EINTR; /* Python's signal handlers must run */
            return -errno;
        }
        if (!WIFSTOPPED(*status) || (*status >> 8) != (SIGTRAP | (FP_EVENT_SECCOMP << 8)))
            return pid;
        unsigned long nr;
        if (ptrace(PTRACE_GETEVENTMSG, pid, 0, &nr) != 0) return pid;
        if (!plainly_local(pid, (long)nr, remote_files_open)) return pid;
        /* ESRCH: killed meanwhile; its end is still to be reported, as for the Python loop. */
        if (ptrace(PTRACE_CONT, pid, 0, 0) != 0 && errno != ESRCH) return pid;
        answered++;
    }
}

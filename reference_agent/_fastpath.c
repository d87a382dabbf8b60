/* The agent's hot path: the wait/resume loop for trapped calls that stay local.
 *
 * fp_wait() waits for the next tracee stop, as waitpid(-1, __WALL) does. A seccomp
 * stop for a whitelisted call whose path is plainly local (absolute, already in
 * normal form, under no prefix the agent was given) is resumed here with
 * PTRACE_CONT, exactly as the Python agent would resume it, and never reaches
 * Python. A path with ".", ".." or "//" is collapsed by name first, as the agent's
 * namespace does, and is local only if every directory a ".." leaves is local too. A
 * relative path of a task whose working directory the agent said is plainly local is
 * joined onto that directory and tested the same way. A call on a descriptor (close,
 * read, write, lseek, fstat, mmap, fstat through newfstatat(fd, "", AT_EMPTY_PATH)...)
 * is resumed when the descriptor is not the placeholder of a remote file: the agent
 * pushes the (device, inode) of every placeholder, and the descriptor's /proc link is
 * stat'ed as the agent would. A placeholder the agent filled with its file's bytes
 * (a small file opened read-only under close-to-open caching) is read natively too:
 * read, pread, readv, preadv and lseek on it are the kernel's. An execve of a plainly local
 * path that names nothing is resumed too (the kernel's ENOENT: a search through PATH), and
 * one of an ELF program whose loader is plainly local (no interpreter the namespace moves).
 * Every other stop (fork, exec, exit, signals, other calls,
 * remote or unreadable paths) is returned to the caller untouched, with its wait
 * status, for the Python loop.
 *
 * What fp_wait learned of the stop it returns (the call's number, the registers, the
 * (device, inode) behind a descriptor argument, the path argument's string) it leaves in
 * the caller's fp_stop_facts, so that the agent does not ask the kernel again.
 *
 * A read or pread64 of a remote file the agent registered for compiled reads (fp_serve:
 * the driver's live connection, the request it sends for this open, the open's offset in
 * a cell the agent reads too) is answered here: the request is sent, the reply's count
 * line and bytes received, the bytes copied into the program with process_vm_writev and
 * the call skipped with that count, as the Python handler would. Anything unexpected (an
 * error reply, a bad buffer, a count out of range, a connection that is not the one
 * registered) goes to Python untouched, which asks again through the driver; a
 * connection left out of step (a timeout, a short or malformed reply) is reported in
 * the stop's facts so that the driver drops it first.
 *
 * fp_held() answers the agent's other frequent question in the same compiled code:
 * which remote files' placeholders some descriptor of the live tasks still refers to
 * (asked after every close of one; a scan of /proc/PID/fd, a stat per descriptor).
 *
 * Built by reference_agent/_fastpath.py with gcc into a cache directory and loaded
 * with ctypes: plain C, no Python API. Like every ptrace call, fp_wait must run on
 * the thread that seized the tracees.
 */
#define _GNU_SOURCE
#include <dirent.h>
#include <elf.h>
#include <errno.h>
#include <fcntl.h>
#include <signal.h>
#include <stddef.h>
#include <stdint.h>
#include <string.h>
#include <stdio.h>
#include <poll.h>
#include <stdlib.h>
#include <sys/mman.h>
#include <sys/ptrace.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/uio.h>
#include <sys/user.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#define FP_MAX_NR 1024
#define FP_PATH_MAX 4096
#define FP_PREFIX_SPACE 65536
#define FP_PAGE 4096UL
#define FP_EVENT_SECCOMP 7
#define FP_MAX_CWDS 4096
#define FP_CWD_SPACE (1 << 20)
#define FP_AT_FDCWD (-100)
#define FP_AT_EMPTY_PATH 0x1000
#define FP_MAX_PLACEHOLDERS 4096
#define FP_MAX_SERVED 1024
#define FP_PREFIX_MAX 64   /* bytes of a registered request's fixed start */
#define FP_REPLY_LINE 1024 /* bytes a reply's line may take (the driver's LINE_MAX) */
#define FP_LINE_BYTES 64   /* a cache line */
#define FP_PROGRESS_BYTES (64 * 1024) /* bytes of a reply that renew its deadline */

/* FP_PROGRAM: an exec (execve) resumed only when its absolute, plainly local path names
 * nothing at all (lstat: ENOENT, the kernel's ENOENT then), or a 64-bit ELF program whose
 * loader (PT_INTERP) is plainly local too, or that has none: no interpreter the namespace
 * moves, so the kernel's exec is the agent's. A script, a link to nothing, anything
 * unreadable goes to Python. */
enum { FP_NONE = 0, FP_PATH = 1, FP_DESCRIPTOR = 2, FP_PROGRAM = 3 };
#define FP_MAX_PHDRS 64

/* What fp_wait learned of the stop it returned, for the pid it returned: each has_ flag is
 * 0 when that fact was not taken at this stop. The descriptor's (dev, ino) is that of the
 * file its /proc link names (a placeholder's, or a file the stat could not match). */
struct fp_stop_facts {
    long pid;
    long has_nr;
    unsigned long nr; /* the seccomp data: the call's number */
    long has_registers;
    struct user_regs_struct registers;
    long has_descriptor;
    long descriptor;
    unsigned long long dev, ino;
    long broken_slot;  /* a compiled read left this slot's connection out of step (-1: none) */
    long broken_errno; /* why: ETIMEDOUT, ECONNRESET, EPROTO... */
    long has_path; /* the path argument, read whole (NUL found) */
    unsigned long path_address;
    long path_length; /* without the NUL */
    char path[FP_PATH_MAX];
};

/* What each syscall number is to the fast path, the index of its path argument (of its
 * descriptor, for FP_DESCRIPTOR), and of its flags argument when an empty path with
 * AT_EMPTY_PATH makes it a call on its dirfd (-1: never). */
static unsigned char kinds[FP_MAX_NR];
static unsigned char path_index[FP_MAX_NR];
static signed char flags_index[FP_MAX_NR];
/* The descriptor calls that only read a file or move its offset. */
static unsigned char reads_only[FP_MAX_NR];
/* The calls a registered remote file's reads are answered for: FP_SEQUENTIAL reads at the
 * open's offset and moves it (read), FP_POSITIONED at its fourth argument (pread64). */
enum { FP_NOT_SERVED = 0, FP_SEQUENTIAL = 1, FP_POSITIONED = 2 };
static unsigned char serves[FP_MAX_NR];
/* The (device, inode) of every remote file's placeholder, whether the agent filled it
 * with the file's bytes, and the slot its compiled reads use (-1: none); a descriptor on
 * any other file is the kernel's. placeholders_unknown: more than fit, every descriptor
 * call goes to Python while any remote file is open. */
static struct { unsigned long long dev, ino, filled; long long slot; } placeholders[FP_MAX_PLACEHOLDERS];
static size_t placeholder_count;
static int placeholders_unknown;
/* NUL-separated prefixes ("/chirp\0/data\0"), each in normal form without a final slash;
 * "/" alone matches every path. */
static char prefixes[FP_PREFIX_SPACE];
static size_t prefixes_len;
static unsigned long answered;
static unsigned long served_total;

/* One remote open file whose reads are answered here: the connection (a socket, known
 * by its (device, inode) too, so that a descriptor number reused by a new connection is
 * never taken for it), the request's fixed start ("pread 5 "), the counts it answers,
 * the known end of the file (-1: none; a read past it goes to Python), and the timeout
 * (of each wait, and a reply's deadline). The open's offset is served_offsets[slot], which the agent
 * reads and writes as the open's. */
static struct served {
    int live;
    unsigned long long dev, ino; /* the placeholder of the open */
    int sock;
    unsigned long long sock_dev, sock_ino;
    char prefix[FP_PREFIX_MAX];
    size_t prefix_len;
    unsigned long long min_count, max_count;
    long long limit;
    int timeout_ms;
    unsigned long requests, sent, received; /* since fp_serve, for the driver's counters */
} served[FP_MAX_SERVED];
static long long served_offsets[FP_MAX_SERVED];
/* Where replies land before the copy into the program (grown, never shrunk). */
static char *reply_buffer;
static size_t reply_capacity;
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

int fp_set_call(long nr, int kind, int index, int flags, int reads, int serve) {
    if (nr < 0 || nr >= FP_MAX_NR || index < 0 || index > 5 || flags < -1 || flags > 5 ||
        serve < FP_NOT_SERVED || serve > FP_POSITIONED)
        return -EINVAL;
    kinds[nr] = (unsigned char)kind;
    path_index[nr] = (unsigned char)index;
    flags_index[nr] = (signed char)flags;
    reads_only[nr] = reads != 0;
    serves[nr] = (unsigned char)serve;
    return 0;
}

/* quads: count (device, inode, filled, slot + 1) quadruples, flattened (slot + 1 = 0:
 * no compiled reads). */
void fp_set_placeholders(const unsigned long long *quads, size_t count) {
    placeholders_unknown = count > FP_MAX_PLACEHOLDERS;
    placeholder_count = placeholders_unknown ? 0 : count;
    for (size_t i = 0; i < placeholder_count; i++) {
        placeholders[i].dev = quads[4 * i];
        placeholders[i].ino = quads[4 * i + 1];
        placeholders[i].filled = quads[4 * i + 2];
        placeholders[i].slot = (long long)quads[4 * i + 3] - 1;
    }
}

/* Register slot for compiled reads (see struct served); 0, or -errno. */
int fp_serve(long slot, unsigned long long dev, unsigned long long ino, int sock,
             const char *prefix, size_t prefix_len, unsigned long long min_count,
             unsigned long long max_count, long long limit, int timeout_ms) {
    struct stat st;
    if (slot < 0 || slot >= FP_MAX_SERVED || prefix_len == 0 || prefix_len > FP_PREFIX_MAX ||
        min_count == 0 || max_count < min_count || timeout_ms <= 0)
        return -EINVAL;
    if (fstat(sock, &st) != 0) return -errno;
    if (!S_ISSOCK(st.st_mode)) return -ENOTSOCK;
    struct served *s = &served[slot];
    s->dev = dev;
    s->ino = ino;
    s->sock = sock;
    s->sock_dev = (unsigned long long)st.st_dev;
    s->sock_ino = (unsigned long long)st.st_ino;
    memcpy(s->prefix, prefix, prefix_len);
    s->prefix_len = prefix_len;
    s->min_count = min_count;
    s->max_count = max_count;
    s->limit = limit;
    s->timeout_ms = timeout_ms;
    s->requests = s->sent = s->received = 0;
    s->live = 1;
    /* The placeholder's entry, if pushed already, names the slot from now on. */
    for (size_t i = 0; i < placeholder_count; i++)
        if (placeholders[i].dev == dev && placeholders[i].ino == ino) placeholders[i].slot = slot;
    return 0;
}

/* The requests slot made since the last call, and the bytes sent and received for them,
 * in counts[0..3); its counts start again from 0. */
void fp_take_counts(long slot, unsigned long *counts) {
    if (slot < 0 || slot >= FP_MAX_SERVED) return;
    struct served *s = &served[slot];
    counts[0] = s->requests;
    counts[1] = s->sent;
    counts[2] = s->received;
    s->requests = s->sent = s->received = 0;
}

/* Stop answering slot's reads. */
void fp_unserve(long slot) {
    if (slot >= 0 && slot < FP_MAX_SERVED) served[slot].live = 0;
}

int fp_served_live(long slot) { return slot >= 0 && slot < FP_MAX_SERVED && served[slot].live; }

long long *fp_served_offsets(void) { return served_offsets; }

unsigned long fp_served_total(void) { return served_total; }

int fp_add_prefix(const char *prefix) {
    size_t n = strlen(prefix);
    if (n == 0 || prefixes_len + n + 1 > sizeof prefixes) return -ENOSPC;
    memcpy(prefixes + prefixes_len, prefix, n + 1);
    prefixes_len += n + 1;
    return 0;
}

unsigned long fp_answered(void) { return answered; }

/* The connection of slot cannot be used again: every slot on it stops, and the stop's
 * facts tell the agent, whose driver drops it before anything else. */
static void broke(long slot, int why, struct fp_stop_facts *facts) {
    int sock = served[slot].sock;
    for (size_t i = 0; i < FP_MAX_SERVED; i++)
        if (served[i].live && served[i].sock == sock) served[i].live = 0;
    facts->broken_slot = slot;
    facts->broken_errno = why;
}

/* Wait until sock is ready for events (POLLIN or POLLOUT): 0, or -errno (ETIMEDOUT). */
static int await_socket(int sock, short events, int timeout_ms) {
    struct pollfd p = {sock, events, 0};
    for (;;) {
        int n = poll(&p, 1, timeout_ms);
        if (n > 0) return 0;
        if (n == 0) return -ETIMEDOUT;
        if (errno != EINTR) return -errno;
    }
}

static int send_request(int sock, const char *data, size_t length, int timeout_ms) {
    size_t sent = 0;
    while (sent < length) {
        ssize_t n = send(sock, data + sent, length - sent, MSG_NOSIGNAL | MSG_DONTWAIT);
        if (n > 0) {
            sent += (size_t)n;
            continue;
        }
        if (n < 0 && errno == EINTR) continue;
        if (n < 0 && (errno == EAGAIN || errno == EWOULDBLOCK)) {
            int waited = await_socket(sock, POLLOUT, timeout_ms);
            if (waited < 0) return waited;
            continue;
        }
        return n < 0 ? -errno : -ECONNRESET;
    }
    return 0;
}

static long long monotonic_ms(void) {
    struct timespec now;
    clock_gettime(CLOCK_MONOTONIC, &now);
    return (long long)now.tv_sec * 1000 + now.tv_nsec / 1000000;
}

/* The deadline of one reply, as the drivers keep it: the timeout, renewed by each
 * FP_PROGRESS_BYTES received, so that a server sending a byte now and then cannot hold
 * the program longer than a timeout while a large reply that keeps moving goes on. */
struct reply_deadline {
    long long ends; /* monotonic ms */
    size_t progress;
    int timeout_ms;
};

/* Receive up to want bytes into buf within the deadline: how many came (at least 1), or
 * -errno (ECONNRESET: the peer closed; ETIMEDOUT: the deadline passed). */
static ssize_t receive_some(int sock, char *buf, size_t want, struct reply_deadline *deadline) {
    for (;;) {
        ssize_t n = recv(sock, buf, want, MSG_DONTWAIT);
        if (n > 0) {
            deadline->progress += (size_t)n;
            if (deadline->progress >= FP_PROGRESS_BYTES) {
                deadline->progress = 0;
                deadline->ends = monotonic_ms() + deadline->timeout_ms;
            }
            return n;
        }
        if (n == 0) return -ECONNRESET;
        if (errno == EINTR) continue;
        if (errno != EAGAIN && errno != EWOULDBLOCK) return -errno;
        long long left = deadline->ends - monotonic_ms();
        if (left <= 0) return -ETIMEDOUT;
        int wait_ms = left < deadline->timeout_ms ? (int)left : deadline->timeout_ms;
        int waited = await_socket(sock, POLLIN, wait_ms);
        if (waited < 0) return waited;
    }
}

static int reply_room(size_t size) {
    if (size <= reply_capacity) return 1;
    size_t capacity = (size + FP_PAGE - 1) & ~(FP_PAGE - 1);
    void *memory = mmap(NULL, capacity, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
    if (memory == MAP_FAILED) return 0;
    if (reply_buffer != NULL) munmap(reply_buffer, reply_capacity);
    reply_buffer = memory;
    reply_capacity = capacity;
    return 1;
}

/* The reply's count line (without its newline) as the driver reads it: blanks, an
 * optional sign, decimal digits, then anything. 1 and *count, or 0 when malformed. */
static int count_line(const char *line, size_t length, long long *count) {
    size_t i = 0, digits = 0;
    int negative = 0;
    long long value = 0;
    while (i < length && (line[i] == ' ' || line[i] == '\t' || line[i] == '\r' ||
                          line[i] == '\f' || line[i] == '\v'))
        i++;
    if (i < length && (line[i] == '-' || line[i] == '+')) negative = line[i++] == '-';
    for (; i < length && line[i] >= '0' && line[i] <= '9'; i++, digits++) {
        if (digits == 18) return 0; /* beyond any count a reply may carry */
        value = value * 10 + (line[i] - '0');
    }
    if (digits == 0) return 0;
    *count = negative ? -value : value;
    return 1;
}

/* Answer a read (or pread64) of the registered remote file in slot by task pid: 1 when
 * answered and resumed, 0 when Python must take the stop (facts->broken_slot set when
 * the connection is out of step). */
static int serve_read(pid_t pid, long nr, struct user_regs_struct *regs, long slot,
                      unsigned long long dev, unsigned long long ino,
                      struct fp_stop_facts *facts) {
    if (slot >= FP_MAX_SERVED) return 0;
    struct served *s = &served[slot];
    if (s->dev != dev || s->ino != ino) return 0; /* a slot given to another open since */
    unsigned long long count = regs->rdx;
    unsigned long address = (unsigned long)regs->rsi;
    long long offset = serves[nr] == FP_POSITIONED ? (long long)regs->r10 : served_offsets[slot];
    if (!s->live || count < s->min_count || count > s->max_count || offset < 0) return 0;
    if (s->limit >= 0 && (offset > s->limit || (long long)count > s->limit - offset)) return 0;
    struct stat st;
    if (fstat(s->sock, &st) != 0 || (unsigned long long)st.st_dev != s->sock_dev ||
        (unsigned long long)st.st_ino != s->sock_ino) {
        s->live = 0; /* another connection now: the driver registers it again */
        return 0;
    }
    if (!reply_room(FP_REPLY_LINE + count + FP_LINE_BYTES)) return 0;
    char request[FP_PREFIX_MAX + 48];
    memcpy(request, s->prefix, s->prefix_len);
    int tail = snprintf(request + s->prefix_len, 48, "%llu %lld\n", count, offset);
    size_t request_length = s->prefix_len + (size_t)tail;
    int failed = send_request(s->sock, request, request_length, s->timeout_ms);
    if (failed < 0) {
        broke(slot, -failed, facts);
        return 0;
    }
    s->requests++;
    s->sent += request_length;
    /* The reply: its count line, then that many bytes. Nothing else is on the way (one
     * request at a time), so a receive may ask for as much as the longest reply. */
    size_t have = 0, line = 0, whole = FP_REPLY_LINE + count;
    long long result = 0;
    struct reply_deadline deadline = {monotonic_ms() + s->timeout_ms, 0, s->timeout_ms};
    for (;;) {
        ssize_t got = receive_some(s->sock, reply_buffer + have, whole - have, &deadline);
        if (got < 0) {
            broke(slot, (int)-got, facts);
            return 0;
        }
        have += (size_t)got;
        s->received += (unsigned long)got;
        if (line == 0) {
            char *end = memchr(reply_buffer, '\n', have);
            if (end == NULL) {
                if (have >= FP_REPLY_LINE) {
                    broke(slot, EPROTO, facts);
                    return 0;
                }
                continue;
            }
            line = (size_t)(end - reply_buffer) + 1;
            if (!count_line(reply_buffer, line - 1, &result) || result > (long long)count) {
                broke(slot, EPROTO, facts);
                return 0;
            }
            whole = result < 0 ? line : line + (size_t)result;
        }
        if (have > whole) { /* more than the reply: not the conversation we know */
            broke(slot, EPROTO, facts);
            return 0;
        }
        if (have == whole) break;
    }
    if (result < 0) return 0; /* the server's error: the driver asks again and names it */
    char *data = reply_buffer + line;
    if (result > 0) {
        /* The kernel's copy between two buffers misaligned to each other is up to four
         * times slower (1 MiB into a malloc'd buffer: 415 us against 85-100), more than
         * moving the bytes here first costs: they go where their address is the program
         * buffer's modulo a cache line. */
        size_t shift = (size_t)(address - (unsigned long)data) & (FP_LINE_BYTES - 1);
        if (shift) {
            memmove(data + shift, data, (size_t)result);
            data += shift;
        }
        struct iovec local = {data, (size_t)result};
        struct iovec remote = {(void *)address, (size_t)result};
        if (process_vm_writev(pid, &local, 1, &remote, 1, 0) != (ssize_t)result)
            return 0; /* a bad buffer: the agent's own read answers as it does */
    }
    regs->orig_rax = (unsigned long long)-1;
    regs->rax = (unsigned long long)result;
    if (ptrace(PTRACE_SETREGS, pid, 0, regs) != 0) return errno == ESRCH;
    if (serves[nr] == FP_SEQUENTIAL) served_offsets[slot] += result;
    served_total++;
    return 1;
}

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
 * be unmapped: its length, or -1 when it cannot be read or is longer than what one read
 * brings (Python then reads it). */
static ssize_t read_path(pid_t pid, unsigned long addr, char *buf) {
    if (addr == 0) return -1;
    size_t want = FP_PAGE - (addr % FP_PAGE);
    if (want < 256) want += FP_PAGE; /* a short tail: take the next page too, if it is there */
    if (want > FP_PATH_MAX) want = FP_PATH_MAX;
    struct iovec local = {buf, want};
    struct iovec remote = {(void *)addr, want};
    ssize_t got = process_vm_readv(pid, &local, 1, &remote, 1, 0);
    if (got <= 0) return -1;
    char *end = memchr(buf, '\0', (size_t)got);
    return end == NULL ? -1 : end - buf;
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

/* "/" itself is under a prefix only when "/" is one. */
static int leaves_a_prefix(const char *dir, size_t n) {
    return n == 0 ? under_a_prefix("/", 1) : under_a_prefix(dir, n);
}

/* Whether the absolute path (n bytes) stays out of every prefix as the agent sees it: its
 * name collapsed (".", "..", "//" dropped by name, as the namespace does) is under no
 * prefix, and neither is any directory a ".." steps out of (the agent checks those on
 * the server). out receives the collapsed name. */
static int stays_local(const char *path, size_t n, char *out) {
    size_t len = 0; /* out[0..len): "/a/b", "" for the root */
    size_t i = 0;
    if (n == 0 || path[0] != '/') return 0;
    while (i < n) {
        while (i < n && path[i] == '/') i++;
        size_t start = i;
        while (i < n && path[i] != '/') i++;
        size_t part = i - start;
        if (part == 0) break;
        if (part == 1 && path[start] == '.') continue;
        if (part == 2 && path[start] == '.' && path[start + 1] == '.') {
            if (leaves_a_prefix(out, len)) return 0;
            while (len > 0 && out[len - 1] != '/') len--;
            if (len > 0) len--;
            continue;
        }
        out[len++] = '/';
        memcpy(out + len, path + start, part);
        len += part;
    }
    return !leaves_a_prefix(out, len);
}

/* Whether call nr on descriptor fd of pid is the kernel's (1): the descriptor is no
 * remote file's placeholder, or the call only reads one the agent filled; or answered
 * here (2): a read of a remote file registered for compiled reads. The agent finds the
 * file behind a descriptor by stat'ing its /proc link; so does this. */
static int local_descriptor(pid_t pid, long nr, long fd, int remote_files_open,
                            struct user_regs_struct *regs, struct fp_stop_facts *facts) {
    if (!remote_files_open) return 1;
    if (placeholders_unknown) return 0;
    if (fd < 0) return 1; /* no descriptor (mmap's -1) or EBADF: the kernel's either way */
    char link[64];
    snprintf(link, sizeof link, "/proc/%d/fd/%ld", (int)pid, fd);
    struct stat st;
    if (stat(link, &st) != 0) return errno == ENOENT; /* not open: the kernel's EBADF */
    facts->has_descriptor = 1;
    facts->descriptor = fd;
    facts->dev = (unsigned long long)st.st_dev;
    facts->ino = (unsigned long long)st.st_ino;
    for (size_t i = 0; i < placeholder_count; i++)
        if (placeholders[i].dev == (unsigned long long)st.st_dev &&
            placeholders[i].ino == (unsigned long long)st.st_ino) {
            if (placeholders[i].filled) return reads_only[nr];
            if (serves[nr] && placeholders[i].slot >= 0 && regs != NULL &&
                serve_read(pid, nr, regs, (long)placeholders[i].slot, placeholders[i].dev,
                           placeholders[i].ino, facts))
                return 2;
            return 0;
        }
    return 1;
}

/* Whether the program at path (absolute, plainly local) is a 64-bit ELF file whose
 * loader is an absolute, plainly local path, or which has none. */
static int local_elf_program(const char *path) {
    int fd = open(path, O_RDONLY | O_CLOEXEC | O_NOCTTY | O_NONBLOCK);
    if (fd < 0) return 0;
    int local = 0;
    Elf64_Ehdr header;
    Elf64_Phdr phdrs[FP_MAX_PHDRS];
    if (pread(fd, &header, sizeof header, 0) == (ssize_t)sizeof header &&
        memcmp(header.e_ident, ELFMAG, SELFMAG) == 0 && header.e_ident[EI_CLASS] == ELFCLASS64 &&
        header.e_phentsize == sizeof(Elf64_Phdr) && header.e_phnum <= FP_MAX_PHDRS) {
        size_t size = (size_t)header.e_phnum * sizeof(Elf64_Phdr);
        if (pread(fd, phdrs, size, (off_t)header.e_phoff) == (ssize_t)size) {
            local = 1; /* no PT_INTERP: a static program */
            for (size_t i = 0; i < header.e_phnum; i++) {
                if (phdrs[i].p_type != PT_INTERP) continue;
                char loader[FP_PATH_MAX];
                char collapsed[2 * FP_PATH_MAX + 2];
                size_t length = (size_t)phdrs[i].p_filesz;
                local = length >= 2 && length <= sizeof loader &&
                        pread(fd, loader, length, (off_t)phdrs[i].p_offset) == (ssize_t)length;
                if (local) {
                    loader[length - 1] = '\0';
                    length = strlen(loader);
                    local = loader[0] == '/' && stays_local(loader, length, collapsed);
                }
                break;
            }
        }
    }
    close(fd);
    return local;
}

/* Whether the stop of pid at call nr can be resumed without the agent (1), was answered
 * and resumed here (2), or is the agent's (0). */
static int plainly_local(pid_t pid, long nr, int remote_files_open,
                         struct fp_stop_facts *facts) {
    if (nr < 0 || nr >= FP_MAX_NR || kinds[nr] == FP_NONE) return 0;
    if (kinds[nr] == FP_DESCRIPTOR && !remote_files_open) return 1;
    struct user_regs_struct regs;
    if (ptrace(PTRACE_GETREGS, pid, 0, &regs) != 0) return 0;
    facts->registers = regs;
    facts->has_registers = 1;
    if ((long)regs.orig_rax != nr) return 0;
    if (kinds[nr] == FP_DESCRIPTOR)
        return local_descriptor(pid, nr, (int)arg_of(&regs, path_index[nr]), remote_files_open,
                                &regs, facts);
    char path[FP_PATH_MAX];
    unsigned long path_address = (unsigned long)arg_of(&regs, path_index[nr]);
    ssize_t n = read_path(pid, path_address, path);
    if (n < 0) return 0;
    facts->has_path = 1;
    facts->path_address = path_address;
    facts->path_length = n;
    memcpy(facts->path, path, (size_t)n);
    if (n == 0) {
        /* "": the kernel's ENOENT, or with AT_EMPTY_PATH a call on the dirfd (fstat) */
        int flags = flags_index[nr];
        if (flags < 0 || path_index[nr] != 1 || !(arg_of(&regs, flags) & FP_AT_EMPTY_PATH))
            return 0;
        return local_descriptor(pid, nr, (int)regs.rdi, remote_files_open, NULL, facts);
    }
    char collapsed[2 * FP_PATH_MAX + 2];
    if (kinds[nr] == FP_PROGRAM) {
        struct stat st;
        if (path[0] != '/' || !stays_local(path, (size_t)n, collapsed)) return 0;
        if (lstat(path, &st) != 0) return errno == ENOENT;
        return local_elf_program(path);
    }
    if (path[0] == '/') return stays_local(path, (size_t)n, collapsed);
    /* Relative: only to the working directory (an *at call's dirfd is its first argument),
     * and only where that directory is plainly local; then the name it makes is tested. */
    if (path_index[nr] == 1 && (int)regs.rdi != FP_AT_FDCWD) return 0;
    const char *cwd = cwd_of(pid);
    if (cwd == NULL) return 0;
    char joined[2 * FP_PATH_MAX + 2];
    size_t base = strlen(cwd);
    if (base == 1) base = 0; /* "/" */
    if (base + 1 + (size_t)n + 1 > sizeof joined) return 0;
    memcpy(joined, cwd, base);
    joined[base] = '/';
    memcpy(joined + base + 1, path, (size_t)n + 1);
    return stays_local(joined, base + 1 + (size_t)n, collapsed);
}

/* The next stop for the agent: its pid (status in *status, what was learned of it in
 * *facts), or -errno (-ECHILD: none left). */
long fp_wait(int remote_files_open, int *status, struct fp_stop_facts *facts) {
    for (;;) {
        facts->pid = 0;
        pid_t pid = waitpid(-1, status, __WALL);
        if (pid < 0) {
            if (errno == EINTR) return -EINTR; /* Python's signal handlers must run */
            return -errno;
        }
        facts->pid = pid;
        facts->has_nr = facts->has_registers = facts->has_descriptor = facts->has_path = 0;
        facts->broken_slot = -1;
        facts->broken_errno = 0;
        if (!WIFSTOPPED(*status) || (*status >> 8) != (SIGTRAP | (FP_EVENT_SECCOMP << 8)))
            return pid;
        unsigned long nr;
        if (ptrace(PTRACE_GETEVENTMSG, pid, 0, &nr) != 0) return pid;
        facts->nr = nr;
        facts->has_nr = 1;
        int local = plainly_local(pid, (long)nr, remote_files_open, facts);
        if (local == 0) return pid;
        /* ESRCH: killed meanwhile; its end is still to be reported, as for the Python loop. */
        if (ptrace(PTRACE_CONT, pid, 0, 0) != 0 && errno != ESRCH) return pid;
        answered++;
    }
}

/* Mark held[k] = 1 for each (device, inode) pair keys[2k], keys[2k+1] that some descriptor
 * of the tasks pids[0..npids) refers to, as stat of /proc/PID/fd/N says; return how many
 * are held. A task that is gone, or a descriptor closed meanwhile, holds nothing. */
long fp_held(const int *pids, size_t npids, const unsigned long long *keys, size_t nkeys,
             unsigned char *held) {
    size_t found = 0;
    char dir_path[64];
    memset(held, 0, nkeys);
    for (size_t p = 0; p < npids && found < nkeys; p++) {
        snprintf(dir_path, sizeof dir_path, "/proc/%d/fd", pids[p]);
        int dfd = open(dir_path, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
        if (dfd < 0) continue;
        DIR *dir = fdopendir(dfd);
        if (dir == NULL) {
            close(dfd);
            continue;
        }
        struct dirent *entry;
        while (found < nkeys && (entry = readdir(dir)) != NULL) {
            struct stat st;
            if (entry->d_name[0] == '.' || fstatat(dfd, entry->d_name, &st, 0) != 0) continue;
            for (size_t k = 0; k < nkeys; k++) {
                if (!held[k] && keys[2 * k] == (unsigned long long)st.st_dev
                    && keys[2 * k + 1] == (unsigned long long)st.st_ino) {
                    held[k] = 1;
                    found++;
                    break;
                }
            }
        }
        closedir(dir);
    }
    return (long)found;
}

/* The syscall program: file operations with the syscalls real programs use, one per line.
 *
 *   syscall_program ROOT < OPERATIONS
 *
 * It changes into ROOT, then reads one operation a line from stdin and prints one result
 * line per operation on stdout: the operation, its return value or errno name, and what
 * it observed (bytes read as a hash, the offset after it, stat fields, listings). The
 * same operations run on a local directory and on a remote one under the agent (or on a
 * FUSE mount) must print the same lines, except for fields a comparison masks.
 *
 * Paths that start with "/" are taken below ROOT; others are relative to the current
 * directory (which "chdir" and "fchdir" move). As in a chroot, "chdir .." in ROOT stays
 * there: the directory above differs between the two runs compared (other tests' files). Descriptors live in numbered slots
 * (0..15); "cwd" names AT_FDCWD where a directory descriptor is expected. Fields are
 * "key=value" tokens so that a comparison can mask one by name.
 *
 * Operations (FLAGS: RDONLY|WRONLY|RDWR|CREAT|EXCL|TRUNC|APPEND|DIRECTORY|NOFOLLOW|PATH):
 *   open SLOT PATH FLAGS MODE          openat SLOT DIR PATH FLAGS MODE
 *   close SLOT                          dup SLOT NEWSLOT
 *   read SLOT N                         write SLOT N SEED
 *   readv SLOT N1 N2                    writev SLOT N1 N2 SEED
 *   pread SLOT N OFFSET                 pwrite SLOT N OFFSET SEED
 *   lseek SLOT OFFSET SET|CUR|END       ftruncate SLOT LENGTH
 *   fstat SLOT                          fstatat DIR PATH 0|NOFOLLOW|EMPTY
 *   statx DIR PATH 0|NOFOLLOW           stat PATH          lstat PATH
 *   getdents SLOT                       fsync SLOT
 *   chdir PATH     fchdir SLOT          getcwd
 *   mkdirat DIR PATH MODE               unlinkat DIR PATH 0|REMOVEDIR
 *   renameat DIR PATH DIR PATH          linkat DIR PATH DIR PATH
 *   symlinkat TARGET DIR PATH           readlinkat DIR PATH
 *   fchmodat DIR PATH MODE              truncate PATH LENGTH
 *   forkread SLOT N                     forkwrite SLOT N SEED
 *   bind PATH                           root DIRECTORY (close every slot, start afresh there)
 * A name in PATH may be written %N: N bytes of 'n' (names too long, 255-byte components).
 */
#define _GNU_SOURCE
#include <dirent.h>
#include <errno.h>
#include <grp.h>
#include <fcntl.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#include <sys/types.h>
#include <sys/uio.h>
#include <sys/un.h>
#include <sys/wait.h>
#include <unistd.h>

#define SLOTS 16
#define MAX_IO (1 << 21)
#define MAX_TOKENS 8

static int slots[SLOTS];
static char root[4096];
static unsigned char buffer[MAX_IO];
static unsigned char buffer2[MAX_IO];

static const char *errno_name(int e) {
    switch (e) {
#define E(x) case x: return #x;
        E(EPERM) E(ENOENT) E(EIO) E(EBADF) E(EACCES) E(EEXIST) E(EXDEV) E(ENOTDIR)
        E(EISDIR) E(EINVAL) E(EMFILE) E(EFBIG) E(ENOSPC) E(ESPIPE) E(EROFS) E(EMLINK)
        E(ENAMETOOLONG) E(ENOTEMPTY) E(ELOOP) E(ENOSYS) E(EOPNOTSUPP) E(EBUSY) E(ETXTBSY)
        E(EADDRINUSE) E(EADDRNOTAVAIL) E(ECONNREFUSED) E(EAGAIN) E(EFAULT) E(ENXIO) E(ESTALE)
        E(ENODATA) E(EOVERFLOW) E(ENOMEM)
#undef E
    default: {
        const char *name = strerrorname_np(e);
        return name ? name : "E?";
    }
    }
}

static void result(long ret) {
    if (ret < 0)
        printf(" ret=-1 errno=%s", errno_name(errno));
    else
        printf(" ret=%ld", ret);
}

/* Expand %N into N bytes of 'n'; prefix "/" with ROOT. */
static const char *path_of(const char *token, char *out, size_t size) {
    char expanded[8192];
    size_t n = 0;
    for (const char *p = token; *p && n + 1 < sizeof expanded;) {
        if (*p == '%') {
            long count = strtol(p + 1, (char **)&p, 10);
            while (count-- > 0 && n + 1 < sizeof expanded) expanded[n++] = 'n';
        } else {
            expanded[n++] = *p++;
        }
    }
    expanded[n] = 0;
    if (strcmp(expanded, "''") == 0) expanded[0] = 0;
    if (expanded[0] == '/')
        snprintf(out, size, "%s%s", root, expanded);
    else
        snprintf(out, size, "%s", expanded);
    return out;
}

static int flags_of(const char *token) {
    static const struct { const char *name; int value; } names[] = {
        {"RDONLY", O_RDONLY}, {"WRONLY", O_WRONLY}, {"RDWR", O_RDWR}, {"CREAT", O_CREAT},
        {"EXCL", O_EXCL}, {"TRUNC", O_TRUNC}, {"APPEND", O_APPEND}, {"DIRECTORY", O_DIRECTORY},
        {"NOFOLLOW", O_NOFOLLOW}, {"PATH", O_PATH}, {"0", 0},
    };
    int flags = 0;
    char copy[256];
    snprintf(copy, sizeof copy, "%s", token);
    for (char *save = NULL, *word = strtok_r(copy, "|", &save); word; word = strtok_r(NULL, "|", &save))
        for (size_t i = 0; i < sizeof names / sizeof names[0]; i++)
            if (strcmp(word, names[i].name) == 0) flags |= names[i].value;
    return flags;
}

static int at_flags_of(const char *token) {
    if (strcmp(token, "NOFOLLOW") == 0) return AT_SYMLINK_NOFOLLOW;
    if (strcmp(token, "REMOVEDIR") == 0) return AT_REMOVEDIR;
    if (strcmp(token, "EMPTY") == 0) return AT_EMPTY_PATH;
    return 0;
}

static int slot_of(const char *token) {
    int slot = atoi(token);
    return slot >= 0 && slot < SLOTS ? slot : 0;
}

static int dirfd_of(const char *token) {
    return strcmp(token, "cwd") == 0 ? AT_FDCWD : slots[slot_of(token)];
}

static void fill(unsigned char *data, long size, long seed) {
    for (long i = 0; i < size; i++) data[i] = (unsigned char)('a' + (seed + i) % 26);
}

/* FNV-1a: a read's bytes as one short token; the first bytes in clear help a reader. */
static void print_bytes(const unsigned char *data, long size) {
    uint64_t hash = 1469598103934665603ULL;
    for (long i = 0; i < size; i++) hash = (hash ^ data[i]) * 1099511628211ULL;
    printf(" data=%.*s~%016llx", (int)(size < 12 ? size : 12), data, (unsigned long long)hash);
}

static int is_directory(int fd) {
    struct stat st;
    return fstat(fd, &st) == 0 && S_ISDIR(st.st_mode);
}

/* A directory's offsets are cookies of the file system's own (hashes on ext4): not compared. */
static void print_offset(int fd) {
    if (fd >= 0 && is_directory(fd)) {
        printf(" off=dir");
        return;
    }
    off_t offset = lseek(fd, 0, SEEK_CUR);
    if (offset < 0)
        printf(" off=%s", errno_name(errno));
    else
        printf(" off=%lld", (long long)offset);
}

static char type_letter(mode_t mode) {
    switch (mode & S_IFMT) {
    case S_IFREG: return 'f';
    case S_IFDIR: return 'd';
    case S_IFLNK: return 'l';
    case S_IFSOCK: return 's';
    case S_IFIFO: return 'p';
    default: return '?';
    }
}

/* A directory's size and link count are the file system's own (4096 on ext4, entries on
 * others): only a file's are compared. */
static void print_fields(mode_t mode, long long size, unsigned long nlink, uid_t uid) {
    printf(" type=%c perm=%04o", type_letter(mode), (unsigned)(mode & 07777));
    if (S_ISDIR(mode))
        printf(" size=dir nlink=dir");
    else
        printf(" size=%lld nlink=%lu", size, nlink);
    printf(" owner=%s", uid == geteuid() ? "me" : "other");
}

static void print_stat(const struct stat *st) {
    print_fields(st->st_mode, (long long)st->st_size, (unsigned long)st->st_nlink, st->st_uid);
}

static void print_statx(const struct statx *st) {
    print_fields(st->stx_mode, (long long)st->stx_size, st->stx_nlink, st->stx_uid);
}

static int compare_names(const void *a, const void *b) {
    return strcmp(*(char *const *)a, *(char *const *)b);
}

/* getdents64 from the start of the directory: names with their d_type, sorted. */
static void list_directory(int fd) {
    if (lseek(fd, 0, SEEK_SET) < 0) {
        printf(" seek=%s", errno_name(errno));
    }
    char *names[4096];
    int count = 0;
    long total = 0;
    for (;;) {
        long n = syscall(SYS_getdents64, fd, buffer, sizeof buffer);
        if (n < 0) {
            result(n);
            return;
        }
        if (n == 0) break;
        for (long at = 0; at < n;) {
            struct { uint64_t ino; int64_t off; unsigned short reclen; unsigned char type; char name[]; } *d =
                (void *)(buffer + at);
            char type = d->type == DT_DIR ? 'd' : d->type == DT_REG ? 'f' : d->type == DT_LNK ? 'l'
                      : d->type == DT_SOCK ? 's' : d->type == DT_UNKNOWN ? 'u' : '?';
            if (count < 4096 && asprintf(&names[count], "%s:%c", d->name, type) > 0) count++;
            total++;
            at += d->reclen;
        }
    }
    qsort(names, (size_t)count, sizeof names[0], compare_names);
    printf(" ret=%ld entries=", total);
    for (int i = 0; i < count; i++) {
        printf("%s%s", i ? "," : "", names[i]);
        free(names[i]);
    }
}

static void run(char **t, int n) {
    char p1[8192], p2[8192];
    const char *op = t[0];
    long ret;
#define NEED(k) if (n < (k) + 1) { printf(" bad-arguments"); return; }
    if (strcmp(op, "open") == 0 || strcmp(op, "openat") == 0) {
        int at = op[4] == 'a';
        NEED(4 + at);
        int slot = slot_of(t[1]);
        int dir = at ? dirfd_of(t[2]) : AT_FDCWD;
        ret = at ? openat(dir, path_of(t[2 + at], p1, sizeof p1), flags_of(t[3 + at]), (mode_t)strtol(t[4 + at], NULL, 8))
                 : open(path_of(t[2], p1, sizeof p1), flags_of(t[3]), (mode_t)strtol(t[4], NULL, 8));
        printf(" ret=%s", ret >= 0 ? "fd" : errno_name(errno));
        if (ret >= 0) {
            if (slots[slot] >= 0) close(slots[slot]);
            slots[slot] = (int)ret;
            /* the descriptor number is the kernel's or the agent's: not printed */
            print_offset((int)ret);
        }
    } else if (strcmp(op, "close") == 0) {
        NEED(1);
        int slot = slot_of(t[1]);
        result(close(slots[slot]));
        slots[slot] = -1;
    } else if (strcmp(op, "dup") == 0) {
        NEED(2);
        int slot = slot_of(t[1]), to = slot_of(t[2]);
        ret = dup(slots[slot]);
        printf(" ret=%s", ret >= 0 ? "fd" : errno_name(errno));
        if (ret >= 0) {
            if (slots[to] >= 0 && to != slot) close(slots[to]);
            slots[to] = (int)ret;
        }
    } else if (strcmp(op, "read") == 0) {
        NEED(2);
        int fd = slots[slot_of(t[1])];
        long size = atol(t[2]) % MAX_IO;
        ret = read(fd, buffer, (size_t)size);
        result(ret);
        if (ret >= 0) print_bytes(buffer, ret);
        print_offset(fd);
    } else if (strcmp(op, "write") == 0) {
        NEED(3);
        int fd = slots[slot_of(t[1])];
        long size = atol(t[2]) % MAX_IO;
        fill(buffer, size, atol(t[3]));
        result(write(fd, buffer, (size_t)size));
        print_offset(fd);
    } else if (strcmp(op, "readv") == 0) {
        NEED(3);
        int fd = slots[slot_of(t[1])];
        long a = atol(t[2]) % MAX_IO, b = atol(t[3]) % MAX_IO;
        struct iovec iov[2] = {{buffer, (size_t)a}, {buffer2, (size_t)b}};
        ret = readv(fd, iov, 2);
        result(ret);
        if (ret >= 0) {
            long first = ret < a ? ret : a;
            memcpy(buffer + first, buffer2, (size_t)(ret - first));
            print_bytes(buffer, ret);
        }
        print_offset(fd);
    } else if (strcmp(op, "writev") == 0) {
        NEED(4);
        int fd = slots[slot_of(t[1])];
        long a = atol(t[2]) % MAX_IO, b = atol(t[3]) % MAX_IO;
        fill(buffer, a, atol(t[4]));
        fill(buffer2, b, atol(t[4]) + 13);
        struct iovec iov[2] = {{buffer, (size_t)a}, {buffer2, (size_t)b}};
        result(writev(fd, iov, 2));
        print_offset(fd);
    } else if (strcmp(op, "pread") == 0) {
        NEED(3);
        int fd = slots[slot_of(t[1])];
        long size = atol(t[2]) % MAX_IO;
        ret = pread(fd, buffer, (size_t)size, atol(t[3]));
        result(ret);
        if (ret >= 0) print_bytes(buffer, ret);
        print_offset(fd);
    } else if (strcmp(op, "pwrite") == 0) {
        NEED(4);
        int fd = slots[slot_of(t[1])];
        long size = atol(t[2]) % MAX_IO;
        fill(buffer, size, atol(t[4]));
        result(pwrite(fd, buffer, (size_t)size, atol(t[3])));
        print_offset(fd);
    } else if (strcmp(op, "lseek") == 0) {
        NEED(3);
        int whence = strcmp(t[3], "CUR") == 0 ? SEEK_CUR : strcmp(t[3], "END") == 0 ? SEEK_END : SEEK_SET;
        int fd = slots[slot_of(t[1])];
        ret = lseek(fd, atol(t[2]), whence);
        if (ret >= 0 && is_directory(fd))
            printf(" ret=dir");
        else
            result(ret);
    } else if (strcmp(op, "ftruncate") == 0) {
        NEED(2);
        int fd = slots[slot_of(t[1])];
        result(ftruncate(fd, atol(t[2])));
        print_offset(fd);
    } else if (strcmp(op, "truncate") == 0) {
        NEED(2);
        result(truncate(path_of(t[1], p1, sizeof p1), atol(t[2])));
    } else if (strcmp(op, "fsync") == 0) {
        NEED(1);
        result(fsync(slots[slot_of(t[1])]));
    } else if (strcmp(op, "fstat") == 0) {
        NEED(1);
        struct stat st;
        ret = fstat(slots[slot_of(t[1])], &st);
        result(ret);
        if (ret == 0) print_stat(&st);
    } else if (strcmp(op, "fstatat") == 0 || strcmp(op, "stat") == 0 || strcmp(op, "lstat") == 0) {
        struct stat st;
        if (op[0] == 'l' || op[0] == 's') { /* stat PATH, lstat PATH; fstatat DIRFD PATH FLAGS */
            NEED(1);
            path_of(t[1], p1, sizeof p1);
            ret = op[0] == 'l' ? lstat(p1, &st) : stat(p1, &st);
        } else {
            NEED(3);
            ret = fstatat(dirfd_of(t[1]), path_of(t[2], p1, sizeof p1), &st, at_flags_of(t[3]));
        }
        result(ret);
        if (ret == 0) print_stat(&st);
    } else if (strcmp(op, "statx") == 0) {
        NEED(3);
        struct statx stx;
        ret = statx(dirfd_of(t[1]), path_of(t[2], p1, sizeof p1), at_flags_of(t[3]), STATX_BASIC_STATS, &stx);
        result(ret);
        if (ret == 0) print_statx(&stx);
    } else if (strcmp(op, "getdents") == 0) {
        NEED(1);
        list_directory(slots[slot_of(t[1])]);
    } else if (strcmp(op, "chdir") == 0) {
        NEED(1);
        struct stat here, top;
        int at_root = strcmp(t[1], "..") == 0 && stat(".", &here) == 0 && stat(root, &top) == 0 &&
                      here.st_dev == top.st_dev && here.st_ino == top.st_ino;
        result(chdir(at_root ? root : path_of(t[1], p1, sizeof p1)));
    } else if (strcmp(op, "fchdir") == 0) {
        NEED(1);
        result(fchdir(slots[slot_of(t[1])]));
    } else if (strcmp(op, "getcwd") == 0) {
        char *cwd = getcwd(p1, sizeof p1);
        if (!cwd) {
            result(-1);
        } else {
            size_t length = strlen(root);
            printf(" ret=0 cwd=%s", strncmp(cwd, root, length) == 0 ? (cwd[length] ? cwd + length : "/") : "(outside)");
        }
    } else if (strcmp(op, "mkdirat") == 0) {
        NEED(3);
        result(mkdirat(dirfd_of(t[1]), path_of(t[2], p1, sizeof p1), (mode_t)strtol(t[3], NULL, 8)));
    } else if (strcmp(op, "unlinkat") == 0) {
        NEED(3);
        result(unlinkat(dirfd_of(t[1]), path_of(t[2], p1, sizeof p1), at_flags_of(t[3])));
    } else if (strcmp(op, "renameat") == 0 || strcmp(op, "linkat") == 0) {
        NEED(4);
        path_of(t[2], p1, sizeof p1);
        path_of(t[4], p2, sizeof p2);
        result(op[0] == 'r' ? renameat(dirfd_of(t[1]), p1, dirfd_of(t[3]), p2)
                            : linkat(dirfd_of(t[1]), p1, dirfd_of(t[3]), p2, 0));
    } else if (strcmp(op, "symlinkat") == 0) {
        NEED(3);
        char target[8192];
        snprintf(target, sizeof target, "%s", t[1]);
        result(symlinkat(target, dirfd_of(t[2]), path_of(t[3], p1, sizeof p1)));
    } else if (strcmp(op, "readlinkat") == 0) {
        NEED(2);
        ret = readlinkat(dirfd_of(t[1]), path_of(t[2], p1, sizeof p1), p2, sizeof p2 - 1);
        result(ret);
        if (ret >= 0) printf(" target=%.*s", (int)ret, p2);
    } else if (strcmp(op, "fchmodat") == 0) {
        NEED(3);
        result(fchmodat(dirfd_of(t[1]), path_of(t[2], p1, sizeof p1), (mode_t)strtol(t[3], NULL, 8), 0));
    } else if (strcmp(op, "forkread") == 0 || strcmp(op, "forkwrite") == 0) {
        NEED(2);
        int fd = slots[slot_of(t[1])];
        long size = atol(t[2]) % MAX_IO;
        int writing = op[4] == 'w';
        if (writing) {
            NEED(3);
            fill(buffer, size, atol(t[3]));
        }
        fflush(stdout);
        pid_t child = fork();
        if (child == 0) {
            long done = writing ? write(fd, buffer, (size_t)size) : read(fd, buffer, (size_t)size);
            _exit(done < 0 ? 100 : (int)(done % 100));
        }
        int status = 0;
        if (child < 0 || waitpid(child, &status, 0) < 0) {
            result(-1);
        } else {
            printf(" child=%d", WIFEXITED(status) ? WEXITSTATUS(status) : -1);
        }
        print_offset(fd);
    } else if (strcmp(op, "bind") == 0) {
        NEED(1);
        struct sockaddr_un address = {.sun_family = AF_UNIX};
        snprintf(address.sun_path, sizeof address.sun_path, "%s", path_of(t[1], p1, sizeof p1));
        int sock = socket(AF_UNIX, SOCK_STREAM, 0);
        result(bind(sock, (struct sockaddr *)&address, sizeof address));
        close(sock);
    } else if (strcmp(op, "unprivileged") == 0) {
        /* Root passes every permission check: the lines after this one run as the given
           user (groups dropped), so that mode bits are checked. A program already
           unprivileged stays as it is. */
        NEED(1);
        uid_t uid = (uid_t)strtoul(t[1], NULL, 10);
        if (geteuid() != 0) {
            result(0);
        } else if (setgroups(0, NULL) != 0 || setresgid(uid, uid, uid) != 0) {
            result(-1);
        } else {
            result(setresuid(uid, uid, uid));
        }
    } else if (strcmp(op, "root") == 0) {
        /* A fresh start in another directory: several sequences share one process. */
        NEED(1);
        for (int i = 0; i < SLOTS; i++)
            if (slots[i] >= 0) {
                close(slots[i]);
                slots[i] = -1;
            }
        snprintf(root, sizeof root, "%s", t[1]);
        result(chdir(root));
    } else {
        printf(" unknown-operation");
    }
}

int main(int argc, char **argv) {
    if (argc != 2) {
        fprintf(stderr, "usage: syscall_program ROOT < OPERATIONS\n");
        return 2;
    }
    snprintf(root, sizeof root, "%s", argv[1]);
    size_t length = strlen(root);
    while (length > 1 && root[length - 1] == '/') root[--length] = 0;
    for (int i = 0; i < SLOTS; i++) slots[i] = -1;
    umask(022);
    if (chdir(root) != 0) {
        fprintf(stderr, "syscall_program: %s: %s\n", root, strerror(errno));
        return 1;
    }
    char line[16384];
    for (int number = 0; fgets(line, sizeof line, stdin); number++) {
        line[strcspn(line, "\n")] = 0;
        char *tokens[MAX_TOKENS];
        int n = 0;
        for (char *save = NULL, *word = strtok_r(line, " ", &save); word && n < MAX_TOKENS;
             word = strtok_r(NULL, " ", &save))
            tokens[n++] = word;
        if (n == 0) continue;
        printf("%d %s", number, tokens[0]);
        errno = 0;
        run(tokens, n);
        printf("\n");
        fflush(stdout);
    }
    return 0;
}

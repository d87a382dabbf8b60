/* An escape catalogue: one attempt per family at TREE/secret, under `aviary run`'s sandbox.
 *
 * Usage: sandbox_catalogue FAMILY TREE SECONDS
 *
 * The tree (made by tests/test_sandbox_escapes.py): secret/key (the secret), secret/prog
 * (a copy of echo: a program the sandbox refuses to run), allowed/ky (an allowed file whose
 * path is as long as secret/key's), allowed/secret/key (a decoy).
 *
 * Each family tries to read secret/key, to change it (mode 0604, times, an xattr) or
 * to add a file to secret/, and to run secret/prog. It prints "FAMILY step result=R
 * errno=E" lines, "DATA:..." when it read the secret, and the denied program prints
 * "RAN-DENIED". The test judges: the secret in the output, a change under secret/ on
 * disk, or RAN-DENIED where running it is refused, is an escape. Races run for SECONDS.
 */
#define _GNU_SOURCE
#include <errno.h>
#include <fcntl.h>
#include <pthread.h>
#include <sched.h>
#include <signal.h>
#include <stdatomic.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#include <sys/uio.h>
#include <sys/wait.h>
#include <sys/xattr.h>
#include <time.h>
#include <unistd.h>

#include "raw_path_call.h"

extern char **environ;

static char tree[2048], secret[4096], secret_dir[4096], prog[4096], allowed[4096];
static char allowed_file[4096];
static double seconds;
static atomic_int stop;

static void step(const char *family, const char *what, long result) {
    printf("%s %s result=%ld errno=%d\n", family, what, result, result < 0 ? errno : 0);
}

/* Read fd and print the data if it is the secret. */
static void leak(int fd) {
    char data[256];
    if (fd < 0) return;
    ssize_t n = pread(fd, data, sizeof data - 1, 0);
    if (n > 0) {
        data[n] = 0;
        if (strstr(data, "TOPSECRET")) printf("DATA:%s", data);
    }
}

static double elapsed(const struct timespec *start) {
    struct timespec now;
    clock_gettime(CLOCK_MONOTONIC, &now);
    return (double)(now.tv_sec - start->tv_sec) + (now.tv_nsec - start->tv_nsec) / 1e9;
}

static void spin(void) {
    for (volatile int i = 0; i < 2000; i++) continue;
}

/* Run fd (execveat AT_EMPTY_PATH) or path in a child; wait for it (bounded by the test). */
static long run_child(int fd, const char *path) {
    pid_t child = fork();
    if (child == 0) {
        char *argv[] = {"x", "RAN-DENIED", NULL};
        if (path) execve(path, argv, environ);
        else syscall(SYS_execveat, fd, "", argv, environ, AT_EMPTY_PATH);
        _exit(100 + errno);
    }
    int status = 0;
    waitpid(child, &status, 0);
    return WIFEXITED(status) ? WEXITSTATUS(status) : 128 + WTERMSIG(status);
}

/* ENAMETOOLONG: a working directory deeper than PATH_MAX, then a relative way up. */
static void longpath(void) {
    char name[201], rel[8192] = "";
    memset(name, 'd', 200);
    name[200] = 0;
    int depth = 0;
    if (chdir(allowed) != 0) return;
    for (int i = 0; i < 30; i++) {
        if (mkdir(name, 0755) != 0 && errno != EEXIST) break;
        if (chdir(name) != 0) break;
        depth++;
    }
    printf("longpath depth=%d\n", depth);
    for (int i = 0; i < depth + 1; i++) strcat(rel, "../");
    size_t base = strlen(rel);
    strcat(rel, "secret/key");
    int fd = open(rel, O_RDONLY);
    step("longpath", "open", fd);
    leak(fd);
    step("longpath", "chmod", chmod(rel, 0604));
    strcpy(rel + base, "secret/new-longpath");
    step("longpath", "creat", creat(rel, 0644));
    chdir(allowed);
}

/* An O_PATH descriptor of a parent of the jail, then *at calls and AT_EMPTY_PATH on it. */
static void opath_parent(void) {
    int parent = open(tree, O_PATH | O_DIRECTORY);
    step("opath_parent", "open_parent", parent);
    int fd = openat(parent, "secret/key", O_RDONLY);
    step("opath_parent", "openat", fd);
    leak(fd);
    int key = openat(parent, "secret/key", O_PATH);
    step("opath_parent", "openat_opath", key);
    step("opath_parent", "fchmodat2_empty", syscall(452, key, "", 0604, AT_EMPTY_PATH));
    step("opath_parent", "fchownat_empty",
         fchownat(key, "", getuid(), getgid(), AT_EMPTY_PATH));
    int root = open("/", O_PATH | O_DIRECTORY);
    fd = openat(root, secret + 1, O_RDONLY);
    step("opath_parent", "openat_root", fd);
    leak(fd);
    step("opath_parent", "mkdirat", mkdirat(parent, "secret/new-opath", 0755));
}

/* Changes through descriptors: fchmod, fchown, futimens, fsetxattr, on plain and O_PATH fds. */
static void fdcalls(void) {
    int fd = open(secret, O_RDONLY);
    step("fdcalls", "open", fd);
    leak(fd);
    step("fdcalls", "fchmod", fchmod(fd, 0604));
    step("fdcalls", "fchown", fchown(fd, getuid(), getgid()));
    step("fdcalls", "futimens", futimens(fd, NULL));
    step("fdcalls", "fsetxattr", fsetxattr(fd, "user.escape", "1", 1, 0));
    int path = open(secret, O_PATH);
    step("fdcalls", "open_opath", path);
    step("fdcalls", "fchmodat2_empty", syscall(452, path, "", 0604, AT_EMPTY_PATH));
    step("fdcalls", "fchownat_empty", fchownat(path, "", getuid(), getgid(), AT_EMPTY_PATH));
    step("fdcalls", "utimensat_empty", utimensat(path, "", NULL, AT_EMPTY_PATH));
    int dir = open(secret_dir, O_PATH | O_DIRECTORY);
    step("fdcalls", "open_dir_opath", dir);
    step("fdcalls", "fchmodat2_dir", syscall(452, dir, "", 0700, AT_EMPTY_PATH));
}

static int shebang_memfd(const char *line) {
    int memfd = (int)syscall(SYS_memfd_create, "catalogue", 0);
    if (memfd >= 0 && write(memfd, line, strlen(line)) < 0) return -1;
    return memfd;
}

/* A memfd holding "#!secret/prog", run by execveat(AT_EMPTY_PATH). */
static void memfd_execveat(void) {
    char line[4200];
    snprintf(line, sizeof line, "#!%s RAN-DENIED\n", prog);
    int memfd = shebang_memfd(line);
    step("memfd_execveat", "memfd", memfd);
    step("memfd_execveat", "exit", run_child(memfd, NULL));
}

/* The same memfd run through /proc/self/fd/N. */
static void memfd_procfd(void) {
    char line[4200], path[64];
    snprintf(line, sizeof line, "#!%s RAN-DENIED\n", prog);
    int memfd = shebang_memfd(line);
    snprintf(path, sizeof path, "/proc/self/fd/%d", memfd);
    step("memfd_procfd", "exit", run_child(-1, path));
}

/* A script of the allowed tree whose interpreter is the denied program, and execveat of an
 * O_PATH descriptor of the denied program itself. */
static void interpreter(void) {
    char script[4200], line[4200];
    snprintf(script, sizeof script, "%s/script", allowed);
    snprintf(line, sizeof line, "#!%s RAN-DENIED\n", prog);
    int fd = open(script, O_WRONLY | O_CREAT | O_TRUNC, 0755);
    if (fd >= 0) {
        write(fd, line, strlen(line));
        close(fd);
    }
    step("interpreter", "script_exit", run_child(-1, script));
    int direct = open(prog, O_PATH);
    step("interpreter", "open_opath", direct);
    step("interpreter", "execveat_exit", run_child(direct, NULL));
}

/* A thread rewrites a memfd's #! line between an allowed and the denied interpreter while
 * children run it. */
static int race_memfd;
static char race_lines[2][4200];

static void *rewrite_shebang(void *unused) {
    (void)unused;
    for (int i = 0; !atomic_load(&stop); i ^= 1) {
        pwrite(race_memfd, race_lines[i], strlen(race_lines[i]), 0);
        spin();
    }
    return NULL;
}

static void interpreter_race(void) {
    snprintf(race_lines[1], sizeof race_lines[1], "#!%s RAN-DENIED\n", prog);
    snprintf(race_lines[0], sizeof race_lines[0], "#!/bin/echo %*s\n",
             (int)(strlen(race_lines[1]) - strlen("#!/bin/echo \n")), "allowed");
    race_memfd = shebang_memfd(race_lines[0]);
    pthread_t thread;
    pthread_create(&thread, NULL, rewrite_shebang, NULL);
    struct timespec start;
    clock_gettime(CLOCK_MONOTONIC, &start);
    long runs = 0;
    while (runs < 2000 && elapsed(&start) < seconds) {
        run_child(race_memfd, NULL);
        runs++;
    }
    atomic_store(&stop, 1);
    pthread_join(thread, NULL);
    atomic_store(&stop, 0);
    printf("interpreter_race runs=%ld\n", runs);
}

/* A thread flips the working directory between allowed/ (whose secret/key is a decoy) and
 * the tree, while opens go through /proc/self/cwd and plain relative paths. */
static void *flip_cwd(void *unused) {
    (void)unused;
    while (!atomic_load(&stop)) {
        chdir(tree);
        spin();
        chdir(allowed);
        spin();
    }
    return NULL;
}

static void proc_cwd_race(void) {
    chdir(allowed);
    pthread_t thread;
    pthread_create(&thread, NULL, flip_cwd, NULL);
    struct timespec start;
    clock_gettime(CLOCK_MONOTONIC, &start);
    long opened = 0, refused = 0;
    while (opened + refused < 200000 && elapsed(&start) < seconds) {
        const char *path = (opened + refused) % 2 ? "/proc/self/cwd/secret/key" : "secret/key";
        int fd = open(path, O_RDONLY);
        if (fd >= 0) {
            leak(fd);
            close(fd);
            opened++;
        } else {
            refused++;
        }
        chmod("/proc/self/cwd/secret/key", 0604);
    }
    atomic_store(&stop, 1);
    pthread_join(thread, NULL);
    atomic_store(&stop, 0);
    chdir(allowed);
    printf("proc_cwd_race opened=%ld refused=%ld\n", opened, refused);
}

/* A clone(CLONE_VM) sibling overwrites the agent's copy of the path with the secret's
 * path, while the caller opens (and chmods) an allowed file. The copy's address is where
 * the agent pointed the call: x86_64 keeps the argument registers across a syscall, so
 * the raw syscalls below read it back from rdi/rsi. If the copy cannot be written, the
 * program tries to make it writable (mprotect, madvise, munmap, mmap MAP_FIXED, mremap)
 * and the sibling writes it through the kernel (read() from a pipe into it). */
static volatile char *copy_at[2];
static volatile int copy_writable;
static int copy_pipe[2];

static long raw_open(const char *path, long *copy) {
    long rdi;
    long ret = raw_path_call(SYS_open, path, O_RDONLY, &rdi, copy);
    /* open runs as openat2(AT_FDCWD, copy, how, size) */
    if (*copy == O_RDONLY) *copy = rdi;
    return ret;
}

static long raw_chmod(const char *path, long *copy) {
    long rsi;
    return raw_path_call(SYS_chmod, path, 0604, copy, &rsi);
}

/* The copy's address if the register points at a copy of allowed_file, else 0. */
static volatile char *a_copy(long address) {
    if (address == (long)allowed_file || address < 4096) return NULL;
    char probe[4200];
    struct iovec local = {probe, strlen(allowed_file) + 1}, remote = {(void *)address, local.iov_len};
    /* read it through the kernel: an unmapped address is EFAULT, not a crash */
    if (syscall(SYS_process_vm_readv, getpid(), &local, 1, &remote, 1, 0) != (long)local.iov_len)
        return NULL;
    return memcmp(probe, allowed_file, local.iov_len) == 0 ? (volatile char *)address : NULL;
}

static int writable(volatile char *address) {
    size_t length = strlen(allowed_file) + 1;
    if (write(copy_pipe[1], allowed_file, length) != (ssize_t)length) return 0;
    return read(copy_pipe[0], (char *)address, length) == (ssize_t)length;
}

static void make_writable(volatile char *address) {
    char *page = (char *)((uintptr_t)address & ~(uintptr_t)4095);
    step("clone_vm", "mprotect", mprotect(page, 4096, PROT_READ | PROT_WRITE));
    step("clone_vm", "madvise_dontneed", madvise(page, 4096, MADV_DONTNEED));
    void *fixed = mmap(page, 4096, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS | MAP_FIXED,
                       -1, 0);
    step("clone_vm", "mmap_fixed", fixed == MAP_FAILED ? -1 : 0);
    char *other = mmap(NULL, 4096, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
    void *moved = mremap(other, 4096, 4096, MREMAP_MAYMOVE | MREMAP_FIXED, page);
    step("clone_vm", "mremap_onto", moved == MAP_FAILED ? -1 : 0);
    step("clone_vm", "munmap", munmap(page, 4096));
}

static int sibling(void *unused) {
    (void)unused;
    size_t length = strlen(secret) + 1;
    while (!atomic_load(&stop))
        for (int i = 0; i < 2; i++) {
            if (!copy_at[i]) continue;
            if (copy_writable) {
                memcpy((char *)copy_at[i], secret, length);
            } else if (write(copy_pipe[1], secret, length) == (ssize_t)length &&
                       read(copy_pipe[0], (char *)copy_at[i], length) < 0) {
                char drain[4200];
                read(copy_pipe[0], drain, length); /* EFAULT: the copy stays as checked */
            }
        }
    return 0;
}

static void clone_vm(void) {
    long address = 0;
    pipe(copy_pipe);
    long fd = raw_open(allowed_file, &address);
    if (fd >= 0) close(fd);
    copy_at[0] = a_copy(address);
    raw_chmod(allowed_file, &address);
    copy_at[1] = a_copy(address);
    printf("clone_vm copy_found=%d,%d\n", copy_at[0] != 0, copy_at[1] != 0);
    if (!copy_at[0] && !copy_at[1]) return;
    volatile char *copy = copy_at[0] ? copy_at[0] : copy_at[1];
    copy_writable = writable(copy);
    if (!copy_writable) {
        make_writable(copy);
        copy_writable = writable(copy);
    }
    printf("clone_vm copy_writable=%d\n", copy_writable);
    char *stack = mmap(NULL, 1 << 16, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
    pid_t child = clone(sibling, stack + (1 << 16), CLONE_VM | SIGCHLD, NULL);
    struct timespec start;
    clock_gettime(CLOCK_MONOTONIC, &start);
    long opened = 0, refused = 0;
    while (opened + refused < 200000 && elapsed(&start) < seconds) {
        fd = raw_open(allowed_file, &address);
        if (fd >= 0) {
            leak((int)fd);
            close((int)fd);
            opened++;
        } else {
            refused++;
        }
        raw_chmod(allowed_file, &address);
    }
    atomic_store(&stop, 1);
    waitpid(child, NULL, 0);
    atomic_store(&stop, 0);
    printf("clone_vm opened=%ld refused=%ld\n", opened, refused);
}

/* A thread swaps allowed/d between a real directory and a symlink to secret/ (atomically,
 * RENAME_EXCHANGE), so that no symlink is there when the path is checked, while link()
 * copies d/key out (a hard link to the secret) and links a file into d (into secret/). */
static char swap_dir[4200], swap_spare[4200];

static void *swap_directory(void *unused) {
    (void)unused;
    while (!atomic_load(&stop)) { /* the real directory and the symlink trade places */
        syscall(SYS_renameat2, AT_FDCWD, swap_dir, AT_FDCWD, swap_spare, 2 /* EXCHANGE */);
        spin();
    }
    return NULL;
}

static void link_race(void) {
    char real_key[4300], from[4300], stolen[4300], into[4300];
    snprintf(swap_dir, sizeof swap_dir, "%s/d", allowed);
    snprintf(swap_spare, sizeof swap_spare, "%s/d.spare", allowed);
    snprintf(real_key, sizeof real_key, "%s/key", swap_dir);
    snprintf(from, sizeof from, "%s/key", swap_dir);
    snprintf(stolen, sizeof stolen, "%s/stolen", allowed);
    snprintf(into, sizeof into, "%s/new-link", swap_dir);
    mkdir(swap_dir, 0755);
    close(open(real_key, O_WRONLY | O_CREAT, 0644));
    symlink(secret_dir, swap_spare);
    pthread_t thread;
    pthread_create(&thread, NULL, swap_directory, NULL);
    struct timespec start;
    clock_gettime(CLOCK_MONOTONIC, &start);
    long linked = 0, refused = 0;
    while (linked + refused < 200000 && elapsed(&start) < seconds) {
        unlink(stolen);
        if (link(from, stolen) == 0) {
            int fd = open(stolen, O_RDONLY);
            leak(fd);
            if (fd >= 0) close(fd);
            linked++;
        } else {
            refused++;
        }
        link(allowed_file, into); /* left in place: the test looks for it in secret/ */
    }
    atomic_store(&stop, 1);
    pthread_join(thread, NULL);
    atomic_store(&stop, 0);
    unlink(stolen);
    printf("link_race linked=%ld refused=%ld\n", linked, refused);
}

/* The families that held before: '..', symlinks, /proc/self/root, /dev/fd, rename. */
static void classic(void) {
    char path[4300];
    snprintf(path, sizeof path, "%s/../secret/key", allowed);
    int fd = open(path, O_RDONLY);
    step("classic", "dotdot", fd);
    leak(fd);
    snprintf(path, sizeof path, "%s/link", allowed);
    symlink(secret, path);
    fd = open(path, O_RDONLY);
    step("classic", "symlink", fd);
    leak(fd);
    step("classic", "chmod_symlink", chmod(path, 0604));
    snprintf(path, sizeof path, "/proc/self/root%s", secret);
    fd = open(path, O_RDONLY);
    step("classic", "proc_root", fd);
    leak(fd);
    int parent = open(tree, O_RDONLY | O_DIRECTORY);
    snprintf(path, sizeof path, "/dev/fd/%d/secret/key", parent);
    fd = open(path, O_RDONLY);
    step("classic", "dev_fd", fd);
    leak(fd);
    snprintf(path, sizeof path, "%s/new-rename", secret_dir);
    step("classic", "rename_in", rename(allowed_file, path));
    step("classic", "exec", run_child(-1, prog));
}

int main(int argc, char **argv) {
    setvbuf(stdout, NULL, _IONBF, 0);
    if (argc != 4) return 2;
    const char *family = argv[1];
    snprintf(tree, sizeof tree, "%s", argv[2]);
    seconds = atof(argv[3]);
    snprintf(secret_dir, sizeof secret_dir, "%s/secret", tree);
    snprintf(secret, sizeof secret, "%s/secret/key", tree);
    snprintf(prog, sizeof prog, "%s/secret/prog", tree);
    snprintf(allowed, sizeof allowed, "%s/allowed", tree);
    snprintf(allowed_file, sizeof allowed_file, "%s/allowed/ky", tree);
    struct {
        const char *name;
        void (*run)(void);
    } families[] = {
        {"longpath", longpath},         {"opath_parent", opath_parent},
        {"fdcalls", fdcalls},           {"memfd_execveat", memfd_execveat},
        {"memfd_procfd", memfd_procfd}, {"interpreter", interpreter},
        {"interpreter_race", interpreter_race}, {"proc_cwd_race", proc_cwd_race},
        {"clone_vm", clone_vm},         {"link_race", link_race},
        {"classic", classic},
    };
    for (size_t i = 0; i < sizeof families / sizeof families[0]; i++) {
        if (strcmp(family, families[i].name) == 0) {
            families[i].run();
            return 0;
        }
    }
    return 2;
}

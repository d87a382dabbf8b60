/* What a program sees of a file it creates and then reads back (an assembler's object):
 * writes, seeks and reads through one open, a dup, a copy out of it, a second open of the
 * same file, a copy_file_range into it from another file of the same directory, a
 * truncation and O_APPEND set later. Prints one line per step; run on a local directory it
 * prints what the kernel says. Usage: mirrored_writes DIR (which holds a file named source) */
#define _GNU_SOURCE
#include <fcntl.h>
#include <stdio.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

static char buf[256];

static const char *at(int fd, off_t offset) {
    memset(buf, 0, sizeof buf);
    ssize_t n = pread(fd, buf, sizeof buf - 1, offset);
    if (n < 0) return "(error)";
    return buf;
}

int main(int argc, char **argv) {
    if (argc != 2) return 2;
    char path[512], source[512];
    snprintf(path, sizeof path, "%s/object", argv[1]);
    snprintf(source, sizeof source, "%s/source", argv[1]);
    int fd = open(path, O_RDWR | O_CREAT | O_TRUNC, 0644);
    if (fd < 0) { perror("open"); return 1; }
    printf("write %zd\n", write(fd, "hello world", 11));
    printf("seek %ld\n", (long)lseek(fd, 0, SEEK_SET));
    memset(buf, 0, sizeof buf);
    printf("read %zd [%s]\n", read(fd, buf, 5), buf);
    printf("pwrite %zd\n", pwrite(fd, "J", 1, 0));
    ssize_t n = write(fd, "!!", 2);
    printf("write %zd at %ld\n", n, (long)lseek(fd, 0, SEEK_CUR));
    off_t end = lseek(fd, 0, SEEK_END);
    printf("end %ld [%s]\n", (long)end, at(fd, 0));
    int copy = dup(fd);
    printf("dup write %zd\n", write(copy, "+", 1));
    close(copy);
    long total = 0;  /* a reader that seeks back and forth: the kernel's alone */
    for (int i = 0; i < 50; i++) {
        lseek(fd, i % 7, SEEK_SET);
        total += read(fd, buf, 4);
    }
    printf("seeks and reads %ld at %ld\n", total, (long)lseek(fd, 0, SEEK_CUR));
    char copy_path[512];  /* a copy out of the file */
    snprintf(copy_path, sizeof copy_path, "%s/copy", argv[1]);
    int out = open(copy_path, O_WRONLY | O_CREAT | O_TRUNC, 0644);
    off_t from_start = 2;
    n = copy_file_range(fd, &from_start, out, NULL, 5, 0);
    close(out);
    int copied = open(copy_path, O_RDONLY);
    printf("copied out %zd [%s]\n", n, at(copied, 0));
    close(copied);
    int other = open(path, O_RDWR);  /* another open of the same file writes */
    n = pwrite(other, "QQ", 2, 1);
    printf("other write %zd [%s]\n", n, at(fd, 0));
    close(other);
    int from = open(source, O_RDONLY);
    lseek(fd, 0, SEEK_END);
    n = copy_file_range(from, NULL, fd, NULL, 64, 0);
    printf("copy %zd [%s]", n, at(fd, 0));
    printf(" at %ld\n", (long)lseek(fd, 0, SEEK_CUR));
    close(from);
    struct stat st;
    int truncated = ftruncate(fd, 9);
    printf("truncate %d", truncated);
    fstat(fd, &st);
    printf(" size %ld [%s]\n", (long)st.st_size, at(fd, 0));
    fcntl(fd, F_SETFL, fcntl(fd, F_GETFL) | O_APPEND);
    n = write(fd, "Z", 1);
    printf("append %zd [%s]\n", n, at(fd, 0));
    close(fd);
    int again = open(path, O_RDONLY);
    memset(buf, 0, sizeof buf);
    n = read(again, buf, sizeof buf - 1);
    printf("reopened %zd [%s]\n", n, buf);
    return 0;
}

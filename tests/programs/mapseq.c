/* mapseq.c: a known sequence of mmap/munmap/mremap/mprotect calls with a known outcome.
 *
 * Exercises, through glibc's interposable entry points:
 *   1. mmap of 16 anonymous pages, then munmap of pages 4..8: a hole in the middle of a region.
 *   2. mprotect of pages 8..10 of that region to PROT_READ: one region split in three.
 *   3. mmap64 of a file it creates (MAP_SHARED, PROT_READ, at a one-page offset).
 *   4. mremap growing 2 pages to 6 while the next page is still mapped (by the same mmap, made
 *      PROT_NONE by mprotect): the kernel must move it (MREMAP_MAYMOVE).
 *   5. mremap shrinking 4 pages to 1 in place.
 *   6. mmap of 8 pages, then munmap of all of it: leaves nothing.
 *
 * Usage: mapseq [FILE]   FILE defaults to mapseq.data in the working directory; it is created,
 *                        mapped, and unlinked at exit.
 *
 * Stdout, flushed before the handshake:
 *   call <fn> <param>=<value>... = <result>   one per call above, in order; parameters are named
 *       as in the libc prototype (man 2 mmap/munmap/mremap/mprotect); addresses and flags hex,
 *       sizes and fds decimal; result hex for mmap/mremap, decimal for munmap/mprotect.
 *   expect <start-hex> <end-hex> <perms> [<path>]   one per live mapping this program made
 *   hole <start-hex> <end-hex>                       a range it unmapped that none of its
 *                                                    later mappings reuses
 *   (an expected range may lie inside a larger /proc region: the kernel merges adjacent
 *   anonymous mappings with the same permissions, e.g. a moved mremap target next to another)
 *   ready <pid>
 * Then reads one byte (or EOF) from stdin, unlinks FILE and exits 0.
 */
#define _GNU_SOURCE
#define _LARGEFILE64_SOURCE
#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <unistd.h>

static long page;

static void die(const char *what) {
    fprintf(stderr, "mapseq: %s: %s\n", what, strerror(errno));
    exit(1);
}

static char *do_mmap(void *addr, size_t length, int prot, int flags, int fd, off_t offset) {
    void *r = mmap(addr, length, prot, flags, fd, offset);
    printf("call mmap addr=%#lx length=%zu prot=%#x flags=%#x fd=%d offset=%ld = %#lx\n",
           (unsigned long)addr, length, prot, flags, fd, (long)offset, (unsigned long)r);
    if (r == MAP_FAILED) die("mmap");
    return r;
}

static void do_munmap(void *addr, size_t length) {
    int r = munmap(addr, length);
    printf("call munmap addr=%#lx length=%zu = %d\n", (unsigned long)addr, length, r);
    if (r != 0) die("munmap");
}

static void do_mprotect(void *addr, size_t len, int prot) {
    int r = mprotect(addr, len, prot);
    printf("call mprotect addr=%#lx len=%zu prot=%#x = %d\n", (unsigned long)addr, len, prot, r);
    if (r != 0) die("mprotect");
}

static char *do_mremap(void *old_address, size_t old_size, size_t new_size, int flags) {
    void *r = mremap(old_address, old_size, new_size, flags);
    printf("call mremap old_address=%#lx old_size=%zu new_size=%zu flags=%#x = %#lx\n",
           (unsigned long)old_address, old_size, new_size, flags, (unsigned long)r);
    if (r == MAP_FAILED) die("mremap");
    return r;
}

/* The live ranges printed so far: a hole that a later mapping reused is not a hole. */
static struct { char *start, *end; } live[16];
static int nlive;

static void expect(char *start, size_t len, const char *perms, const char *path) {
    live[nlive].start = start;
    live[nlive++].end = start + len;
    printf("expect %#lx %#lx %s%s%s\n", (unsigned long)start, (unsigned long)(start + len), perms,
           path ? " " : "", path ? path : "");
}

static void hole(char *start, size_t len) {
    for (int i = 0; i < nlive; i++)
        if (start < live[i].end && live[i].start < start + len) return;
    printf("hole %#lx %#lx\n", (unsigned long)start, (unsigned long)(start + len));
}

int main(int argc, char **argv) {
    const char *file = argc > 1 ? argv[1] : "mapseq.data";
    const int anon = MAP_PRIVATE | MAP_ANONYMOUS;
    const int rw = PROT_READ | PROT_WRITE;
    page = sysconf(_SC_PAGESIZE);

    /* 1 and 2: a hole in the middle, then a read-only stretch after the hole. */
    char *a = do_mmap(NULL, 16 * page, rw, anon, -1, 0);
    memset(a, 1, 16 * page);
    do_munmap(a + 4 * page, 4 * page);
    do_mprotect(a + 8 * page, 2 * page, PROT_READ);

    /* 3: a file mapping at an offset; mmap64 is a separate exported symbol. */
    int fd = open(file, O_RDWR | O_CREAT | O_TRUNC, 0644);
    if (fd < 0) die("open");
    char *buf = calloc(1, 3 * page);
    if (!buf || write(fd, buf, 3 * page) != 3 * page) die("write");
    free(buf);
    void *f = mmap64(NULL, 2 * page, PROT_READ, MAP_SHARED, fd, page);
    printf("call mmap64 addr=0 length=%zu prot=%#x flags=%#x fd=%d offset=%ld = %#lx\n",
           (size_t)(2 * page), PROT_READ, MAP_SHARED, fd, page, (unsigned long)f);
    if (f == MAP_FAILED) die("mmap64");
    close(fd);
    char path[PATH_MAX];
    if (!realpath(file, path)) die("realpath");

    /* 4: grow in place is impossible (the third page is still mapped), so mremap moves. */
    char *b = do_mmap(NULL, 3 * page, rw, anon, -1, 0);
    memset(b, 2, 3 * page);
    do_mprotect(b + 2 * page, page, PROT_NONE);
    char *moved = do_mremap(b, 2 * page, 6 * page, MREMAP_MAYMOVE);
    if (moved == b) {
        fprintf(stderr, "mapseq: mremap did not move\n");
        return 1;
    }

    /* 5: shrink in place. */
    char *c = do_mmap(NULL, 4 * page, PROT_READ, anon, -1, 0);
    char *shrunk = do_mremap(c, 4 * page, page, 0);

    /* 6: map and unmap entirely. */
    char *d = do_mmap(NULL, 8 * page, rw, anon, -1, 0);
    do_munmap(d, 8 * page);

    expect(a, 4 * page, "rw-p", NULL);
    expect(a + 8 * page, 2 * page, "r--p", NULL);
    expect(a + 10 * page, 6 * page, "rw-p", NULL);
    expect(f, 2 * page, "r--s", path);
    expect(b + 2 * page, page, "---p", NULL);
    expect(moved, 6 * page, "rw-p", NULL);
    expect(shrunk, page, "r--p", NULL);
    hole(a + 4 * page, 4 * page);
    hole(b, 2 * page);
    hole(c + page, 3 * page);
    hole(d, 8 * page);
    printf("ready %d\n", (int)getpid());
    fflush(stdout);

    char ch;
    ssize_t n = read(0, &ch, 1); /* a byte or EOF: either ends the wait */
    (void)n;
    unlink(file);
    return 0;
}

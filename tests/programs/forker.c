/* forker.c: a fork whose child maps memory, for checking that a fork child's calls never land in
 * the parent's trace (the shim forgets the parent's trace in the child and opens its own).
 *
 * The child mmaps 1 MiB (256 pages) anonymous read-write, touches it, reports it and exits 0
 * without unmapping. The parent waits for it, then mmaps 2 MiB (512 pages) of its own, so the
 * two mappings are told apart by size, and does the handshake.
 *
 * Usage: forker
 * Stdout, in this order, each line flushed:
 *   child <pid> mmap <start-hex> <end-hex>     (written by the child)
 *   child <pid> exited <status>                (the child's exit code; 0 expected)
 *   parent <pid> mmap <start-hex> <end-hex>
 *   ready <pid>
 * Then reads one byte (or EOF) from stdin and exits 0.
 */
#define _GNU_SOURCE
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/wait.h>
#include <unistd.h>

static char *map_rw(size_t len) {
    char *p = mmap(NULL, len, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
    if (p == MAP_FAILED) {
        fprintf(stderr, "forker: mmap: %s\n", strerror(errno));
        exit(1);
    }
    memset(p, 1, len);
    return p;
}

int main(void) {
    const size_t child_len = 1 << 20, parent_len = 2 << 20;
    fflush(stdout); /* nothing buffered may be written twice */
    pid_t child = fork();
    if (child < 0) {
        perror("forker: fork");
        return 1;
    }
    if (child == 0) {
        char *p = map_rw(child_len);
        printf("child %d mmap %#lx %#lx\n", (int)getpid(), (unsigned long)p,
               (unsigned long)(p + child_len));
        fflush(stdout);
        exit(0);
    }
    int status;
    if (waitpid(child, &status, 0) != child) {
        perror("forker: waitpid");
        return 1;
    }
    printf("child %d exited %d\n", (int)child, WIFEXITED(status) ? WEXITSTATUS(status) : -1);
    char *p = map_rw(parent_len);
    printf("parent %d mmap %#lx %#lx\n", (int)getpid(), (unsigned long)p,
           (unsigned long)(p + parent_len));
    printf("ready %d\n", (int)getpid());
    fflush(stdout);

    char c;
    ssize_t n = read(0, &c, 1); /* a byte or EOF: either ends the wait */
    (void)n;
    return 0;
}

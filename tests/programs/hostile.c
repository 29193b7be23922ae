/* hostile.c: a target that does what real programs do to the descriptors and limits around
 * it, then keeps mapping memory.
 *
 * Usage: hostile MODE N
 *   closeall  close every descriptor from 3 to 1023 (as daemons and some shells do)
 *   dup2      dup2 /dev/null over every descriptor from 3 to 63
 *   chdir     change to / (the trace path was relative to the old directory)
 *   fsize     setrlimit(RLIMIT_FSIZE) to 64 KiB (past it, growing a file raises SIGXFSZ)
 *   segv      reserve N pages PROT_NONE and touch each: a SIGSEGV handler maps the faulting page
 *             with mmap(MAP_FIXED) (lazy allocation, as some runtimes and databases do)
 * then N pairs of mmap(4096)/munmap, each checked.
 * Stdout: "calls <2N>" when every call succeeded.
 */
#define _GNU_SOURCE
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/resource.h>
#include <signal.h>
#include <unistd.h>

static void on_segv(int sig, siginfo_t *si, void *ctx) {
    (void)sig;
    (void)ctx;
    char *page = (char *)((unsigned long)si->si_addr & ~4095UL);
    if (mmap(page, 4096, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS | MAP_FIXED, -1, 0) == MAP_FAILED)
        _exit(6);
}

int main(int argc, char **argv) {
    if (argc != 3) return 2;
    long n = atol(argv[2]);
    if (strcmp(argv[1], "closeall") == 0) {
        for (int fd = 3; fd < 1024; fd++) close(fd);
    } else if (strcmp(argv[1], "dup2") == 0) {
        int null = open("/dev/null", O_RDWR);
        for (int fd = 3; fd < 64; fd++)
            if (fd != null) dup2(null, fd);
    } else if (strcmp(argv[1], "chdir") == 0) {
        if (chdir("/") != 0) return 3;
    } else if (strcmp(argv[1], "segv") == 0) {
        struct sigaction sa = {.sa_sigaction = on_segv, .sa_flags = SA_SIGINFO};
        sigaction(SIGSEGV, &sa, NULL);
        char *r = mmap(NULL, n * 4096, PROT_NONE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
        if (r == MAP_FAILED) return 3;
        for (long i = 0; i < n; i++) r[i * 4096] = 1;
    } else if (strcmp(argv[1], "fsize") == 0) {
        struct rlimit rl = {64 << 10, 64 << 10};
        if (setrlimit(RLIMIT_FSIZE, &rl) != 0) return 3;
    } else {
        return 2;
    }
    for (long i = 0; i < n; i++) {
        void *p = mmap(NULL, 4096, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
        if (p == MAP_FAILED || munmap(p, 4096) != 0) return 4;
    }
    printf("calls %ld\n", 2 * n);
    return 0;
}

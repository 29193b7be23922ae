/* footprint.c: a long-running target whose own footprint is constant: it makes N mprotect
 * calls on one page, then optionally one large mapping, and reports its own memory.
 *
 * Usage: footprint N BIG_MIB
 *   N        mprotect calls on one page (alternating PROT_READ and PROT_READ|PROT_WRITE)
 *   BIG_MIB  then mmap BIG_MIB MiB anonymous private PROT_READ|PROT_WRITE (0: none)
 * Stdout: "calls N big OK|ENOMEM|errno-E rss BYTES vsz BYTES", RSS and VSZ read from
 * /proc/self/status after the calls (and before the big mapping). Exits 0 unless a call
 * other than the big mmap failed.
 */
#define _GNU_SOURCE
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <unistd.h>

static long status_kib(const char *field) {
    FILE *f = fopen("/proc/self/status", "r");
    if (!f) return -1;
    char line[256];
    long v = -1;
    size_t n = strlen(field);
    while (fgets(line, sizeof line, f))
        if (strncmp(line, field, n) == 0 && line[n] == ':') v = atol(line + n + 1);
    fclose(f);
    return v;
}

int main(int argc, char **argv) {
    if (argc != 3) return 2;
    long n = atol(argv[1]);
    long big = atol(argv[2]);
    char *page = mmap(NULL, 4096, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
    if (page == MAP_FAILED) return 3;
    for (long i = 0; i < n; i++)
        if (mprotect(page, 4096, i % 2 ? PROT_READ | PROT_WRITE : PROT_READ) != 0) return 4;
    long rss = status_kib("VmRSS"), vsz = status_kib("VmSize");
    const char *how = "none";
    char err[32];
    if (big > 0) {
        void *p = mmap(NULL, (size_t)big << 20, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
        if (p != MAP_FAILED) {
            how = "OK";
        } else if (errno == ENOMEM) {
            how = "ENOMEM";
        } else {
            snprintf(err, sizeof err, "errno-%d", errno);
            how = err;
        }
    }
    printf("calls %ld big %s rss %ld vsz %ld\n", n, how, rss * 1024, vsz * 1024);
    return 0;
}

/* manymaps.c: a JVM-sized address space: N separate mappings (alternating permissions, so the
 * kernel cannot merge neighbours), then the handshake.
 *
 * Usage: manymaps N   Stdout: "ready <pid>"; then reads one byte (or EOF) and exits 0.
 */
#include <stdio.h>
#include <stdlib.h>
#include <sys/mman.h>
#include <unistd.h>

int main(int argc, char **argv) {
    if (argc != 2) return 2;
    long n = atol(argv[1]);
    for (long i = 0; i < n; i++) {
        int prot = i % 2 ? PROT_READ : PROT_NONE;
        if (mmap(NULL, 4096 * (1 + i % 3), prot, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0) == MAP_FAILED) return 3;
    }
    printf("ready %d\n", getpid());
    fflush(stdout);
    char c;
    (void)!read(0, &c, 1);
    return 0;
}

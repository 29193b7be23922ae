/* execstatic.c: a process whose final image the shim cannot be in (issue 12). Built twice: as a
 * dynamic program, `execstatic PROG ARGS...` execs PROG (no shim can follow a static PROG); built
 * with -static and run with no arguments, it reserves 4 MiB of anonymous memory and reports its
 * own VSZ, read from /proc/self/status with no allocation after the reservation, then exits 0
 * with _exit (no stdio buffer is flushed or allocated afterwards).
 *
 * Stdout (static mode): "static <pid> vsz <VmSize in KiB>"
 */
#define _GNU_SOURCE
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <unistd.h>

int main(int argc, char **argv) {
    if (argc > 1) {
        execv(argv[1], argv + 1);
        perror("execstatic: execv");
        return 127;
    }
    if (mmap(NULL, 4 << 20, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0) == MAP_FAILED) return 1;
    char buf[4096];
    int fd = open("/proc/self/status", O_RDONLY);
    ssize_t n = fd < 0 ? -1 : read(fd, buf, sizeof buf - 1);
    if (n <= 0) return 1;
    buf[n] = 0;
    const char *v = strstr(buf, "VmSize:");
    if (!v) return 1;
    v += 7;
    while (*v == ' ' || *v == '\t') v++;
    char line[128];
    int len = snprintf(line, sizeof line, "static %d vsz %ld\n", (int)getpid(), strtol(v, NULL, 10));
    if (write(1, line, len) != len) return 1;
    _exit(0);
}

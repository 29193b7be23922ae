// A program that daemonizes the classic way: the parent forks, the child forks the daemon and
// exits, the parent reaps the child and exits 0; the daemon (re-parented, setsid) maps 4 MiB,
// then ends and prints what the kernel says its VSZ is just before it exits.
//   daemon timed     the daemon sleeps 1 s, then exits 4
//   daemon signal    the daemon waits for SIGTERM, then exits 5
// Lines: "ready PID" (the parent), "daemon PID", "vsz BYTES" (the daemon, last thing before exit).
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/wait.h>
#include <unistd.h>

static volatile sig_atomic_t term;
static void on_term(int sig) { (void)sig; term = 1; }

static unsigned long long vsz_bytes(void) {
    unsigned long long pages = 0;
    FILE *f = fopen("/proc/self/statm", "r");
    if (f) {
        if (fscanf(f, "%llu", &pages) != 1) pages = 0;
        fclose(f);
    }
    return pages * (unsigned long long)sysconf(_SC_PAGESIZE);
}

int main(int argc, char **argv) {
    if (argc < 2) return 64;
    int timed = !strcmp(argv[1], "timed");
    setvbuf(stdout, NULL, _IONBF, 0);
    printf("ready %d\n", getpid());
    pid_t child = fork();
    if (child < 0) return 1;
    if (child > 0) {
        waitpid(child, NULL, 0);
        return 0;
    }
    if (fork() != 0) _exit(0);
    setsid();
    signal(SIGTERM, on_term);
    char *p = mmap(NULL, 4 << 20, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
    if (p == MAP_FAILED) return 1;
    p[0] = 1;
    printf("daemon %d\n", getpid());
    if (timed) {
        sleep(1);
    } else {
        while (!term) pause();
    }
    // Measured after every allocation the program makes (stdout is unbuffered, fopen's buffer
    // was freed), so nothing maps between this and the exit.
    unsigned long long v = vsz_bytes();
    printf("vsz %llu\n", v);
    exit(timed ? 4 : 5);
}

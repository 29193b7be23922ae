// The target for issue 11's cases, one per mode; each prints what it saw and exits with a
// status the test can check against a bare run.
//   harm term         prints "ready PID", waits; SIGTERM runs a handler that prints "term" and
//                     exits 3
//   harm traceme      ptrace(PTRACE_TRACEME): prints "traceme RESULT ERRNO", exits 0
//   harm stop         prints "ready PID", raise(SIGSTOP), prints "resumed", exits 0
//   harm wait         prints "ready PID", waits for any of SIGINT/SIGHUP/SIGQUIT/SIGTERM/
//                     SIGUSR1 and exits with its number
#include <errno.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/ptrace.h>
#include <unistd.h>

static void on_term(int sig) {
    (void)sig;
    static const char msg[] = "term\n";
    write(1, msg, sizeof msg - 1);
    _exit(3);
}

static volatile sig_atomic_t got;
static void on_any(int sig) { got = sig; }

int main(int argc, char **argv) {
    if (argc < 2) return 64;
    const char *mode = argv[1];
    setvbuf(stdout, NULL, _IONBF, 0);
    if (!strcmp(mode, "term")) {
        signal(SIGTERM, on_term);
        printf("ready %d\n", getpid());
        for (;;) pause();
    }
    if (!strcmp(mode, "traceme")) {
        errno = 0;
        long r = ptrace(PTRACE_TRACEME, 0, 0, 0);
        printf("traceme %ld %d\n", r, r == 0 ? 0 : errno);
        return 0;
    }
    if (!strcmp(mode, "stop")) {
        printf("ready %d\n", getpid());
        raise(SIGSTOP);
        printf("resumed\n");
        return 0;
    }
    if (!strcmp(mode, "wait")) {
        int sigs[] = {SIGINT, SIGHUP, SIGQUIT, SIGTERM, SIGUSR1};
        for (unsigned i = 0; i < sizeof sigs / sizeof sigs[0]; i++) signal(sigs[i], on_any);
        printf("ready %d\n", getpid());
        while (!got) pause();
        printf("got %d\n", (int)got);
        return got;
    }
    return 64;
}

/* forktree.c: fork children that the shim must trace from the fork on (issue 12): one that only
 * sleeps, one that drops its privileges, one that closes every descriptor, a double-fork daemon,
 * and a small process.
 *
 * Usage and stdout (each line flushed):
 *   forktree sleep MS        a thread (not main) forks a child that sleeps MS ms and exits 0
 *                            without a recorded call. "fork <child-pid> <forking-tid>", then
 *                            "waited <status>" once the child is reaped.
 *   forktree setuid N        the child setuid()s to 65534, then maps N regions of 64 KiB (and
 *                            unmaps them), printing "child <pid> uid <uid>" and "mapped <hex>" for
 *                            each; the parent prints "waited <status>".
 *   forktree closeall N      as setuid, but after the first region the child closes every
 *                            descriptor (0..1023), as daemons do, then maps the other N-1 and
 *                            exits; it prints before closing: "child <pid> uid <uid>".
 *   forktree daemon MS       the double fork: the child forks the grandchild and exits; the
 *                            grandchild sleeps MS ms (re-parented meanwhile) and exits. The
 *                            parent prints "child <pid>", "grandchild <pid>" (from a pipe) and
 *                            "waited <status>"; the grandchild's exit is not waited for.
 *   forktree calls N         no fork: N/2 mmap and N/2 munmap of one page, then "done".
 *   forktree killed MS       the child sleeps; after MS ms the parent SIGKILLs it: "child <pid>",
 *                            then "killed <status>" once it is reaped.
 */
#define _GNU_SOURCE
#include <pthread.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/syscall.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

static void sleep_ms(long ms) {
    struct timespec ts = {ms / 1000, (ms % 1000) * 1000000};
    while (nanosleep(&ts, &ts) != 0) {
    }
}

static long ms_arg;

static void *fork_from_thread(void *arg) {
    (void)arg;
    fflush(stdout);
    pid_t c = fork();
    if (c == 0) {
        sleep_ms(ms_arg);
        _exit(0);
    }
    printf("fork %d %ld\n", (int)c, (long)syscall(SYS_gettid));
    fflush(stdout);
    int status = -1;
    waitpid(c, &status, 0);
    printf("waited %d\n", status);
    fflush(stdout);
    return NULL;
}

static void map_some(int n, int close_after_first) {
    for (int i = 0; i < n; i++) {
        void *p = mmap(NULL, 64 << 10, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
        if (p == MAP_FAILED)
            _exit(3);
        if (!close_after_first || i == 0) {
            printf("mapped %#lx\n", (unsigned long)p);
            fflush(stdout);
        }
        munmap(p, 64 << 10);
        if (close_after_first && i == 0)
            for (int fd = 0; fd < 1024; fd++)
                close(fd);
    }
}

int main(int argc, char **argv) {
    if (argc < 3) {
        fprintf(stderr, "usage: forktree sleep|setuid|closeall|daemon|calls|killed N\n");
        return 2;
    }
    const char *mode = argv[1];
    long n = atol(argv[2]);
    setvbuf(stdout, NULL, _IOLBF, 0);
    if (!strcmp(mode, "calls")) {
        for (long i = 0; i < n / 2; i++) {
            void *p = mmap(NULL, 4096, PROT_READ, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
            munmap(p, 4096);
        }
        printf("done\n");
        return 0;
    }
    if (!strcmp(mode, "sleep")) {
        ms_arg = n;
        pthread_t t;
        pthread_create(&t, NULL, fork_from_thread, NULL);
        pthread_join(t, NULL);
        return 0;
    }
    if (!strcmp(mode, "setuid") || !strcmp(mode, "closeall")) {
        fflush(stdout);
        pid_t c = fork();
        if (c == 0) {
            if (setgid(65534) != 0 || setuid(65534) != 0)
                _exit(4);
            printf("child %d uid %d\n", (int)getpid(), (int)getuid());
            fflush(stdout);
            map_some((int)n, !strcmp(mode, "closeall"));
            _exit(0);
        }
        int status = -1;
        waitpid(c, &status, 0);
        printf("waited %d\n", status);
        return 0;
    }
    if (!strcmp(mode, "killed")) {
        fflush(stdout);
        pid_t c = fork();
        if (c == 0) {
            sleep_ms(60000);
            _exit(0);
        }
        printf("child %d\n", (int)c);
        sleep_ms(n);
        kill(c, SIGKILL);
        int status = -1;
        waitpid(c, &status, 0);
        printf("killed %d\n", status);
        return 0;
    }
    if (!strcmp(mode, "daemon")) {
        int fds[2];
        if (pipe(fds) != 0)
            return 1;
        fflush(stdout);
        pid_t c = fork();
        if (c == 0) {
            pid_t g = fork();
            if (g == 0) {
                close(fds[0]);
                close(fds[1]);
                setsid();
                sleep_ms(n);
                _exit(0);
            }
            if (write(fds[1], &g, sizeof g) != sizeof g)
                _exit(5);
            _exit(0);
        }
        close(fds[1]);
        printf("child %d\n", (int)c);
        pid_t g = 0;
        if (read(fds[0], &g, sizeof g) != sizeof g)
            return 1;
        printf("grandchild %d\n", (int)g);
        int status = -1;
        waitpid(c, &status, 0);
        printf("waited %d\n", status);
        return 0;
    }
    fprintf(stderr, "forktree: unknown mode %s\n", mode);
    return 2;
}

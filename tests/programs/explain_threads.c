// A target for `vmshim explain` (issue 16): N threads, each with a malloc arena of its own up to
// MALLOC_ARENA_MAX, each printing its tid and stack range, then blocking in read(), nanosleep()
// or epoll_wait() (MODE read|sleep|epoll|mix). It prints `ready PID`, waits for stdin to close
// (the main thread blocked in read()), then wakes every thread and checks that each call
// completed normally: a byte read, a full sleep, one event. SIGUSR1 (blocked in the workers) is
// counted by the main thread's handler. With `stay` it exits with its threads still blocked,
// so that the map at exit holds every stack and arena.
#define _GNU_SOURCE
#include <errno.h>
#include <pthread.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/epoll.h>
#include <sys/syscall.h>
#include <time.h>
#include <unistd.h>

#define MAX 256
static int nthreads;
static const char *mode;
static int pipes[MAX][2];
static int results[MAX];
static volatile sig_atomic_t usr1;
static pthread_barrier_t barrier;
static pthread_mutex_t out = PTHREAD_MUTEX_INITIALIZER;

static void on_usr1(int sig) {
    (void)sig;
    usr1++;
}

static double now(void) {
    struct timespec t;
    clock_gettime(CLOCK_MONOTONIC, &t);
    return t.tv_sec + t.tv_nsec / 1e9;
}

static const char *mode_of(int i) {
    if (strcmp(mode, "mix") != 0) return mode;
    static const char *m[] = {"read", "sleep", "epoll"};
    return m[i % 3];
}

static void *worker(void *arg) {
    int i = (int)(long)arg;
    sigset_t s;
    sigemptyset(&s);
    sigaddset(&s, SIGUSR1);
    pthread_sigmask(SIG_BLOCK, &s, NULL);
    void *p = malloc(1000);
    memset(p, 1, 1000);
    pthread_attr_t a;
    void *lo;
    size_t size, guard;
    pthread_getattr_np(pthread_self(), &a);
    pthread_attr_getstack(&a, &lo, &size);
    pthread_attr_getguardsize(&a, &guard);
    pthread_mutex_lock(&out);
    printf("thread %ld stack %lx-%lx guard %zu arena-chunk %lx\n", (long)syscall(SYS_gettid), (unsigned long)lo,
           (unsigned long)lo + size, guard, (unsigned long)p);
    fflush(stdout);
    pthread_mutex_unlock(&out);
    pthread_barrier_wait(&barrier);
    const char *m = mode_of(i);
    int ok = 0;
    if (strcmp(m, "read") == 0) {
        char c;
        ssize_t n = read(pipes[i][0], &c, 1);
        ok = n == 1 ? 1 : -errno;
    } else if (strcmp(m, "sleep") == 0) {
        double t0 = now();
        struct timespec d = {2, 0};
        int r = nanosleep(&d, NULL);
        ok = r == 0 && now() - t0 >= 1.99 ? 1 : (r == 0 ? -1000 : -errno);
    } else {
        int ep = epoll_create1(0);
        struct epoll_event ev = {.events = EPOLLIN, .data.fd = pipes[i][0]};
        epoll_ctl(ep, EPOLL_CTL_ADD, pipes[i][0], &ev);
        struct epoll_event got;
        int n = epoll_wait(ep, &got, 1, -1);
        ok = n == 1 ? 1 : -errno;
    }
    results[i] = ok;
    free(p);
    return NULL;
}

int main(int argc, char **argv) {
    nthreads = argc > 1 ? atoi(argv[1]) : 4;
    mode = argc > 2 ? argv[2] : "mix";
    int stay = argc > 3 && strcmp(argv[3], "stay") == 0;
    if (nthreads < 0 || nthreads > MAX) return 2;
    struct sigaction sa;
    memset(&sa, 0, sizeof sa);
    sa.sa_handler = on_usr1;
    sa.sa_flags = SA_RESTART;
    sigaction(SIGUSR1, &sa, NULL);
    pthread_barrier_init(&barrier, NULL, nthreads + 1);
    pthread_t t[MAX];
    for (int i = 0; i < nthreads; i++) {
        if (pipe(pipes[i]) != 0) return 2;
        pthread_create(&t[i], NULL, worker, (void *)(long)i);
    }
    pthread_barrier_wait(&barrier);
    void *big = malloc(8 << 20);  // a large chunk: mmapped, IS_MMAPPED
    memset(big, 2, 4096);
    pthread_attr_t a;
    void *lo;
    size_t size;
    pthread_getattr_np(pthread_self(), &a);
    pthread_attr_getstack(&a, &lo, &size);
    usleep(200 * 1000);  // every worker is in its call
    printf("main %d large %lx\nready %d\n", getpid(), (unsigned long)big, getpid());
    fflush(stdout);
    char c;
    while (read(0, &c, 1) == 1) {
    }
    double t0 = now();
    if (stay) {
        printf("usr1 %d\nstaying\n", (int)usr1);
        fflush(stdout);
        exit(0);
    }
    // The sleepers finish their 2 s on their own.
    while (now() - t0 < 0.1) usleep(1000);
    for (int i = 0; i < nthreads; i++)
        if (write(pipes[i][1], "x", 1) != 1) return 2;
    int bad = 0;
    for (int i = 0; i < nthreads; i++) {
        pthread_join(t[i], NULL);
        if (results[i] != 1) {
            printf("result %d %s failed %d\n", i, mode_of(i), results[i]);
            bad++;
        }
    }
    printf("usr1 %d\ndone bad %d\n", (int)usr1, bad);
    return bad ? 1 : 0;
}

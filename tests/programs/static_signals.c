/* static_signals.c: signals to a traced static program arrive as sent, for the syscall
 * recorder's tests (issue 15), built with `gcc -static`.
 *
 * Two threads each send N SIGURG (the signal Go preempts with) and N SIGUSR1 to the other
 * thread, one at a time: the next only once the handler counted the last, so none merge; the
 * worker ends once it has received all of the main thread's.
 * Prints what each thread's handler counted and exits with status 3.
 *
 * Usage: static_signals N
 * Stdout: main urg <n> usr1 <n>
 *         worker urg <n> usr1 <n>
 */
#define _GNU_SOURCE
#include <pthread.h>
#include <signal.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <unistd.h>

static pid_t main_tid;
static atomic_int urg[2], usr1[2];
static pthread_t threads[2];
static int n;

static void on_signal(int sig) {
    int worker = gettid() != main_tid;
    atomic_fetch_add(sig == SIGURG ? &urg[worker] : &usr1[worker], 1);
}

static void send_all(int to) {
    for (int i = 0; i < n; i++) {
        int u = atomic_load(&urg[to]);
        pthread_kill(threads[to], SIGURG);
        while (atomic_load(&urg[to]) == u) sched_yield();
        int v = atomic_load(&usr1[to]);
        pthread_kill(threads[to], SIGUSR1);
        while (atomic_load(&usr1[to]) == v) sched_yield();
    }
}

static void *worker(void *arg) {
    (void)arg;
    send_all(0);
    // Not gone before the main thread's last signal came.
    while (atomic_load(&urg[1]) < n || atomic_load(&usr1[1]) < n) sched_yield();
    return NULL;
}

int main(int argc, char **argv) {
    n = argc > 1 ? atoi(argv[1]) : 0;
    struct sigaction sa = {0};
    sa.sa_handler = on_signal;
    sa.sa_flags = SA_RESTART;
    sigaction(SIGURG, &sa, NULL);
    sigaction(SIGUSR1, &sa, NULL);
    main_tid = gettid();
    threads[0] = pthread_self();
    if (pthread_create(&threads[1], NULL, worker, NULL) != 0) return 1;
    send_all(1);
    pthread_join(threads[1], NULL);
    printf("main urg %d usr1 %d\nworker urg %d usr1 %d\n", urg[0], usr1[0], urg[1], usr1[1]);
    return 3;
}

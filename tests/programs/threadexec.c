// Execs from a thread that is not the main one: the kernel makes that thread the process's new
// leader, and the old main thread leaves through an exit of its own. The new image, /bin/sh,
// prints the VSZ the kernel gives it (statm, in pages) and exits.
// Lines: "ready PID" (before the exec), then sh's "pages N".
#include <pthread.h>
#include <stdio.h>
#include <unistd.h>

static void *run(void *arg) {
    (void)arg;
    execl("/bin/sh", "sh", "-c", "read pages rest < /proc/$$/statm; echo pages $pages", (char *)NULL);
    return NULL;
}

int main(void) {
    setvbuf(stdout, NULL, _IONBF, 0);
    printf("ready %d\n", getpid());
    pthread_t t;
    pthread_create(&t, NULL, run, NULL);
    pthread_join(t, NULL);
    return 1;
}

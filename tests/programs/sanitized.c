// Built with -fsanitize=address or -fsanitize=thread by the tests (issue 11): a thread that
// mallocs and frees, one 1 MiB anonymous mmap, a line on stdout, exit status 5. The same
// output and status must come out under `vmshim run`.
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <sys/mman.h>

static void *work(void *arg) {
    void *p = malloc(100);
    free(p);
    return arg;
}

int main(void) {
    pthread_t t;
    if (pthread_create(&t, NULL, work, NULL) != 0) return 10;
    pthread_join(t, NULL);
    void *m = mmap(NULL, 1 << 20, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
    printf("mapped %d\n", m != MAP_FAILED);
    return 5;
}

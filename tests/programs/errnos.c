/* errnos.c: failing and succeeding calls of every hooked function, printing what the caller
 * sees. Run with and without LD_PRELOAD=libvmshim.so: the output must be identical.
 *
 * Each line: "<ok|fail> <call> = <result> errno <errno>". Before each call errno is set to 77,
 * so a success that touched errno would show.
 */
#define _GNU_SOURCE
#include <dlfcn.h>
#include <errno.h>
#include <malloc.h>
#include <netdb.h>
#include <stdlib.h>
#include <pthread.h>
#include <stdio.h>
#include <sys/mman.h>
#include <sys/resource.h>
#include <unistd.h>

#define SHOW(kind, name, expr)                                                     \
    do {                                                                           \
        errno = 77;                                                                \
        long r_ = (long)(expr);                                                    \
        printf("%s %s = %ld errno %d\n", kind, name, r_ == -1 ? -1L : (r_ > 0), errno); \
    } while (0)

static void *nothing(void *a) { return a; }

int main(void) {
    long page = sysconf(_SC_PAGESIZE);
    SHOW("fail", "mmap length 0", mmap(NULL, 0, PROT_READ, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0));
    SHOW("fail", "mmap bad fd", mmap(NULL, page, PROT_READ, MAP_PRIVATE, 12345, 0));
    SHOW("fail", "mmap unaligned offset", mmap(NULL, page, PROT_READ, MAP_PRIVATE | MAP_ANONYMOUS, -1, 3));
    SHOW("fail", "mmap no sharing type", mmap(NULL, page, PROT_READ, MAP_ANONYMOUS, -1, 0));
    SHOW("fail", "munmap unaligned", munmap((void *)3, page));
    SHOW("fail", "mprotect unmapped", mprotect((void *)page, page, PROT_READ));
    SHOW("fail", "mremap bad flags", mremap(NULL, page, page, 0x1000));
    struct rlimit rl = {1 << 30, 1 << 30};
    setrlimit(RLIMIT_AS, &rl);
    SHOW("fail", "mmap past RLIMIT_AS", mmap(NULL, (size_t)2 << 30, PROT_NONE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0));
    void *p = mmap(NULL, 4 * page, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
    SHOW("ok", "mmap", p);
    SHOW("ok", "mremap", p = mremap(p, 4 * page, 8 * page, MREMAP_MAYMOVE));
    SHOW("ok", "mprotect", mprotect(p, page, PROT_READ));
    SHOW("ok", "munmap", munmap(p, 8 * page));
    pthread_t t;
    errno = 77;
    int rc = pthread_create(&t, NULL, nothing, NULL);
    printf("ok pthread_create = %d errno %d\n", rc, errno);
    pthread_join(t, NULL);

    /* The malloc family: failures report through errno or the return value, as glibc does.
     * (volatile: gcc refuses sizes it can prove too large.) */
    volatile size_t huge = (size_t)-1 / 2;
    SHOW("fail", "malloc huge", malloc(huge));
    SHOW("fail", "calloc overflow", calloc(huge, 4));
    SHOW("fail", "realloc huge", realloc(NULL, huge));
    SHOW("fail", "memalign huge", memalign(64, huge));
    SHOW("fail", "aligned_alloc huge", aligned_alloc(64, huge));
    void *q = NULL;
    errno = 77;
    rc = posix_memalign(&q, 3, 64);
    printf("fail posix_memalign bad alignment = %d errno %d\n", rc, errno);
    errno = 77;
    rc = posix_memalign(&q, 64, huge);
    printf("fail posix_memalign huge = %d errno %d\n", rc, errno);
    SHOW("ok", "malloc", q = malloc(100));
    errno = 77;
    free(q);
    printf("ok free errno %d\n", errno);
    SHOW("ok", "malloc large", q = malloc(1 << 20));
    errno = 77;
    free(q);
    printf("ok free large errno %d\n", errno);

    /* The resolver and the loader: the same codes, the same messages. */
    struct addrinfo hints = {.ai_flags = AI_NUMERICHOST}, *res = NULL;
    errno = 77;
    rc = getaddrinfo("not-a-number", NULL, &hints, &res);
    printf("fail getaddrinfo numeric = %d errno %d\n", rc, errno);
    errno = 77;
    rc = getaddrinfo("127.0.0.1", "80", NULL, &res);
    printf("ok getaddrinfo = %d errno %d\n", rc, errno);
    if (rc == 0) freeaddrinfo(res);
    errno = 77;
    void *h = dlopen("/nonexistent/libnothing.so", RTLD_NOW);
    printf("fail dlopen = %d errno %d error %s\n", h != NULL, errno, dlerror());
    return 0;
}

/* smallstack.c: a target whose hooked calls come on small stacks (issue 11).
 *
 * Usage: smallstack MODE [ARG]
 *   minsig          print "minsigstksz N" (getauxval(AT_MINSIGSTKSZ)) and "sigstksz N"
 *   thread          a pthread with a PTHREAD_STACK_MIN stack calls printf, malloc/free (small and
 *                   large), mmap/munmap; prints what it did, then "stack_min N"
 *   fork SIZE       a pthread with a SIZE-byte stack forks; the child mmaps 7 pages, unmaps them
 *                   and exits 0 if both worked; prints "child PID status S"
 *   altstack SIZE   a SIGSEGV handler on a SIZE-byte sigaltstack (with an inaccessible page right
 *                   below it, so that an overflow kills the process) maps the faulting page with
 *                   MAP_FIXED; prints "mapped ADDR" after the fault was handled
 *   forkaltstack SIZE  a pthread with a PTHREAD_STACK_MIN stack forks; in the child the first
 *                   hooked call is the handler's mmap on a SIZE-byte sigaltstack (the regions
 *                   were mapped before the fork); prints "child PID status S" and "mapped ADDR"
 *   depth           on a thread with a 1 MiB stack of its own, fills the stack below the current
 *                   frame with a pattern, makes one call and finds the lowest byte it changed;
 *                   prints "depth CALL BYTES" for each call (bytes below a fixed point of the
 *                   measuring frame: compare two runs of this binary, not the absolute figure)
 * Exit status 0 when everything worked.
 */
#define _GNU_SOURCE
#include <dlfcn.h>
#include <netdb.h>
#include <pthread.h>
#include <signal.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/auxv.h>
#include <sys/mman.h>
#include <sys/wait.h>
#include <unistd.h>

#ifndef AT_MINSIGSTKSZ
#define AT_MINSIGSTKSZ 51
#endif

static volatile uintptr_t mapped_page;

static void on_segv(int sig, siginfo_t *si, void *ctx) {
    (void)sig;
    (void)ctx;
    char *page = (char *)((uintptr_t)si->si_addr & ~4095UL);
    if (mmap(page, 4096, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS | MAP_FIXED, -1, 0) == MAP_FAILED)
        _exit(6);
    mapped_page = (uintptr_t)page;
}

/* An alternate stack of `size` bytes whose lowest byte sits right above an inaccessible page. */
static char *alt_base;
static char *reserved;

static void map_regions(size_t size) {
    size_t len = (size + 4095) & ~4095UL;
    char *r = mmap(NULL, len + 4096, PROT_NONE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
    if (r == MAP_FAILED || mprotect(r + 4096, len, PROT_READ | PROT_WRITE) != 0) exit(3);
    alt_base = r + 4096;
    reserved = mmap(NULL, 4096, PROT_NONE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
    if (reserved == MAP_FAILED) exit(3);
}

static void fault_on_altstack(size_t size) {
    stack_t ss = {.ss_sp = alt_base, .ss_size = size, .ss_flags = 0};
    if (sigaltstack(&ss, NULL) != 0) _exit(4);
    struct sigaction sa = {.sa_sigaction = on_segv, .sa_flags = SA_SIGINFO | SA_ONSTACK};
    sigemptyset(&sa.sa_mask);
    if (sigaction(SIGSEGV, &sa, NULL) != 0) _exit(4);
    *(volatile char *)reserved = 1;
}

static void *thread_calls(void *arg) {
    (void)arg;
    printf("thread printf %d %s\n", 42, "words");
    char *small = malloc(100);
    if (!small) return (void *)1;
    strcpy(small, "small");
    char *large = malloc(1 << 20);
    if (!large) return (void *)1;
    large[0] = 1;
    printf("thread malloc %s %d\n", small, large[0]);
    free(large);
    free(small);
    char *p = mmap(NULL, 5 * 4096, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
    if (p == MAP_FAILED) return (void *)1;
    p[0] = 1;
    if (munmap(p, 5 * 4096) != 0) return (void *)1;
    printf("thread mmap ok\n");
    fflush(stdout);
    return NULL;
}

static size_t fork_alt_size;

static void *thread_forks(void *arg) {
    int alt = arg != NULL;
    pid_t pid = fork();
    if (pid < 0) return (void *)1;
    if (pid == 0) {
        if (alt) {
            fault_on_altstack(fork_alt_size);
            _exit(mapped_page == (uintptr_t)reserved ? 0 : 5);
        }
        char *p = mmap(NULL, 7 * 4096, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
        if (p == MAP_FAILED) _exit(3);
        p[0] = 1;
        _exit(munmap(p, 7 * 4096) == 0 ? 0 : 4);
    }
    int status = 0;
    if (waitpid(pid, &status, 0) != pid) return (void *)1;
    printf("child %d status %d\n", (int)pid, status);
    return NULL;
}

static int run_thread(size_t stack, void *(*fn)(void *), void *arg) {
    pthread_attr_t a;
    pthread_attr_init(&a);
    if (pthread_attr_setstacksize(&a, stack) != 0) return 10;
    pthread_t t;
    if (pthread_create(&t, &a, fn, arg) != 0) return 11;
    void *r;
    pthread_join(t, &r);
    return r == NULL ? 0 : 12;
}

/* --- depth ------------------------------------------------------------------------------- */

#define PATTERN 0xA5A5A5A5A5A5A5A5UL
#define DEPTH_STACK (1 << 20)
static char *depth_lo;

__attribute__((noinline)) static void paint(char *below) {
    memset(depth_lo, 0xA5, below - depth_lo);
}

static void *nothing(void *a) { return a; }

static void *held;

__attribute__((noinline)) static void one_call(int what) {
    switch (what) {
    case 0: {
        void *p = mmap(NULL, 4096, PROT_READ, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
        held = p;
        break;
    }
    case 1: munmap(held, 4096); break;
    case 2: {
        void *p = mmap(NULL, 8192, PROT_READ, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
        mprotect(p, 4096, PROT_NONE);
        held = p;
        break;
    }
    case 3: held = mremap(held, 8192, 16384, MREMAP_MAYMOVE); break;
    case 4: held = malloc(64); break;
    case 5: free(held); break;
    case 6: held = malloc(1 << 20); break;
    case 7: free(held); break;
    case 8: {
        pthread_t t;
        if (pthread_create(&t, NULL, nothing, NULL) == 0) pthread_join(t, NULL);
        break;
    }
    case 9: held = dlopen("libm.so.6", RTLD_NOW); break;
    case 10: {
        struct addrinfo hints = {.ai_flags = AI_NUMERICHOST, .ai_family = AF_INET};
        struct addrinfo *res = NULL;
        if (getaddrinfo("127.0.0.1", NULL, &hints, &res) == 0) freeaddrinfo(res);
        break;
    }
    }
}

static const char *names[] = {"mmap", "munmap", "mprotect", "mremap", "malloc", "free",
                              "malloc_large", "free_large", "pthread_create", "dlopen", "getaddrinfo"};

__attribute__((noinline)) static long measure(int what) {
    char here;
    char *below = &here - 256;
    paint(below);
    one_call(what);
    uint64_t *w = (uint64_t *)(((uintptr_t)depth_lo + 7) & ~7UL);
    while ((char *)w < below && *w == PATTERN) w++;
    /* The scan goes in words and may step past an unaligned `below` when the call touched
     * nothing under it: that is 0 bytes, not a negative count. */
    long used = below - (char *)w;
    return used < 0 ? 0 : used;
}

static void *depth_thread(void *arg) {
    (void)arg;
    for (int i = 0; i < (int)(sizeof names / sizeof names[0]); i++)
        printf("depth %s %ld\n", names[i], measure(i));
    return NULL;
}

static int depth(void) {
    char *s = mmap(NULL, DEPTH_STACK, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
    if (s == MAP_FAILED) return 3;
    depth_lo = s;
    pthread_attr_t a;
    pthread_attr_init(&a);
    if (pthread_attr_setstack(&a, s, DEPTH_STACK) != 0) return 10;
    pthread_t t;
    if (pthread_create(&t, &a, depth_thread, NULL) != 0) return 11;
    pthread_join(t, NULL);
    return 0;
}

int main(int argc, char **argv) {
    if (argc < 2) return 2;
    const char *mode = argv[1];
    size_t arg = argc > 2 ? strtoul(argv[2], NULL, 0) : 0;
    setvbuf(stdout, NULL, _IOLBF, 0);
    if (strcmp(mode, "minsig") == 0) {
        printf("minsigstksz %lu\nsigstksz %lu\n", getauxval(AT_MINSIGSTKSZ), (unsigned long)SIGSTKSZ);
        return 0;
    }
    if (strcmp(mode, "thread") == 0) {
        int r = run_thread(PTHREAD_STACK_MIN, thread_calls, NULL);
        printf("stack_min %lu\n", (unsigned long)PTHREAD_STACK_MIN);
        return r;
    }
    if (strcmp(mode, "fork") == 0) return run_thread(arg, thread_forks, NULL);
    if (strcmp(mode, "altstack") == 0) {
        map_regions(arg);
        fault_on_altstack(arg);
        printf("mapped %#lx\n", (unsigned long)mapped_page);
        return mapped_page == (uintptr_t)reserved ? 0 : 5;
    }
    if (strcmp(mode, "forkaltstack") == 0) {
        map_regions(arg);
        fork_alt_size = arg;
        int r = run_thread(PTHREAD_STACK_MIN, thread_forks, (void *)1);
        printf("mapped %#lx\n", (unsigned long)(uintptr_t)reserved);
        return r;
    }
    if (strcmp(mode, "depth") == 0) return depth();
    return 2;
}

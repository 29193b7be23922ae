// A target for `vmshim explain` (issue 16): the same shared library twice, once loaded by
// dlopen (libm.so.6, which this program does not link) and once mapped by a plain mmap of its
// file, so that only the loader's link map can tell them apart. Prints
//   dlopen BASE PATH      (BASE: the load bias, from dlinfo's link_map l_addr)
//   mmap START END        (the whole file, PROT_READ, MAP_PRIVATE)
//   ready PID
// then waits for stdin to close.
#define _GNU_SOURCE
#include <dlfcn.h>
#include <fcntl.h>
#include <link.h>
#include <stdio.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

int main(void) {
    void *h = dlopen("libm.so.6", RTLD_NOW);
    if (!h) {
        fprintf(stderr, "dlopen: %s\n", dlerror());
        return 1;
    }
    struct link_map *lm = NULL;
    if (dlinfo(h, RTLD_DI_LINKMAP, &lm) != 0) {
        fprintf(stderr, "dlinfo: %s\n", dlerror());
        return 1;
    }
    printf("dlopen %#lx %s\n", (unsigned long)lm->l_addr, lm->l_name);
    int fd = open(lm->l_name, O_RDONLY | O_CLOEXEC);
    struct stat st;
    if (fd < 0 || fstat(fd, &st) != 0) {
        perror("open");
        return 1;
    }
    void *p = mmap(NULL, st.st_size, PROT_READ, MAP_PRIVATE, fd, 0);
    if (p == MAP_FAILED) {
        perror("mmap");
        return 1;
    }
    close(fd);
    printf("mmap %#lx %#lx\n", (unsigned long)p, (unsigned long)p + st.st_size);
    printf("ready %d\n", getpid());
    fflush(stdout);
    char c;
    while (read(0, &c, 1) > 0) {
    }
    return 0;
}

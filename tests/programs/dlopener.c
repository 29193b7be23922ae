/* dlopener.c: loads a shared library at run time with dlopen.
 *
 * Usage: dlopener LIBRARY   dlopens LIBRARY (RTLD_NOW) and calls its `plugin_answer`.
 * Stdout: "answer <n>", then "ready <pid>"; then reads one byte (or EOF) and exits 0.
 */
#include <dlfcn.h>
#include <stdio.h>
#include <unistd.h>

int main(int argc, char **argv) {
    if (argc != 2) return 2;
    void *h = dlopen(argv[1], RTLD_NOW);
    if (!h) {
        fprintf(stderr, "%s\n", dlerror());
        return 1;
    }
    int (*answer)(void) = (int (*)(void))dlsym(h, "plugin_answer");
    printf("answer %d\nready %d\n", answer ? answer() : -1, getpid());
    fflush(stdout);
    char c;
    (void)read(0, &c, 1);
    return 0;
}

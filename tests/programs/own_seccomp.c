/* own_seccomp.c: a target that installs a seccomp filter of its own, for the syscall recorder's
 * tests (issue 15): the recorder's filter is already there, and the target's stacks on it.
 *
 * Usage: own_seccomp allow   an allow-all filter (prctl(PR_SET_SECCOMP))
 *        own_seccomp trace   SECCOMP_RET_TRACE for getppid, allow the rest (with no tracer, the
 *                            kernel fails getppid with ENOSYS: seccomp(2))
 *        own_seccomp strict  seccomp strict mode (prctl(PR_SET_SECCOMP, SECCOMP_MODE_STRICT)),
 *        own_seccomp strict2 the same by seccomp(SECCOMP_SET_MODE_STRICT): in strict mode only
 *                            read, write, _exit and sigreturn are left, so it writes
 *                            "strict ok" with write(2) and leaves with the exit system call
 * Then (allow, trace) it maps and unmaps 3 MiB, and prints what each call gave:
 * Stdout: filter <mode> installed
 *         getppid <result> errno <errno>
 *         mmap <3145728> at <addr-hex>
 */
#define _GNU_SOURCE
#include <errno.h>
#include <linux/filter.h>
#include <linux/seccomp.h>
#include <stddef.h>
#include <stdio.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/prctl.h>
#include <sys/syscall.h>
#include <unistd.h>

int main(int argc, char **argv) {
    if (argc == 2 && !strncmp(argv[1], "strict", 6)) {
        long r = strcmp(argv[1], "strict2") ? prctl(PR_SET_SECCOMP, SECCOMP_MODE_STRICT, 0, 0, 0)
                                            : syscall(SYS_seccomp, SECCOMP_SET_MODE_STRICT, 0, NULL);
        if (r != 0) {
            perror("own_seccomp: strict mode");
            return 1;
        }
        static const char ok[] = "strict ok\n";
        syscall(SYS_write, 1, ok, sizeof ok - 1);
        syscall(SYS_exit, 0);
    }
    if (argc != 2 || (strcmp(argv[1], "allow") && strcmp(argv[1], "trace"))) {
        fprintf(stderr, "usage: own_seccomp allow|trace|strict|strict2\n");
        return 2;
    }
    int trace = !strcmp(argv[1], "trace");
    struct sock_filter allow_all[] = {BPF_STMT(BPF_RET | BPF_K, SECCOMP_RET_ALLOW)};
    struct sock_filter trace_getppid[] = {
        BPF_STMT(BPF_LD | BPF_W | BPF_ABS, offsetof(struct seccomp_data, nr)),
        BPF_JUMP(BPF_JMP | BPF_JEQ | BPF_K, SYS_getppid, 0, 1),
        BPF_STMT(BPF_RET | BPF_K, SECCOMP_RET_TRACE | 7),
        BPF_STMT(BPF_RET | BPF_K, SECCOMP_RET_ALLOW),
    };
    struct sock_fprog prog = trace ? (struct sock_fprog){4, trace_getppid} : (struct sock_fprog){1, allow_all};
    if (prctl(PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0) != 0 || prctl(PR_SET_SECCOMP, SECCOMP_MODE_FILTER, &prog) != 0) {
        perror("own_seccomp: prctl");
        return 1;
    }
    printf("filter %s installed\n", argv[1]);
    errno = 0;
    long ppid = syscall(SYS_getppid);
    printf("getppid %ld errno %d\n", ppid < 0 ? -1L : (ppid > 0 ? 1L : 0L), ppid < 0 ? errno : 0);
    size_t len = 3 << 20;
    void *p = mmap(NULL, len, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
    if (p == MAP_FAILED) {
        perror("own_seccomp: mmap");
        return 1;
    }
    printf("mmap %zu ok\n", len);
    fprintf(stderr, "at %p\n", p);
    munmap(p, len);
    fflush(stdout);
    return 0;
}

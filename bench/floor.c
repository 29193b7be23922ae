/* floor.c: what vmshim run's mechanisms cost before vmshim does any work (issue 12).
 *
 *   floor [--no-watch] [--no-hold] CMD [ARG...]
 *
 * Runs CMD as `vmshim run` runs its target, with the same three mechanisms and nothing behind
 * them:
 *   - the exit watcher: a seccomp filter installed between fork and exec, inherited by the whole
 *     tree, that stops every exit_group at its entry for a listener (SECCOMP_RET_USER_NOTIF);
 *     here a thread answers each one at once (SECCOMP_USER_NOTIF_FLAG_CONTINUE), reading
 *     nothing. The listener asks for SECCOMP_USER_NOTIF_FD_SYNC_WAKE_UP, as vmshim's does.
 *   - the hold: CMD itself ptrace-seized (PTRACE_O_TRACEEXIT | EXITKILL | TRACEEXEC), every
 *     signal-delivery stop looked at (PTRACE_GETSIGINFO) and resumed with its signal, every
 *     event stop resumed.
 *   - the preload: whatever LD_PRELOAD the caller sets in FLOOR_PRELOAD is given to CMD (and so
 *     to its tree), not to this process. bench.py gives it an empty library: what any preload
 *     costs a process's start.
 * --no-watch and --no-hold leave one out. Exits with CMD's status (128 + the signal if killed).
 *
 * As vmshim, it installs the filter with CAP_SYS_ADMIN when it has it (root), else with
 * no_new_privs.
 */
#define _GNU_SOURCE
#include <errno.h>
#include <linux/filter.h>
#include <linux/seccomp.h>
#include <pthread.h>
#include <signal.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/ioctl.h>
#include <sys/prctl.h>
#include <sys/ptrace.h>
#include <sys/socket.h>
#include <sys/syscall.h>
#include <sys/wait.h>
#include <unistd.h>

#ifndef SECCOMP_IOCTL_NOTIF_SET_FLAGS
#define SECCOMP_IOCTL_NOTIF_SET_FLAGS _IOW('!', 4, __u64)
#endif
#ifndef SECCOMP_USER_NOTIF_FD_SYNC_WAKE_UP
#define SECCOMP_USER_NOTIF_FD_SYNC_WAKE_UP 1UL
#endif

/* Answers every notification at once: the exiting process goes on. */
static void *answer(void *arg) {
    int listener = *(int *)arg;
    /* Refused by kernels before 6.6: notifications work as before. */
    ioctl(listener, SECCOMP_IOCTL_NOTIF_SET_FLAGS, SECCOMP_USER_NOTIF_FD_SYNC_WAKE_UP);
    for (;;) {
        struct seccomp_notif req;
        memset(&req, 0, sizeof req);
        if (ioctl(listener, SECCOMP_IOCTL_NOTIF_RECV, &req) != 0) {
            if (errno == EINTR || errno == ENOENT)
                continue;
            return NULL; /* the tree is gone */
        }
        struct seccomp_notif_resp resp = {.id = req.id, .flags = SECCOMP_USER_NOTIF_FLAG_CONTINUE};
        ioctl(listener, SECCOMP_IOCTL_NOTIF_SEND, &resp);
    }
}

/* In the child: the filter (exit_group to the listener, all else allowed), its listener sent
 * to the parent over `sock`. */
static void install_watch(int sock) {
    struct sock_filter prog[] = {
        BPF_STMT(BPF_LD | BPF_W | BPF_ABS, offsetof(struct seccomp_data, nr)),
        BPF_JUMP(BPF_JMP | BPF_JEQ | BPF_K, SYS_exit_group, 0, 1),
        BPF_STMT(BPF_RET | BPF_K, SECCOMP_RET_USER_NOTIF),
        BPF_STMT(BPF_RET | BPF_K, SECCOMP_RET_ALLOW),
    };
    struct sock_fprog fprog = {sizeof prog / sizeof prog[0], prog};
    int fd = syscall(SYS_seccomp, SECCOMP_SET_MODE_FILTER, SECCOMP_FILTER_FLAG_NEW_LISTENER, &fprog);
    if (fd < 0 && errno == EACCES && prctl(PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0) == 0)
        fd = syscall(SYS_seccomp, SECCOMP_SET_MODE_FILTER, SECCOMP_FILTER_FLAG_NEW_LISTENER, &fprog);
    if (fd < 0) {
        perror("floor: seccomp");
        _exit(126);
    }
    char byte = 0, control[CMSG_SPACE(sizeof(int))];
    struct iovec iov = {&byte, 1};
    struct msghdr msg = {.msg_iov = &iov, .msg_iovlen = 1, .msg_control = control, .msg_controllen = sizeof control};
    struct cmsghdr *c = CMSG_FIRSTHDR(&msg);
    c->cmsg_level = SOL_SOCKET;
    c->cmsg_type = SCM_RIGHTS;
    c->cmsg_len = CMSG_LEN(sizeof(int));
    memcpy(CMSG_DATA(c), &fd, sizeof fd);
    if (sendmsg(sock, &msg, 0) != 1)
        _exit(126);
    close(fd);
}

int main(int argc, char **argv) {
    int watch = 1, hold = 1, first = 1;
    for (; first < argc && argv[first][0] == '-'; first++) {
        if (!strcmp(argv[first], "--no-watch"))
            watch = 0;
        else if (!strcmp(argv[first], "--no-hold"))
            hold = 0;
        else
            break;
    }
    if (first >= argc) {
        fprintf(stderr, "usage: floor [--no-watch] [--no-hold] CMD [ARG...]\n");
        return 2;
    }
    int sv[2];
    if (socketpair(AF_UNIX, SOCK_STREAM, 0, sv) != 0) {
        perror("floor: socketpair");
        return 2;
    }
    pid_t pid = fork();
    if (pid < 0) {
        perror("floor: fork");
        return 2;
    }
    if (pid == 0) {
        char go;
        if (watch)
            install_watch(sv[1]);
        else if (write(sv[1], "", 1) != 1)
            _exit(126);
        if (getenv("FLOOR_PRELOAD"))
            setenv("LD_PRELOAD", getenv("FLOOR_PRELOAD"), 1);
        /* Waits until the parent has seized it. */
        if (read(sv[1], &go, 1) != 1)
            _exit(126);
        close(sv[0]);
        close(sv[1]);
        execvp(argv[first], argv + first);
        perror("floor: exec");
        _exit(127);
    }
    static int listener = -1;
    char byte, control[CMSG_SPACE(sizeof(int))];
    struct iovec iov = {&byte, 1};
    struct msghdr msg = {.msg_iov = &iov, .msg_iovlen = 1, .msg_control = control, .msg_controllen = sizeof control};
    if (recvmsg(sv[0], &msg, 0) != 1)
        return 2;
    if (watch) {
        pthread_t t;
        memcpy(&listener, CMSG_DATA(CMSG_FIRSTHDR(&msg)), sizeof listener);
        if (pthread_create(&t, NULL, answer, &listener) != 0)
            return 2;
    }
    if (hold && ptrace(PTRACE_SEIZE, pid, 0, PTRACE_O_TRACEEXIT | PTRACE_O_EXITKILL | PTRACE_O_TRACEEXEC) != 0) {
        perror("floor: PTRACE_SEIZE");
        return 2;
    }
    if (write(sv[0], "", 1) != 1)
        return 2;
    for (;;) {
        int status;
        if (waitpid(pid, &status, __WALL) < 0) {
            perror("floor: waitpid");
            return 2;
        }
        if (WIFEXITED(status))
            return WEXITSTATUS(status);
        if (WIFSIGNALED(status))
            return 128 + WTERMSIG(status);
        if (!WIFSTOPPED(status))
            continue;
        int sig = 0;
        if (status >> 16 == 0) {
            /* A signal-delivery stop: vmshim looks at it (a SIGKILL race needs the siginfo). */
            siginfo_t si;
            ptrace(PTRACE_GETSIGINFO, pid, 0, &si);
            sig = WSTOPSIG(status);
        }
        ptrace(PTRACE_CONT, pid, 0, sig);
    }
}

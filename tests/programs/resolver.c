/* resolver.c: libc's resolver functions on "localhost" and on a numeric address, from the main
 * thread and from a second thread. Nothing needs a DNS server: /etc/hosts answers "localhost",
 * and numeric addresses need no lookup.
 *
 * Stdout: one "call <api> <name> tid <tid> = <0|error>" line per call, then "calls <n>".
 */
#define _GNU_SOURCE
#include <arpa/inet.h>
#include <netdb.h>
#include <pthread.h>
#include <stdio.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

static int calls;
static pthread_mutex_t out = PTHREAD_MUTEX_INITIALIZER;

static void say(const char *api, const char *name, int rc) {
    pthread_mutex_lock(&out);
    printf("call %s %s tid %d = %d\n", api, name, gettid(), rc);
    calls++;
    pthread_mutex_unlock(&out);
}

static void *lookups(void *arg) {
    (void)arg;
    const char *names[] = {"localhost", "127.0.0.1"};
    for (int i = 0; i < 2; i++) {
        struct addrinfo hints = {.ai_family = AF_UNSPEC, .ai_socktype = SOCK_STREAM}, *res = NULL;
        int rc = getaddrinfo(names[i], "80", &hints, &res);
        say("getaddrinfo", names[i], rc);
        if (rc == 0) freeaddrinfo(res);
    }
    struct sockaddr_in sa = {.sin_family = AF_INET, .sin_port = htons(80)};
    inet_pton(AF_INET, "127.0.0.1", &sa.sin_addr);
    char host[256], serv[32];
    int rc = getnameinfo((struct sockaddr *)&sa, sizeof sa, host, sizeof host, serv, sizeof serv, NI_NUMERICSERV);
    say("getnameinfo", "127.0.0.1", rc);
    struct hostent *h = gethostbyname("localhost");
    say("gethostbyname", "localhost", h ? 0 : h_errno);
    return NULL;
}

int main(void) {
    lookups(NULL);
    pthread_t t;
    pthread_create(&t, NULL, lookups, NULL);
    pthread_join(t, NULL);
    printf("calls %d\n", calls);
    return 0;
}

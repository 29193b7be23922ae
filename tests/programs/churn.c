/* churn.c: many events, few live regions: the input of the report's memory-bound test.
 *
 * Usage: churn PAIRS
 * PAIRS times: munmap the oldest of LIVE one-page anonymous mappings (once there are LIVE),
 * mmap a new one. The calls come from 4 call sites, each 0 to 9 frames deep: 40 distinct
 * stacks. At the end LIVE mappings are left (fewer if PAIRS < LIVE).
 *
 * Stdout: "live <LIVE> <page size>", then exits 0.
 */
#define _GNU_SOURCE
#include <stdio.h>
#include <stdlib.h>
#include <sys/mman.h>
#include <unistd.h>

#define LIVE 256

static void *live[LIVE];
static long page;

static int step(long i, int depth) {
    if (depth > 0) return step(i, depth - 1);
    long k = i % LIVE;
    if (live[k]) munmap(live[k], page);
    live[k] = mmap(NULL, page, PROT_READ, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
    return live[k] == MAP_FAILED;
}

static int site0(long i) { return step(i, (int)(i % 10)); }
static int site1(long i) { return step(i, (int)(i % 10)); }
static int site2(long i) { return step(i, (int)(i % 10)); }
static int site3(long i) { return step(i, (int)(i % 10)); }

int main(int argc, char **argv) {
    if (argc != 2) return 2;
    long pairs = atol(argv[1]);
    page = sysconf(_SC_PAGESIZE);
    int (*sites[4])(long) = {site0, site1, site2, site3};
    for (long i = 0; i < pairs; i++)
        if (sites[(i / 10) % 4](i)) return 1;
    printf("live %d %ld\n", pairs < LIVE ? (int)pairs : LIVE, page);
    return 0;
}

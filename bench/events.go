// events.go: N events from Go through cgo: each iteration calls a C function that calls
// mprotect on one page with the protection it already has.
package main

/*
#include <sys/mman.h>
static char *page;
static void setup(void) { page = mmap(0, 4096, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0); }
static void event(void) { mprotect(page, 4096, PROT_READ | PROT_WRITE); }
*/
import "C"

import (
	"fmt"
	"os"
	"strconv"
	"time"
)

//go:noinline
func loop(n int, depth int) {
	if depth > 0 {
		loop(n, depth-1)
		return
	}
	for i := 0; i < n; i++ {
		C.event()
	}
}

func main() {
	n, _ := strconv.Atoi(os.Args[1])
	C.setup()
	t0 := time.Now()
	loop(n, 8)
	fmt.Printf("%.6f\n", time.Since(t0).Seconds())
}

// explain_goroutines: a target for `vmshim explain` (issue 16): N goroutines, each blocked
// receiving from a channel in the named function parkHere, so that explain, which reads
// runtime.allgs from outside, must find exactly N goroutines there.
//
// Usage: explain_goroutines N
// Stdout: "goroutines NUM" (runtime.NumGoroutine() once all N are parked), "ready PID", then it
// waits for stdin to close, releases the goroutines and exits 0.
package main

import (
	"os"
	"runtime"
	"strconv"
	"syscall"
	"time"
)

var release = make(chan struct{})

//go:noinline
func parkHere(started chan<- struct{}) {
	started <- struct{}{}
	<-release
}

func main() {
	n, err := strconv.Atoi(os.Args[1])
	if err != nil {
		os.Stderr.WriteString("usage: explain_goroutines N\n")
		os.Exit(2)
	}
	started := make(chan struct{})
	for i := 0; i < n; i++ {
		go parkHere(started)
	}
	for i := 0; i < n; i++ {
		<-started
	}
	// A goroutine that sent on started may not have reached the receive yet: wait until the
	// count is steady (each one parks at once, the runtime starts no more).
	before := -1
	for runtime.NumGoroutine() != before {
		before = runtime.NumGoroutine()
		time.Sleep(20 * time.Millisecond)
	}
	os.Stdout.WriteString("goroutines " + strconv.Itoa(runtime.NumGoroutine()) + "\n")
	os.Stdout.WriteString("ready " + strconv.Itoa(syscall.Getpid()) + "\n")
	buf := make([]byte, 1)
	for {
		if k, _ := os.Stdin.Read(buf); k <= 0 {
			break
		}
	}
	close(release)
}

// ex2: ex6 without cgo. The tests build it with CGO_ENABLED=0, which links it statically: there
// is no dynamic loader, so LD_PRELOAD cannot apply and `vmshim run` must refuse it with a clear
// message and a non-zero exit.
//
// Usage: ex2
// Stdout: "ex2 ready <pid>", then it sleeps 1 s and exits 0. It does not read stdin.
package main

import (
	"os"
	"strconv"
	"syscall"
	"time"
)

func main() {
	os.Stdout.WriteString("ex2 ready " + strconv.Itoa(syscall.Getpid()) + "\n")
	time.Sleep(time.Second)
}

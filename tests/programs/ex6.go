// ex6: the cgo program that started vmshim (see FACTS.md): a Go binary linked with cgo, which
// calls C.puts once and sleeps one second. Built with CGO_ENABLED=1 it shows about 1 GB of VSZ
// on Go 1.19: Go's reservations, plus an 8 MiB stack and a 64 MiB glibc arena per cgo thread.
//
// Usage: ex6
// Stdout: "ex6 ready <pid>" (written by C puts, then C fflush(stdout): Go leaves through a raw
// exit_group that would drop C's stdio buffer), then it sleeps 1 s (the quiet moment to read
// /proc/<pid>/maps) and exits 0. It does not read stdin.
package main

/*
#include <stdio.h>
#include <stdlib.h>

static void flush_stdout(void) { fflush(stdout); }
*/
import "C"

import (
	"strconv"
	"syscall"
	"time"
	"unsafe"
)

func main() {
	msg := C.CString("ex6 ready " + strconv.Itoa(syscall.Getpid()))
	C.puts(msg)
	C.flush_stdout()
	C.free(unsafe.Pointer(msg))
	time.Sleep(time.Second)
}

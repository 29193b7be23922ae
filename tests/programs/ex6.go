// ex6: the cgo program that started vmshim (see FACTS.md): a Go binary linked with cgo, which
// calls C.puts once and sleeps one second. Built with CGO_ENABLED=1 it shows about 1 GB of VSZ
// on Go 1.19: Go's reservations, plus an 8 MiB stack and a 64 MiB glibc arena per cgo thread.
//
// Usage: ex6
// Stdout: "ex6 heap 0x<address of a Go heap object>", "ex6 ready <pid>" (written by C puts, then C fflush(stdout): Go leaves through a raw
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

// heapObject is where the Go heap is: the tests find the heap's mapping from it, since current
// Go randomizes the heap's address.
var heapObject []byte

func main() {
	heapObject = make([]byte, 64<<10)
	where := C.CString("ex6 heap 0x" + strconv.FormatUint(uint64(uintptr(unsafe.Pointer(&heapObject[0]))), 16))
	C.puts(where)
	C.free(unsafe.Pointer(where))
	msg := C.CString("ex6 ready " + strconv.Itoa(syscall.Getpid()))
	C.puts(msg)
	C.flush_stdout()
	C.free(unsafe.Pointer(msg))
	time.Sleep(time.Second)
}

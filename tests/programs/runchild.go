// runchild.go: a cgo Go program that runs a child with os/exec (Go starts it with a raw
// clone(CLONE_VFORK) and execve, no libc fork) and prints the child's pid.
package main

// #include <stdlib.h>
import "C"

import (
	"fmt"
	"os"
	"os/exec"
)

func main() {
	_ = C.abs(1)
	cmd := exec.Command(os.Args[1])
	if err := cmd.Run(); err != nil {
		fmt.Println("error", err)
		os.Exit(1)
	}
	fmt.Println("child", cmd.ProcessState.Pid())
}

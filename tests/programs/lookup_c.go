// lookup_c.go: lookup.go with a C import, so it is a cgo binary (dynamically linked) whatever
// resolver its build tags or GODEBUG select.
package main

// #include <stdlib.h>
import "C"

import (
	"fmt"
	"net"
	"os"
)

func main() {
	_ = C.abs(1)
	addrs, err := net.LookupHost("localhost")
	if err != nil {
		fmt.Println("error", err)
		os.Exit(1)
	}
	fmt.Println("addrs", addrs)
}

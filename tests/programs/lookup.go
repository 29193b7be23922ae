// lookup.go: resolves "localhost" with net.LookupHost and prints the addresses. No C code of its
// own: built with -tags netcgo it links libc's resolver internally; built with CGO_ENABLED=0 it
// is static. lookup_c.go is the same program with a C import.
package main

import (
	"fmt"
	"net"
	"os"
)

func main() {
	addrs, err := net.LookupHost("localhost")
	if err != nil {
		fmt.Println("error", err)
		os.Exit(1)
	}
	fmt.Println("addrs", addrs)
}

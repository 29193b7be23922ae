// server.go: the ex1 shape (a net/http server on 127.0.0.1) kept serving for a load test.
// Prints "port N" and serves until its stdin closes. Built with server_cgo.go and CGO_ENABLED=1
// it is the cgo server of the seed (libc loaded, pthreads, glibc's arenas); built with
// CGO_ENABLED=0, which leaves server_cgo.go out, the same server static (issue 15).
package main

import (
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
)

func main() {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		fmt.Println("error", err)
		os.Exit(1)
	}
	http.HandleFunc("/", func(w http.ResponseWriter, r *http.Request) {
		io.WriteString(w, "hello from the bench server\n")
	})
	go http.Serve(ln, nil)
	fmt.Printf("port %d\n", ln.Addr().(*net.TCPAddr).Port)
	io.Copy(io.Discard, os.Stdin)
}

// ex1: a net/http server linked with cgo, as in the original investigation. It listens on
// 127.0.0.1 (port chosen by the kernel), sends one request to itself with the net/http client,
// then stops. The cgo preamble makes it a cgo binary whatever the net package's resolver choice.
//
// Usage: ex1
// Stdout, one line each:
//
//	port <port>
//	body <response body>      (the handler answers "hello from ex1")
//	ready <pid>               (pid from C getpid)
//
// Then reads one byte (or EOF) from stdin, closes the server and exits 0; so the server's
// threads are all alive while a test reads /proc/<pid>/maps.
package main

/*
#include <unistd.h>
*/
import "C"

import (
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"time"
)

func main() {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		fmt.Fprintln(os.Stderr, "ex1: listen:", err)
		os.Exit(1)
	}
	port := ln.Addr().(*net.TCPAddr).Port
	fmt.Printf("port %d\n", port)

	srv := &http.Server{Handler: http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		io.WriteString(w, "hello from ex1")
	})}
	go srv.Serve(ln)

	// No proxy: the request must reach this process whatever HTTP_PROXY says.
	client := &http.Client{Transport: &http.Transport{Proxy: nil}, Timeout: 10 * time.Second}
	resp, err := client.Get(fmt.Sprintf("http://127.0.0.1:%d/", port))
	if err != nil {
		fmt.Fprintln(os.Stderr, "ex1: get:", err)
		os.Exit(1)
	}
	body, err := io.ReadAll(resp.Body)
	resp.Body.Close()
	if err != nil {
		fmt.Fprintln(os.Stderr, "ex1: read body:", err)
		os.Exit(1)
	}
	fmt.Printf("body %s\n", body)
	fmt.Printf("ready %d\n", C.getpid())

	var b [1]byte
	os.Stdin.Read(b[:]) // a byte or EOF: either ends the wait
	srv.Close()
}

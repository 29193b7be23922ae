//go:build cgo

// server_cgo.go: what makes bench/server.go a cgo binary when cgo is on (see server.go).
package main

// #include <stdlib.h>
import "C"

func init() { _ = C.abs(1) }

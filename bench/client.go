// client.go: sends N GET requests to 127.0.0.1:PORT over C keep-alive connections and prints
// the requests per second it saw. Usage: client PORT N C
package main

import (
	"fmt"
	"io"
	"net/http"
	"os"
	"strconv"
	"sync"
	"time"
)

func main() {
	port, n, c := os.Args[1], atoi(os.Args[2]), atoi(os.Args[3])
	url := "http://127.0.0.1:" + port + "/"
	tr := &http.Transport{MaxIdleConnsPerHost: c, Proxy: nil}
	client := &http.Client{Transport: tr}
	var wg sync.WaitGroup
	per := n / c
	start := time.Now()
	for i := 0; i < c; i++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for j := 0; j < per; j++ {
				resp, err := client.Get(url)
				if err != nil {
					fmt.Println("error", err)
					os.Exit(1)
				}
				io.Copy(io.Discard, resp.Body)
				resp.Body.Close()
			}
		}()
	}
	wg.Wait()
	fmt.Printf("%.1f\n", float64(per*c)/time.Since(start).Seconds())
}

func atoi(s string) int {
	v, err := strconv.Atoi(s)
	if err != nil {
		panic(err)
	}
	return v
}

// Command writer takes a dlm lock, then writes one key to the fenced store
// with the lock's fencing token, and releases the lock.
//
//	go run ./examples/fenced-store/writer -server http://127.0.0.1:7070 -store http://127.0.0.1:8080 -key greeting -value hello
//
// With -pause it waits for a line on stdin between taking the lock and
// writing, which stands for slow work or a long stall: stop it with SIGSTOP
// until its lease runs out and another writer takes the lock, resume it
// with SIGCONT, press enter, and the store refuses its stale write instead
// of overwriting the newer one. The writer does not even check that it
// still holds the lock: the store's fence is what protects the data.
//
// It exits 0 when the store accepted the write, 3 when it refused it.
package main

import (
	"bufio"
	"context"
	"flag"
	"fmt"
	"io"
	"log"
	"net/http"
	"os"
	"strings"
	"time"

	"github.com/dlm/dlm/client"
	"github.com/dlm/dlm/client/fence"
)

func main() {
	server := flag.String("server", "http://127.0.0.1:7070", "the dlm servers (comma-separated URLs)")
	storeURL := flag.String("store", "http://127.0.0.1:8080", "the fenced store")
	lock := flag.String("lock", "kv", "the dlm lock that guards the store")
	key := flag.String("key", "greeting", "the key to write")
	value := flag.String("value", "hello", "the value to write")
	lease := flag.Duration("lease", 0, "session lease (0: the server's default)")
	pause := flag.Bool("pause", false, "wait for a line on stdin between taking the lock and writing")
	flag.Parse()

	ctx := context.Background()
	c, err := client.New(ctx, client.ParseEndpoints(*server), client.WithName("fenced-store writer"),
		client.WithLease(*lease), client.WithToken(os.Getenv("DLM_TOKEN")))
	if err != nil {
		log.Fatal(err)
	}
	defer c.Close(ctx)

	lk, err := c.Acquire(ctx, client.LockName(*lock))
	if err != nil {
		log.Fatal(err)
	}
	fmt.Printf("holding lock %q with token %d\n", lk.Name(), lk.Token())
	if *pause {
		fmt.Println("press enter to write")
		if _, err := bufio.NewReader(os.Stdin).ReadString('\n'); err != nil && err != io.EOF {
			log.Fatal(err)
		}
	}

	req, err := http.NewRequestWithContext(ctx, http.MethodPut, *storeURL+"/kv/"+*key, strings.NewReader(*value))
	if err != nil {
		log.Fatal(err)
	}
	fence.SetHeaders(req.Header, lk.Name(), lk.Token())
	hc := &http.Client{Timeout: 30 * time.Second}
	resp, err := hc.Do(req)
	if err != nil {
		log.Fatal(err)
	}
	msg, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	// Released either way: a lost grant's release just reports the loss.
	if err := lk.Release(ctx); err != nil {
		fmt.Printf("release: %v\n", err)
	}
	if resp.StatusCode != http.StatusNoContent {
		fmt.Printf("store refused the write (%s): %s\n", resp.Status, strings.TrimSpace(string(msg)))
		c.Close(ctx)
		os.Exit(3)
	}
	fmt.Printf("store accepted %s=%s with token %d\n", *key, *value, lk.Token())
}

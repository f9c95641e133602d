// Command append is the smallest useful dlm client: it takes the lock,
// appends one line to a file inside a critical section, and prints the file.
//
//	go run ./examples/append -server http://127.0.0.1:7070 -file file_3 "hello"
package main

import (
	"context"
	"flag"
	"fmt"
	"log"
	"os"
	"strings"
	"time"

	"github.com/dlm/dlm/client"
)

func main() {
	server := flag.String("server", "http://127.0.0.1:7070", "comma-separated server URLs")
	file := flag.String("file", "file_3", "file to append to")
	flag.Parse()
	line := strings.Join(flag.Args(), " ") + "\n"

	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	c, err := client.New(ctx, client.ParseEndpoints(*server), client.WithName("examples/append"))
	if err != nil {
		log.Fatal(err)
	}
	defer c.Close(context.Background())

	// WithLock releases (committing the appends) when the function returns
	// nil, and aborts (discarding them) when it returns an error: the file
	// gets the whole critical section or nothing.
	err = c.WithLock(ctx, func(ctx context.Context, lk *client.Lock) error {
		fmt.Fprintf(os.Stderr, "holding the lock with fencing token %d\n", lk.Token())
		return lk.Append(ctx, *file, []byte(line))
	})
	if err != nil {
		log.Fatal(err)
	}
	data, err := c.ReadFile(ctx, *file)
	if err != nil {
		log.Fatal(err)
	}
	os.Stdout.Write(data)
}

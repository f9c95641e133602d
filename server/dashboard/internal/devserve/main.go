// Command devserve runs one dlm node that serves the API and the dashboard
// on one port, for the dashboard's browser tests and for working on the page
// before dlm serve mounts it. It prints the same first line as dlm serve.
package main

import (
	"context"
	"flag"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"os"
	"os/signal"
	"syscall"
	"time"

	"github.com/dlm/dlm/server/dashboard"
	"github.com/dlm/dlm/server/node"
	"github.com/dlm/dlm/server/service"
)

func main() {
	if err := run(); err != nil {
		fmt.Fprintln(os.Stderr, "devserve:", err)
		os.Exit(1)
	}
}

func run() error {
	var cfg node.Config
	listen := flag.String("listen", "127.0.0.1:7070", "address for the API and the dashboard")
	flag.StringVar(&cfg.DataDir, "data", "./dlm-data", "data folder")
	flag.DurationVar(&cfg.DefaultLease, "lease", 10*time.Second, "default session lease")
	flag.DurationVar(&cfg.MinLease, "min-lease", 200*time.Millisecond, "shortest lease a session may ask for")
	flag.Parse()
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()

	cfg.Logger = slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: slog.LevelWarn}))
	ln, err := net.Listen("tcp", *listen)
	if err != nil {
		return err
	}
	cfg.ClientURL = "http://" + ln.Addr().String()
	n, err := node.Open(cfg)
	if err != nil {
		ln.Close()
		return err
	}
	srv := &http.Server{
		Handler:           service.Handler(service.New(n), service.NewCluster(n), dashboard.Handler()),
		Protocols:         service.Protocols(),
		ReadHeaderTimeout: 10 * time.Second,
	}
	served := make(chan error, 1)
	go func() { served <- srv.Serve(ln) }()
	fmt.Printf("dlm serving on %s (data in %s)\n", cfg.ClientURL, cfg.DataDir)
	select {
	case err = <-served:
		return err
	case <-ctx.Done():
	}
	shut, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	nerr := n.Shutdown()
	if err := srv.Shutdown(shut); err != nil {
		return err
	}
	return nerr
}

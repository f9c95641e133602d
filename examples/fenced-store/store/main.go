// Command store is a tiny HTTP key-value store that dlm does not own but
// protects with fencing tokens: a write must carry the name of the lock
// that guards the store and a fencing token that is that lock's current
// grant, or it is refused with 409 Conflict. A writer that stalled past its
// lease (a long pause, SIGSTOP) and lost its lock cannot overwrite the data
// of the holder that came after it.
//
//	go run ./examples/fenced-store/store -server http://127.0.0.1:7070 -listen 127.0.0.1:8080
//
// PUT /kv/KEY (headers Dlm-Lock, Dlm-Fencing-Token) writes, GET /kv/KEY
// reads, GET /log lists the accepted writes.
package main

import (
	"flag"
	"fmt"
	"io"
	"log"
	"net"
	"net/http"
	"os"
	"strings"
	"sync"

	"github.com/dlm/dlm/client"
	"github.com/dlm/dlm/client/fence"
)

// store is the data and the log of accepted writes.
type store struct {
	mu   sync.Mutex
	kv   map[string]string
	log  []string
	lock string // the lock writes must hold
}

func (s *store) put(w http.ResponseWriter, r *http.Request) {
	// The fence checked the token before this runs, and runs no other
	// write of the lock until this one returns.
	body, err := io.ReadAll(io.LimitReader(r.Body, 1<<20))
	if err != nil {
		http.Error(w, err.Error(), http.StatusBadRequest)
		return
	}
	key := r.PathValue("key")
	s.mu.Lock()
	s.kv[key] = string(body)
	s.log = append(s.log, fmt.Sprintf("%s=%s token=%s", key, body, r.Header.Get(fence.TokenHeader)))
	s.mu.Unlock()
	w.WriteHeader(http.StatusNoContent)
}

func (s *store) get(w http.ResponseWriter, r *http.Request) {
	s.mu.Lock()
	v, ok := s.kv[r.PathValue("key")]
	s.mu.Unlock()
	if !ok {
		http.NotFound(w, r)
		return
	}
	io.WriteString(w, v)
}

func (s *store) writes(w http.ResponseWriter, _ *http.Request) {
	s.mu.Lock()
	defer s.mu.Unlock()
	io.WriteString(w, strings.Join(s.log, "\n")+"\n")
}

func main() {
	server := flag.String("server", "http://127.0.0.1:7070", "the dlm servers (comma-separated URLs)")
	listen := flag.String("listen", "127.0.0.1:8080", "address to serve on (port 0: any free port)")
	lock := flag.String("lock", "kv", "the dlm lock whose holder may write")
	flag.Parse()

	// A Reader asks CheckToken without a session of its own.
	r, err := client.NewReader(client.ParseEndpoints(*server), client.WithToken(os.Getenv("DLM_TOKEN")))
	if err != nil {
		log.Fatal(err)
	}
	checker := fence.NewChecker(r)
	s := &store{kv: make(map[string]string), lock: *lock}
	mux := http.NewServeMux()
	// Writes must name the store's lock: a token of another lock says
	// nothing about who may write here.
	mux.Handle("PUT /kv/{key}", onlyLock(*lock, checker.Middleware(http.HandlerFunc(s.put))))
	mux.HandleFunc("GET /kv/{key}", s.get)
	mux.HandleFunc("GET /log", s.writes)

	ln, err := net.Listen("tcp", *listen)
	if err != nil {
		log.Fatal(err)
	}
	fmt.Printf("store listening on http://%s (writes need lock %q)\n", ln.Addr(), *lock)
	log.Fatal(http.Serve(ln, mux))
}

// onlyLock refuses writes that name another lock than lock.
func onlyLock(lock string, next http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if got := r.Header.Get(fence.LockHeader); got != lock {
			http.Error(w, fmt.Sprintf("writes need lock %q, not %q", lock, got), http.StatusForbidden)
			return
		}
		next.ServeHTTP(w, r)
	})
}

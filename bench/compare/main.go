// Command compare runs dlm's lock-cycle workload against etcd and Redis, so
// that docs/BENCHMARKS.md can set dlm's figures beside theirs from one run on
// one machine. It lives in its own module so that dlm does not depend on
// either client.
//
// One cycle is: take the lock, write 32 bytes, release. For etcd the lock is
// concurrency.Mutex and the write a Put (etcd has no append; a Put is
// cheaper than dlm's append). For Redis the lock is SET NX PX with 1 ms
// polling, the write APPEND, the release a compare-and-delete script. Neither
// is fenced nor all-or-nothing as dlm's critical section is.
package main

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"os"
	"slices"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/redis/go-redis/v9"
	clientv3 "go.etcd.io/etcd/client/v3"
	"go.etcd.io/etcd/client/v3/concurrency"
	"go.uber.org/zap"
)

// result has the keys of `dlm bench --output json`, so that
// internal/benchplot draws both.
type result struct {
	Workload    string  `json:"workload"`
	System      string  `json:"system"`
	Nodes       int     `json:"nodes"`
	Clients     int     `json:"clients"`
	Cycles      int     `json:"cycles"`
	Errors      int     `json:"errors"`
	CyclesPerS  float64 `json:"cycles_per_second"`
	P50Ms       float64 `json:"p50_ms"`
	P99Ms       float64 `json:"p99_ms"`
	DurationSec float64 `json:"duration_seconds"`
}

type cycler interface {
	cycle(ctx context.Context, i int, data []byte) error
	close()
}

func main() {
	system := flag.String("system", "", "etcd or redis")
	endpoints := flag.String("endpoints", "", "comma-separated endpoints (etcd: http://host:port; redis: host:port)")
	nodes := flag.Int("nodes", 1, "cluster size, for the report only")
	clientList := flag.String("clients", "1,8,64", "comma-separated client counts, run in turn")
	duration := flag.Duration("duration", 8*time.Second, "how long each run lasts")
	flag.Parse()
	var counts []int
	for _, f := range strings.Split(*clientList, ",") {
		n, err := strconv.Atoi(strings.TrimSpace(f))
		if err != nil || n < 1 {
			fail(fmt.Errorf("bad --clients entry %q", f))
		}
		counts = append(counts, n)
	}
	eps := strings.Split(*endpoints, ",")
	if *endpoints == "" {
		fail(errors.New("--endpoints is required"))
	}
	for _, n := range counts {
		r, err := run(*system, eps, n, *duration)
		if err != nil {
			fail(err)
		}
		r.Nodes = *nodes
		b, _ := json.Marshal(r)
		fmt.Println(string(b))
	}
}

func fail(err error) {
	fmt.Fprintln(os.Stderr, "compare:", err)
	os.Exit(2)
}

func run(system string, eps []string, clients int, d time.Duration) (result, error) {
	cs := make([]cycler, clients)
	for i := range cs {
		var err error
		switch system {
		case "etcd":
			cs[i], err = newEtcd(eps)
		case "redis":
			cs[i], err = newRedis(eps[0]), nil
		default:
			return result{}, fmt.Errorf("unknown --system %q (etcd or redis)", system)
		}
		if err != nil {
			return result{}, err
		}
	}
	defer func() {
		for _, c := range cs {
			c.close()
		}
	}()
	ctx, cancel := context.WithTimeout(context.Background(), d)
	defer cancel()
	lat := make([][]time.Duration, clients)
	errs := make([]int, clients)
	data := make([]byte, 32)
	for i := range data {
		data[i] = 'a' + byte(i%26)
	}
	start := time.Now()
	var wg sync.WaitGroup
	for i, c := range cs {
		wg.Go(func() {
			for ctx.Err() == nil {
				t := time.Now()
				if err := c.cycle(ctx, i, data); err != nil {
					if ctx.Err() == nil {
						errs[i]++
					}
					continue
				}
				lat[i] = append(lat[i], time.Since(t))
			}
		})
	}
	wg.Wait()
	el := time.Since(start)
	var all []time.Duration
	r := result{Workload: "cycle", System: system, Clients: clients, DurationSec: el.Seconds()}
	for i := range lat {
		all = append(all, lat[i]...)
		r.Errors += errs[i]
	}
	slices.Sort(all)
	r.Cycles = len(all)
	r.CyclesPerS = float64(len(all)) / el.Seconds()
	if len(all) > 0 {
		r.P50Ms = ms(all[len(all)/2])
		r.P99Ms = ms(all[min(len(all)-1, len(all)*99/100)])
	}
	return r, nil
}

func ms(d time.Duration) float64 { return float64(d.Microseconds()) / 1000 }

type etcdCycler struct {
	cli *clientv3.Client
	s   *concurrency.Session
	m   *concurrency.Mutex
}

func newEtcd(eps []string) (*etcdCycler, error) {
	cli, err := clientv3.New(clientv3.Config{Endpoints: eps, DialTimeout: 5 * time.Second, Logger: zap.NewNop()})
	if err != nil {
		return nil, err
	}
	s, err := concurrency.NewSession(cli, concurrency.WithTTL(10))
	if err != nil {
		cli.Close()
		return nil, err
	}
	return &etcdCycler{cli: cli, s: s, m: concurrency.NewMutex(s, "/dlm-bench/lock")}, nil
}

func (e *etcdCycler) cycle(ctx context.Context, i int, data []byte) error {
	if err := e.m.Lock(ctx); err != nil {
		return err
	}
	_, perr := e.cli.Put(ctx, fmt.Sprintf("/dlm-bench/file_%d", i%100), string(data))
	// Unlock even when the context ended, so the next run starts free.
	uctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	if err := e.m.Unlock(uctx); err != nil {
		return err
	}
	return perr
}

func (e *etcdCycler) close() {
	e.s.Close()
	e.cli.Close()
}

type redisCycler struct {
	c     *redis.Client
	token string
}

var unlock = redis.NewScript(`if redis.call("get", KEYS[1]) == ARGV[1] then return redis.call("del", KEYS[1]) else return 0 end`)

func newRedis(addr string) *redisCycler {
	var b [16]byte
	rand.Read(b[:])
	return &redisCycler{c: redis.NewClient(&redis.Options{Addr: addr}), token: hex.EncodeToString(b[:])}
}

func (r *redisCycler) cycle(ctx context.Context, i int, data []byte) error {
	for {
		ok, err := r.c.SetNX(ctx, "dlm-bench:lock", r.token, 10*time.Second).Result()
		if err != nil {
			return err
		}
		if ok {
			break
		}
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-time.After(time.Millisecond):
		}
	}
	aerr := r.c.Append(ctx, fmt.Sprintf("dlm-bench:file_%d", i%100), string(data)).Err()
	uctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	if err := unlock.Run(uctx, r.c, []string{"dlm-bench:lock"}, r.token).Err(); err != nil {
		return err
	}
	return aerr
}

func (r *redisCycler) close() { r.c.Close() }

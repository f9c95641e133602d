package groupsim_test

import (
	"context"
	"fmt"
	"runtime"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/dlm/dlm/internal/groupsim"
)

// workers is the number of clients, spread over the groups by the
// placement of their locks' names; the same names for every G, so the
// offered load is the same and only the number of groups changes.
const workers = 32

// workloads: "own" gives each client a lock of its own (32 names, no
// waiting: the group's Raft batches the clients' entries); "contended"
// puts 4 clients on each of 8 names (each lock a chain of hand-offs, one
// commit after another).
var workloads = []struct {
	name           string
	clientsPerLock int
}{{"own", 1}, {"contended", 4}}

// BenchmarkGroups runs lock cycles (acquire, release) of 32 clients on
// named locks hashed over G Raft groups in this process, for G = 1, 2, 4,
// 8, with groups of 1 and of 3 members, each client on a lock of its own
// and 4 clients per lock, and reports cycles/s, its ratio to G = 1 of the same run
// (vs_G1), the process's CPU per cycle (user + system, the groups and the
// clients together), and the largest group's share of the clients.
//
//	go test -run '^$' -bench Groups -benchtime 3s ./internal/groupsim
//	go test -run '^$' -bench 'Groups/own/replicas=1' ./internal/groupsim
func BenchmarkGroups(b *testing.B) {
	for _, wl := range workloads {
		for _, replicas := range []int{1, 3} {
			var base float64
			for _, g := range []int{1, 2, 4, 8} {
				b.Run(fmt.Sprintf("%s/replicas=%d/G=%d", wl.name, replicas, g), func(b *testing.B) {
					cps := runGroups(b, g, replicas, wl.clientsPerLock)
					if g == 1 {
						base = cps
					}
					if base > 0 {
						b.ReportMetric(cps/base, "vs_G1")
					}
				})
			}
		}
	}
}

func runGroups(b *testing.B, g, replicas, clientsPerLock int) float64 {
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Minute)
	defer cancel()
	gs, err := groupsim.Open(ctx, b.TempDir(), g, replicas)
	if err != nil {
		b.Fatal(err)
	}
	defer func() {
		if err := gs.Close(); err != nil {
			b.Error(err)
		}
	}()
	sessions := make([]*groupsim.Session, workers)
	per := make([]int, g)
	for i := range sessions {
		s, err := gs.OpenSession(ctx, fmt.Sprintf("lock-%d", i/clientsPerLock))
		if err != nil {
			b.Fatal(err)
		}
		sessions[i] = s
		per[s.Group]++
	}
	most := 0
	for _, k := range per {
		most = max(most, k)
	}

	// b.Loop hands each iteration to a free client; the rate is measured
	// from the first hand-out to the last cycle's end.
	work := make(chan struct{})
	var (
		wg     sync.WaitGroup
		done   atomic.Int64
		failed atomic.Pointer[error]
	)
	for _, s := range sessions {
		wg.Go(func() {
			for range work {
				if failed.Load() != nil {
					continue
				}
				if _, err := s.Cycle(ctx); err != nil {
					failed.CompareAndSwap(nil, &err)
					continue
				}
				done.Add(1)
			}
		})
	}
	runtime.GC()
	cpu0 := cpuTime()
	start := time.Now()
	for b.Loop() {
		work <- struct{}{}
	}
	close(work)
	wg.Wait()
	elapsed := time.Since(start)
	cpu := cpuTime() - cpu0
	if p := failed.Load(); p != nil {
		b.Fatal(*p)
	}
	n := done.Load()
	cps := float64(n) / elapsed.Seconds()
	b.ReportMetric(cps, "cycles/s")
	b.ReportMetric(float64(cpu.Microseconds())/1000/float64(n), "cpu_ms/cycle")
	b.ReportMetric(float64(most)/workers, "max_group_share")
	for _, s := range sessions {
		if err := s.Close(ctx); err != nil {
			b.Error(err)
		}
	}
	return cps
}

// cpuTime is the process's user and system CPU so far.
func cpuTime() time.Duration {
	var ru syscall.Rusage
	if err := syscall.Getrusage(syscall.RUSAGE_SELF, &ru); err != nil {
		return 0
	}
	return time.Duration(ru.Utime.Nano() + ru.Stime.Nano())
}

package e2e

import (
	"fmt"
	"math/rand/v2"
	"net"
	"os"
)

// ReserveAddrs returns n distinct loopback addresses whose ports were bound
// a moment ago, for a fixed cluster whose Raft addresses must be named
// (--peers) before any node runs, and whose nodes restart on them (a
// cluster that grows by joining needs none: its nodes bind port 0). They are
// taken below the kernel's ephemeral range when it is known: a node
// restarted on its ports must not find one taken by the local end of some
// outgoing connection, as happens to ports the kernel hands out. Every
// listener stays open until all are chosen, so none is given twice. A
// single node needs none of this: it listens on 127.0.0.1:0 and Node learns
// the port from its serving line.
func ReserveAddrs(n int) ([]string, error) {
	lo, hi := 0, 0 // 0: let the kernel choose
	if b, err := os.ReadFile("/proc/sys/net/ipv4/ip_local_port_range"); err == nil {
		var first, last int
		if _, err := fmt.Sscan(string(b), &first, &last); err == nil && first > 12000 {
			lo, hi = 10000, first
		}
	}
	var (
		lns   []net.Listener
		addrs []string
	)
	defer func() {
		for _, ln := range lns {
			ln.Close()
		}
	}()
	for tries := 0; len(addrs) < n; tries++ {
		port := 0
		if hi > 0 && tries < 1000 {
			port = lo + rand.IntN(hi-lo)
		}
		ln, err := net.Listen("tcp", fmt.Sprintf("127.0.0.1:%d", port))
		if err != nil {
			if port != 0 {
				continue // taken: try another
			}
			return nil, err
		}
		lns = append(lns, ln)
		addrs = append(addrs, ln.Addr().String())
	}
	return addrs, nil
}

// UnusedAddr returns a loopback address nothing listens on (a port that was
// free a moment ago), for a test that needs an address where nothing
// answers.
func UnusedAddr() (string, error) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return "", err
	}
	defer ln.Close()
	return ln.Addr().String(), nil
}

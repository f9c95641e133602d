package node

import (
	"cmp"
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"os"
	"path/filepath"
	"sync"
	"sync/atomic"
	"time"

	"github.com/hashicorp/go-hclog"
	"github.com/hashicorp/raft"
	"github.com/hashicorp/raft-wal/metadb"
	"github.com/hashicorp/raft-wal/types"

	raftlogv1 "github.com/dlm/dlm/gen/go/dlm/raftlog/v1"
	dlmv1 "github.com/dlm/dlm/gen/go/dlm/v1"
	"github.com/dlm/dlm/server/fsm"
	"github.com/dlm/dlm/server/leadership"
	"github.com/dlm/dlm/server/lockstate"
	"github.com/dlm/dlm/server/metrics"
	"github.com/dlm/dlm/server/staging"
)

// DefaultLogSegmentSize is the size of a preallocated Raft log segment:
// small enough for a small disk (raft-wal's own default is 64 MiB).
const DefaultLogSegmentSize = 8 << 20

// Config is one node's settings.
type Config struct {
	// ID is the node's Raft server id. It is stored in the data folder on
	// first start; empty means the stored one (or "node1" for a new folder).
	ID string
	// RaftAddr is the host:port of the Raft transport, both bound and
	// advertised. Empty runs a single node with no Raft port. Port 0 binds
	// a port the system chooses and advertises it (Node.RaftAddr): only
	// for a node's first start, as the Raft configuration keeps the
	// address and a restart must come back on it.
	RaftAddr string
	// Peers, for a new folder, boots a fixed cluster of these members (this
	// node among them).
	Peers []Peer
	// Join, for a new folder, boots nothing: the node waits to be added
	// to a running cluster (server/membership's Join asks its leader).
	Join bool
	// TrailingLogs is how many entries a snapshot leaves in the log, so a
	// follower that was briefly away catches up from the log.
	TrailingLogs uint64
	// DataDir holds raft/ (log and snapshots) and files/.
	DataDir string
	// ClientURL is the base URL clients use to reach this node, given to
	// clients that ask a follower.
	ClientURL string
	// VerifyURL checks that the server at url answers as the member id
	// (server/membership's VerifyURL asks it for its status). AddMember
	// calls it before a member's recorded client URL changes; nil refuses
	// every such change. The node itself makes no calls to other members.
	VerifyURL func(ctx context.Context, id, url string) error
	// DefaultLease, MinLease and MaxLease bound the lease a session gets.
	DefaultLease, MinLease, MaxLease time.Duration
	// MaxAppendBytes bounds one append; MaxSectionBytes one critical section.
	MaxAppendBytes, MaxSectionBytes int
	// DefaultPollWait is how long an acquire waits in the queue when the
	// request does not say.
	DefaultPollWait time.Duration
	// MaxReadBytes bounds one ReadFile answer.
	MaxReadBytes int64
	// SnapshotThreshold is how many log entries trigger a snapshot.
	SnapshotThreshold uint64
	// SnapshotInterval is how often Raft checks the threshold; tests
	// shorten it to take snapshots often.
	SnapshotInterval time.Duration
	// SnapshotRetain is how many snapshots the data folder keeps.
	SnapshotRetain int

	// HeartbeatTimeout, ElectionTimeout, LeaderLeaseTimeout and
	// CommitTimeout are hashicorp/raft's timings (see raft.Config). They
	// bound how long a failover takes, which must stay well within a
	// session's lease.
	HeartbeatTimeout, ElectionTimeout, LeaderLeaseTimeout, CommitTimeout time.Duration
	// Logger receives the node's logs (nil: slog.Default()).
	Logger *slog.Logger
	// LogSegmentSize is the size of one Raft log segment file; raft-wal
	// preallocates each, so it is the space a start needs.
	LogSegmentSize int
	// files, when set, opens the FSM's files (tests make writes fail).
	files fsm.FS
	// sectionMemory, when set, replaces DefaultSectionMemory (tests move
	// small sections to the log).
	sectionMemory int
	// transport, when set, carries Raft instead of RaftAddr's TCP (tests
	// join in-memory transports into a cluster); Peers name its addresses.
	transport raft.Transport
	// RaftLog receives hashicorp/raft's own warnings (it logs through
	// hclog); nil means standard error.
	RaftLog io.Writer

	// MinFreeSpace is the free space of the data volume, in bytes, below
	// which the leader refuses new sessions, acquires and appends with
	// DISK_FULL (negative: no check). DefaultMinFreeSpace gives the value
	// that suits MaxSectionBytes and LogSegmentSize.
	MinFreeSpace int64
	// MaxFileBytes bounds one file's committed size.
	MaxFileBytes int64
	// MaxSessions bounds the open sessions (negative: no limit).
	MaxSessions int
	// LockDelay is the lock-delay of a grant whose acquire names none:
	// after the holder's lease runs out, the lock stays ungranted this long
	// (0: none; at most lockstate.MaxLockDelayMs).
	LockDelay time.Duration
	// MaxLocks bounds the live named locks (the default lock is always
	// live and not counted; negative: no limit).
	MaxLocks int
	// FreeSpace reports the free bytes of the volume holding a folder; nil
	// asks the system (statfs). Tests inject a fake.
	FreeSpace func(dir string) (int64, error)
	// LogFS, when set, is the file layer under the Raft log; tests inject
	// faults with it.
	LogFS types.VFS

	// RaftTLS, when set, carries Raft over TLS: the node presents its
	// Certificates to peers and accepts and dials only peers whose
	// certificate RootCAs signed (see tlsstream.go).
	RaftTLS *tls.Config
}

// Node is a running server.
type Node struct {
	cfg   Config
	log   *slog.Logger
	raft  *raft.Raft
	fsm   *fsm.FSM
	wal   *logStore
	trans raft.Transport
	meta  *metadb.BoltMetaDB
	// lead is the leader's memory: its term (current only while this
	// node leads and has applied every earlier entry), the leases and the
	// waiting acquires.
	lead *leadership.Core
	// sections is the leader's memory of the critical sections in
	// progress (sections.go).
	sections *staging.Store
	space    *freeSpace
	metrics  *metrics.Metrics
	waits    applyWaits

	// applied, when not nil, is closed by the next applied lock-state
	// change; long polls wait on it.
	appliedMu sync.Mutex
	applied   chan struct{}

	// saving is set while a client's snapshot is taken (backup.go).
	saving atomic.Bool

	stop chan struct{}
	done sync.WaitGroup
	// broken is closed when the FSM finds a fatal storage fault (faults.go).
	broken     chan struct{}
	brokenOnce sync.Once
	// writeFault is signalled while a write fails and is retried.
	writeFault chan struct{}
	// faultMu guards faultSeen, closed and replaced at every fault report
	// (faults.go).
	faultMu   sync.Mutex
	faultSeen chan struct{}
}

// Open starts a node with its data in cfg.DataDir. A new folder becomes a
// one-member cluster, unless cfg.Peers boots a fixed cluster or cfg.Join
// says it waits to be added to one.
func Open(cfg Config) (*Node, error) {
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	if cfg.Logger == nil {
		cfg.Logger = slog.Default()
	}
	if cfg.FreeSpace == nil {
		cfg.FreeSpace = statfsFree
	}
	injectDiskFault(&cfg)
	if err := os.MkdirAll(cfg.DataDir, dirMode); err != nil {
		return nil, fmt.Errorf("node: %w", err)
	}
	loose, err := tightenModes(cfg.DataDir)
	if err != nil {
		return nil, fmt.Errorf("node: data folder modes: %w", err)
	}
	if len(loose) > 0 {
		cfg.Logger.Warn("the data folder was readable by other users; it holds the session secrets, so dlm made it private (folders 0700, files 0600)", "dir", cfg.DataDir, "loose", loose)
	}
	if err := os.MkdirAll(filepath.Join(cfg.DataDir, "raft", "wal"), dirMode); err != nil {
		return nil, fmt.Errorf("node: %w", err)
	}
	id, err := resolveID(cfg.DataDir, cfg.ID)
	if err != nil {
		return nil, err
	}
	cfg.ID = id
	n := &Node{cfg: cfg, log: cfg.Logger.With("node", id), stop: make(chan struct{}), broken: make(chan struct{}), writeFault: make(chan struct{}, 1), faultSeen: make(chan struct{})}
	var opts []fsm.Option
	if cfg.files != nil {
		opts = append(opts, fsm.WithFS(cfg.files))
	}
	f, err := fsm.Open(filepath.Join(cfg.DataDir, "files"), lockstate.DefaultLimits(), opts...)
	if err != nil {
		return nil, err
	}
	n.fsm = f
	n.lead = leadership.New(leadership.SystemClock())
	n.sections = staging.New(uint64(cmp.Or(cfg.sectionMemory, DefaultSectionMemory)))
	n.space = newFreeSpace(cfg.DataDir, cfg.FreeSpace)
	n.metrics = n.newMetrics()
	f.SetObserver(n.observe)
	f.SetFaultHandler(n.onFault)
	if err := n.startRaft(); err != nil {
		// The start's failure is the news; a store that also fails to
		// close is logged rather than hiding it.
		if cerr := n.closeStores(); cerr != nil {
			n.log.Warn("closing after a failed start", "err", cerr)
		}
		return nil, err
	}
	// The Raft libraries just created their files with their own modes.
	if _, err := tightenModes(cfg.DataDir); err != nil {
		n.log.Warn("could not make the Raft log private", "err", err)
	}
	n.done.Add(4)
	go n.leaveOnFault()
	go n.watchLeadership()
	go n.expireLeases()
	go n.endLockDelays()
	return n, nil
}

func (n *Node) startRaft() error {
	cfg := n.cfg
	raftDir := filepath.Join(cfg.DataDir, "raft")
	out := cfg.RaftLog
	if out == nil {
		out = os.Stderr
	}
	hlog := hclog.New(&hclog.LoggerOptions{Name: "raft", Level: hclog.Warn, Output: out})
	// The node owns the meta store and closes it itself: the log may be
	// opened again in place (logstore.go) and must keep the same one.
	n.meta = &metadb.BoltMetaDB{}
	walDir := filepath.Join(raftDir, "wal")
	w, err := n.openLog(walDir, hlog, n.meta)
	if err != nil {
		return openLogError(walDir, cfg.LogSegmentSize, err)
	}
	n.wal = w
	snaps, err := raft.NewFileSnapshotStoreWithLogger(raftDir, cfg.SnapshotRetain, hlog)
	if err != nil {
		return fmt.Errorf("node: open snapshots: %w", err)
	}
	rc := cfg.raftConfig()
	rc.Logger = hlog

	var (
		addr  raft.ServerAddress
		trans raft.Transport
	)
	switch {
	case cfg.transport != nil:
		addr, trans = cfg.transport.LocalAddr(), cfg.transport
	case cfg.RaftAddr == "":
		// A single node needs no Raft port.
		addr, trans = raft.NewInmemTransport(raft.ServerAddress(cfg.ID))
	default:
		adv, err := net.ResolveTCPAddr("tcp", cfg.RaftAddr)
		if err != nil {
			return fmt.Errorf("node: raft address: %w", err)
		}
		if adv.Port == 0 {
			// Checked before the transport binds anything.
			if err := learnablePort(adv, w, snaps); err != nil {
				return err
			}
			adv = nil // advertise the port the listener got
		}
		var tcp *raft.NetworkTransport
		if cfg.RaftTLS != nil {
			var advertise net.Addr // a nil *net.TCPAddr in it would not be nil
			if adv != nil {
				advertise = adv
			}
			stream, serr := newTLSStream(cfg.RaftAddr, advertise, cfg.RaftTLS)
			if serr != nil {
				return fmt.Errorf("node: raft transport: %w", serr)
			}
			tcp = raft.NewNetworkTransportWithConfig(&raft.NetworkTransportConfig{
				Stream: stream, MaxPool: 3, Timeout: 5 * time.Second, Logger: hlog,
			})
		} else {
			var advertise net.Addr
			if adv != nil {
				advertise = adv
			}
			if tcp, err = raft.NewTCPTransportWithLogger(cfg.RaftAddr, advertise, 3, 5*time.Second, hlog); err != nil {
				return fmt.Errorf("node: raft transport: %w", err)
			}
		}
		addr, trans = tcp.LocalAddr(), tcp
		// From here on the node names itself by the bound address (in its
		// bootstrap configuration, when joining, when announcing).
		n.cfg.RaftAddr = string(addr)
	}
	n.trans = trans

	exists, err := raft.HasExistingState(w, w, snaps)
	if err != nil {
		return fmt.Errorf("node: %w", err)
	}
	if !exists && !cfg.Join {
		boot := raft.Configuration{Servers: []raft.Server{{ID: rc.LocalID, Address: addr}}}
		if len(cfg.Peers) > 0 {
			boot.Servers = nil
			for _, p := range cfg.Peers {
				boot.Servers = append(boot.Servers, raft.Server{ID: raft.ServerID(p.ID), Address: raft.ServerAddress(p.RaftAddr)})
			}
		}
		if err := raft.BootstrapCluster(rc, w, w, snaps, trans, boot); err != nil {
			return fmt.Errorf("node: bootstrap: %w", err)
		}
	}
	r, err := raft.NewRaft(rc, n.fsm, w, w, snaps, trans)
	if err != nil {
		return startError(err, n.fsm.Fault(), snaps, raftDir)
	}
	n.raft = r
	return nil
}

// learnablePort refuses a Raft address with port 0 (to be chosen at
// bind) where it cannot work: a host that names no one interface cannot
// be advertised, and a node with Raft state is in a configuration that
// keeps its address, so it must come back on the port it had.
func learnablePort(adv *net.TCPAddr, w *logStore, snaps raft.SnapshotStore) error {
	if adv.IP == nil || adv.IP.IsUnspecified() {
		return fmt.Errorf("node: raft address %s: port 0 needs a host to advertise, not %q", adv, adv.IP)
	}
	exists, err := raft.HasExistingState(w, w, snaps)
	if err != nil {
		return fmt.Errorf("node: %w", err)
	}
	if exists {
		return errors.New("node: raft address with port 0, but this node has Raft state: its peers know it by the address it had; give that address")
	}
	return nil
}

// RaftAddr is the address the node's Raft transport advertises: the
// configured one, with a port 0 replaced by the bound port ("" for a
// single node without a Raft port).
func (n *Node) RaftAddr() string { return n.cfg.RaftAddr }

// closeStores closes what Open opened and reports what failed to close: a
// store that cannot flush on close may have lost the last writes.
func (n *Node) closeStores() error {
	var errs []error
	if err := n.fsm.Close(); err != nil {
		errs = append(errs, fmt.Errorf("node: close files: %w", err))
	}
	if n.wal != nil {
		if err := n.wal.Close(); err != nil {
			errs = append(errs, fmt.Errorf("node: close Raft log: %w", err))
		}
	}
	if n.meta != nil {
		if err := n.meta.Close(); err != nil {
			errs = append(errs, fmt.Errorf("node: close Raft metadata: %w", err))
		}
	}
	if tcp, ok := n.trans.(*raft.NetworkTransport); ok {
		// Close does not close the pooled connections to the peers, and
		// each keeps a reader goroutine on the peer alive for good.
		tcp.CloseStreams()
	}
	if c, ok := n.trans.(io.Closer); ok {
		if err := c.Close(); err != nil {
			errs = append(errs, fmt.Errorf("node: close Raft transport: %w", err))
		}
	}
	return errors.Join(errs...)
}

// Shutdown stops the node: waiting calls return Unavailable, Raft shuts down,
// the stores close.
func (n *Node) Shutdown() error {
	close(n.stop)
	n.fsm.Interrupt()
	err := n.raft.Shutdown().Error()
	n.done.Wait()
	n.endTerm()
	return errors.Join(err, n.closeStores())
}

// watchLeadership starts a leader term on winning an election and ends it on
// losing one.
func (n *Node) watchLeadership() {
	defer n.done.Done()
	for {
		select {
		case <-n.stop:
			return
		case <-n.raft.LeaderCh():
		}
		// Signals may be coalesced, so every signal ends the current term and
		// the raft state says whether a new one begins.
		n.endTerm()
		if n.raft.State() != raft.Leader {
			continue
		}
		// The barrier applies every entry of earlier terms, so the state is
		// complete before this node answers anything.
		if err := n.raft.Barrier(0).Error(); err != nil {
			n.log.Warn("leader barrier failed", "err", err)
			continue
		}
		n.beginTerm()
	}
}

func (n *Node) beginTerm() {
	var (
		sessions []lockstate.SessionInfo
		delays   []lockstate.Delay
		begin    uint64
	)
	n.fsm.View(func(m *lockstate.Machine) {
		sessions, delays = m.Sessions(), m.Delays()
		// A token is its granting entry's index, or, for the extra holders
		// of one shared grant, the next numbers above the highest token so
		// far, which may run past the applied index.
		begin = max(m.AppliedIndex(), m.Lock().LastToken)
	})
	// Every entry up to the barrier is applied and none of this term's is
	// yet: a grant whose token is past begin was made in this term, so
	// every append to it reached this node. The memory starts before the
	// term does, so no call of the term finds an earlier epoch.
	n.sections.Begin(begin)
	n.lead.Begin(sessions, delays)
	n.log.Info("leading", "sessions", len(sessions))
	if n.cfg.ClientURL != "" && n.fsm.NodeURL(n.cfg.ID) != n.cfg.ClientURL {
		// Followers point clients here only once this URL is replicated.
		go n.recordAddress(n.cfg.ID, n.cfg.ClientURL)
	}
}

func (n *Node) endTerm() {
	ended := n.lead.End()
	n.sections.End()
	if ended {
		n.log.Info("no longer leading")
	}
}

// AwaitLeader waits until this node leads and has applied every earlier
// entry, or ctx ends.
func (n *Node) AwaitLeader(ctx context.Context) error {
	_, err := n.lead.AwaitTerm(ctx)
	return err
}

// leading returns the current term, or a NOT_LEADER error naming the leader.
func (n *Node) leading() (*leadership.Term, error) {
	t, _ := n.lead.Current()
	if err := n.storageFault(); err != nil {
		return nil, err
	}
	if t != nil {
		return t, nil
	}
	select {
	case <-n.stop:
		return nil, fail(dlmv1.ErrorReason_ERROR_REASON_UNAVAILABLE, "the node is shutting down")
	default:
	}
	if err := n.logUnavailable(); err != nil {
		return nil, err
	}
	if n.raft.State() == raft.Leader {
		return nil, fail(dlmv1.ErrorReason_ERROR_REASON_UNAVAILABLE, "the leader is catching up: retry")
	}
	if url := n.leaderURL(); url != "" {
		return nil, &Error{Reason: dlmv1.ErrorReason_ERROR_REASON_NOT_LEADER, LeaderURL: url, Msg: "this node is not the leader; the leader is " + url}
	}
	return nil, &Error{Reason: dlmv1.ErrorReason_ERROR_REASON_NOT_LEADER, Msg: "no leader known: an election is under way, or the cluster has no majority"}
}

// leaderURL is the leader's client URL when known.
func (n *Node) leaderURL() string {
	_, id := n.raft.LeaderWithID()
	switch id {
	case "":
		return ""
	case raft.ServerID(n.cfg.ID):
		return n.cfg.ClientURL
	default:
		return n.fsm.NodeURL(string(id))
	}
}

// observe runs on the FSM goroutine for every applied entry.
func (n *Node) observe(a fsm.Applied) {
	n.count(a)
	n.waits.applied(a.Data, a.Result)
	n.appliedMu.Lock()
	if n.applied != nil {
		close(n.applied)
		n.applied = nil
	}
	n.appliedMu.Unlock()
	n.lead.Applied(a.Result)
	if a.Result.EndedToken != 0 {
		n.sections.Drop(a.Result.EndedToken)
	}
}

// watchApplied returns a channel closed by the next applied lock-state
// change. It costs nothing while no one watches.
func (n *Node) watchApplied() <-chan struct{} {
	n.appliedMu.Lock()
	defer n.appliedMu.Unlock()
	if n.applied == nil {
		n.applied = make(chan struct{})
	}
	return n.applied
}

// unsureFault answers a proposal whose entry this node cannot apply for
// now: another node may answer the retry.
func (n *Node) unsureFault() error {
	return &Error{Reason: dlmv1.ErrorReason_ERROR_REASON_STORAGE_FAULT,
		Msg: fmt.Sprintf("node %s: the change may have committed, but this node has a storage fault (%s): retry with the same seq at another node", n.cfg.ID, n.fsm.Fault())}
}

func notInTime() error {
	return fail(dlmv1.ErrorReason_ERROR_REASON_UNAVAILABLE, "the change was not committed in time (it may still be): retry with the same seq")
}

// propose commits a command and returns its result. The wait is bounded by
// ctx: Raft cannot cancel an entry once proposed, so on timeout the outcome
// is unknown, and the client's retry with the same seq resolves it.
func (n *Node) propose(ctx context.Context, cmd *raftlogv1.Command) (lockstate.Result, error) {
	fault := n.faultWatch()
	term, err := n.leading()
	if err != nil {
		return lockstate.Result{}, err
	}
	cmd.NowUnixMs = time.Now().UnixMilli()
	data, err := fsm.Encode(cmd)
	if err != nil {
		return lockstate.Result{}, err
	}
	timeout := 10 * time.Second
	if dl, ok := ctx.Deadline(); ok {
		timeout = time.Until(dl)
	}
	start := time.Now()
	if cmd.GetNodeAddress() != nil {
		// Not a lock-state change: the FSM tells no observer of it.
		return n.awaitFuture(ctx, n.raft.Apply(data, timeout), fault, start)
	}
	applied := n.waits.add(data)
	defer n.waits.remove(data)
	fut := n.raft.Apply(data, timeout)
	select {
	case res := <-applied:
		// Applied here: the future holds this same result.
		n.metrics.Since(metrics.RaftCommit, start)
		return res, nil
	case <-fault:
		return lockstate.Result{}, n.unsureFault()
	case <-ctx.Done():
		return lockstate.Result{}, notInTime()
	case <-term.Lost():
		// Raft answers the future without applying it here (leadership
		// lost, or never had it): wait for its answer.
	case <-n.stop:
	}
	return n.awaitFuture(ctx, fut, fault, start)
}

// awaitFuture waits for a proposal's future, its storage-fault channel or
// ctx, whichever ends first, and turns Raft's answer into propose's.
func (n *Node) awaitFuture(ctx context.Context, fut raft.ApplyFuture, fault <-chan struct{}, start time.Time) (lockstate.Result, error) {
	var err error
	done := make(chan error, 1)
	go func() { done <- fut.Error() }()
	select {
	case err = <-done:
		n.metrics.Since(metrics.RaftCommit, start)
	case <-fault:
		return lockstate.Result{}, n.unsureFault()
	case <-ctx.Done():
		return lockstate.Result{}, notInTime()
	}
	switch {
	case err == nil:
		switch res := fut.Response().(type) {
		case lockstate.Result:
			return res, nil
		case error:
			// The entry committed but this node could not apply it.
			n.log.Debug("apply failed", "err", res)
			return lockstate.Result{}, n.faultError()
		default:
			// Only a lock-state command is proposed here; anything else
			// means the FSM and the node disagree about the log.
			return lockstate.Result{}, fail(dlmv1.ErrorReason_ERROR_REASON_UNAVAILABLE, "the change committed but applying it returned %T, not a result", res)
		}
	case errors.Is(err, raft.ErrNotLeader) && n.logError() != nil:
		// Refused before it was stored: the log's failure is the news.
		return lockstate.Result{}, n.logError()
	case errors.Is(err, raft.ErrNotLeader), errors.Is(err, raft.ErrLeadershipLost), errors.Is(err, raft.ErrLeadershipTransferInProgress):
		return lockstate.Result{}, &Error{Reason: dlmv1.ErrorReason_ERROR_REASON_NOT_LEADER, LeaderURL: n.leaderURL(), Msg: "leadership lost (the change may have committed): retry with the same seq" + n.logCause()}
	case errors.Is(err, raft.ErrRaftShutdown):
		return lockstate.Result{}, fail(dlmv1.ErrorReason_ERROR_REASON_UNAVAILABLE, "the node is shutting down")
	case n.logError() != nil:
		return lockstate.Result{}, n.logError()
	default:
		return lockstate.Result{}, fail(dlmv1.ErrorReason_ERROR_REASON_UNAVAILABLE, "not committed: %v", err)
	}
}

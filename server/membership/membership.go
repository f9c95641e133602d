package membership

import (
	"context"
	"crypto/tls"
	"fmt"
	"log/slog"
	"math/rand/v2"
	"net/http"
	"time"

	"connectrpc.com/connect"

	dlmv1 "github.com/dlm/dlm/gen/go/dlm/v1"
	"github.com/dlm/dlm/gen/go/dlm/v1/dlmv1connect"
	"github.com/dlm/dlm/server/auth"
	"github.com/dlm/dlm/server/node"
)

// Config is how a node calls the other members.
type Config struct {
	// AdminToken is the cluster's admin token, sent with every call:
	// adding a member is an administrative call. Every member of a
	// cluster has the same one.
	AdminToken string
	// TLS is the config of calls to https:// client URLs; nil trusts the
	// system's CAs.
	TLS *tls.Config
	// Logger receives what goes wrong (nil: slog.Default()).
	Logger *slog.Logger
}

// Host is the node being made a member: what it is and where it stands.
// *node.Node is one.
type Host interface {
	Self() node.Self
	AppliedIndex() uint64
}

func (c Config) log() *slog.Logger {
	if c.Logger == nil {
		return slog.Default()
	}
	return c.Logger
}

// httpClient is the HTTP client of calls to other members.
func (c Config) httpClient(timeout time.Duration) *http.Client {
	hc := &http.Client{Timeout: timeout}
	if c.TLS != nil {
		hc.Transport = &http.Transport{TLSClientConfig: c.TLS.Clone(), ForceAttemptHTTP2: true}
	}
	return hc
}

func (c Config) cluster(hc *http.Client, url string) dlmv1connect.ClusterServiceClient {
	return dlmv1connect.NewClusterServiceClient(hc, url, connect.WithInterceptors(auth.Bearer(c.AdminToken)))
}

// VerifyURL is node.Config.VerifyURL: it checks that the server at url is
// the member id by asking it for its status, with the admin token (which
// any role's status allows) over the cluster's TLS.
func VerifyURL(c Config) func(ctx context.Context, id, url string) error {
	hc := c.httpClient(3 * time.Second)
	return func(ctx context.Context, id, url string) error {
		ctx, cancel := context.WithTimeout(ctx, 3*time.Second)
		defer cancel()
		lc := dlmv1connect.NewLockServiceClient(hc, url, connect.WithInterceptors(auth.Bearer(c.AdminToken)))
		res, err := lc.Status(ctx, connect.NewRequest(&dlmv1.StatusRequest{}))
		if err != nil {
			return err
		}
		if got := res.Msg.GetNode().GetId(); got != id {
			return fmt.Errorf("it is node %q", got)
		}
		return nil
	}
}

// Join adds h to the cluster that urls (client URLs of its members) belong
// to: first as a nonvoter, so that its catch-up never weakens the quorum,
// then as a voter once it has applied what was committed when it was added.
// Both steps are idempotent, so a node that restarts mid-way simply joins
// again. It retries until it has joined (nil) or ctx ends (ctx's error).
func Join(ctx context.Context, c Config, h Host, urls []string) error {
	hc := c.httpClient(10 * time.Second)
	backoff := 100 * time.Millisecond
	for {
		err := joinOnce(ctx, c, hc, h, urls)
		if err == nil {
			c.log().Info("joined the cluster as a voter")
			return nil
		}
		if ctx.Err() != nil {
			return ctx.Err()
		}
		c.log().Warn("joining the cluster", "via", urls, "err", err)
		if err := sleep(ctx, backoff+rand.N(backoff)); err != nil {
			return err
		}
		backoff = min(2*backoff, 2*time.Second)
	}
}

func joinOnce(ctx context.Context, c Config, hc *http.Client, h Host, urls []string) error {
	ctx, cancel := context.WithTimeout(ctx, 30*time.Second)
	defer cancel()
	self := h.Self()
	add := func(voter bool) (uint64, error) {
		return AtLeader(ctx, urls, func(ctx context.Context, url string) (uint64, error) {
			res, err := c.cluster(hc, url).AddMember(ctx, connect.NewRequest(&dlmv1.AddMemberRequest{
				Id: self.ID, RaftAddress: self.RaftAddr, ClientUrl: self.ClientURL, Voter: voter,
			}))
			if err != nil {
				return 0, err
			}
			return res.Msg.GetCommitIndex(), nil
		})
	}
	commit, err := add(false)
	if err != nil {
		return err
	}
	tick := time.NewTicker(50 * time.Millisecond)
	defer tick.Stop()
	for h.AppliedIndex() < commit {
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-tick.C:
		}
	}
	_, err = add(true)
	return err
}

// Announce records h's client URL through the leader, for members that did
// not join through one (a fixed --peers cluster): then every node can list
// every member's URL. It repeats the member's id, Raft address and suffrage
// exactly as the configuration has them, so that it only ever records the
// URL: not its own --raft address (which may differ from the one its peers
// use, behind a proxy or NAT), not a demotion, and not a re-adding of a node
// that was removed (while h is no member, it asks nothing). It returns once
// the URL is recorded (nil) or when ctx ends (ctx's error).
func Announce(ctx context.Context, c Config, h Host) error {
	hc := c.httpClient(5 * time.Second)
	backoff := 200 * time.Millisecond
	for {
		self := h.Self()
		if self.RecordedURL == self.ClientURL {
			return nil
		}
		if target := self.LeaderURL; self.Member && target != "" && target != self.ClientURL {
			actx, cancel := context.WithTimeout(ctx, 5*time.Second)
			_, err := AtLeader(actx, []string{target}, func(ctx context.Context, url string) (*dlmv1.AddMemberResponse, error) {
				res, err := c.cluster(hc, url).AddMember(ctx, connect.NewRequest(&dlmv1.AddMemberRequest{
					Id: self.ID, RaftAddress: self.MemberAddr, ClientUrl: self.ClientURL, Voter: self.Voter,
				}))
				if err != nil {
					return nil, err
				}
				return res.Msg, nil
			})
			cancel()
			if err != nil && ctx.Err() == nil {
				level := slog.LevelDebug
				if code := connect.CodeOf(err); code == connect.CodeUnauthenticated || code == connect.CodePermissionDenied || code == connect.CodeAlreadyExists {
					// Retrying will not help: the operator must act.
					level = slog.LevelWarn
				}
				c.log().Log(ctx, level, "announcing the client URL", "via", target, "err", err)
			}
		}
		if err := sleep(ctx, backoff+rand.N(backoff)); err != nil {
			return err
		}
		backoff = min(2*backoff, 5*time.Second)
	}
}

// Run makes h a member as its configuration asks: Join through urls when
// there are any, else Announce when h is a cluster member with a client
// URL. It returns when that is done or ctx ends.
func Run(ctx context.Context, c Config, h Host, urls []string) error {
	self := h.Self()
	switch {
	case len(urls) > 0:
		return Join(ctx, c, h, urls)
	case self.RaftAddr != "" && self.ClientURL != "":
		return Announce(ctx, c, h)
	}
	return nil
}

func sleep(ctx context.Context, d time.Duration) error {
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-ctx.Done():
		return ctx.Err()
	case <-t.C:
		return nil
	}
}

package node

import (
	"errors"
	"os"
	"reflect"
	"strings"
	"testing"
	"time"
)

// testConfig is DefaultConfig with the fields set in c put over it (as
// servertest.Config, which this package's own tests cannot import).
func testConfig(c Config) Config {
	out := DefaultConfig()
	dst := reflect.ValueOf(&out).Elem()
	src := reflect.ValueOf(c)
	for i := range src.NumField() {
		if f := dst.Field(i); f.CanSet() && !src.Field(i).IsZero() {
			f.Set(src.Field(i))
		}
	}
	out.files = c.files
	return out
}

func TestDefaultConfigIsValid(t *testing.T) {
	c := DefaultConfig()
	if err := c.Validate(); err == nil || !strings.Contains(err.Error(), "DataDir") {
		t.Fatalf("DefaultConfig without a data folder: %v, want a DataDir error", err)
	}
	c.DataDir = t.TempDir()
	if err := c.Validate(); err != nil {
		t.Fatalf("DefaultConfig with a data folder: %v", err)
	}
	// The one place the numbers live: the Raft configuration is built
	// from them (a default moved back into startRaft fails here).
	rc := c.raftConfig()
	if rc.HeartbeatTimeout != c.HeartbeatTimeout || rc.ElectionTimeout != c.ElectionTimeout ||
		rc.LeaderLeaseTimeout != c.LeaderLeaseTimeout || rc.CommitTimeout != c.CommitTimeout ||
		rc.SnapshotInterval != c.SnapshotInterval || rc.SnapshotThreshold != c.SnapshotThreshold ||
		rc.TrailingLogs != c.TrailingLogs {
		t.Fatalf("raftConfig = %+v does not carry the Config's timings %+v", rc, c)
	}
}

// TestValidateRefusesEachBadField breaks one field at a time and wants
// an error naming it; Open must refuse the same config before touching
// the data folder.
func TestValidateRefusesEachBadField(t *testing.T) {
	cases := []struct {
		field string
		edit  func(*Config)
		want  string // in the message besides the field
	}{
		{"DataDir", func(c *Config) { c.DataDir = "" }, "data folder"},
		{"RaftAddr", func(c *Config) { c.Join = true }, "Raft address"},
		{"RaftAddr", func(c *Config) { c.Peers = []Peer{{ID: "a", RaftAddr: "127.0.0.1:1"}} }, "Raft address"},
		{"RaftAddr", func(c *Config) {
			c.RaftAddr = "127.0.0.1:0"
			c.Peers = []Peer{{ID: "a", RaftAddr: "127.0.0.1:0"}}
		}, "port 0"},
		{"MinLease", func(c *Config) { c.MinLease = 0 }, "at least 1ms"},
		{"DefaultLease", func(c *Config) { c.DefaultLease = c.MinLease - 1 }, "at least MinLease"},
		{"MaxLease", func(c *Config) { c.MaxLease = c.DefaultLease - 1 }, "at least DefaultLease"},
		{"DefaultPollWait", func(c *Config) { c.DefaultPollWait = 0 }, "at least"},
		{"MaxAppendBytes", func(c *Config) { c.MaxAppendBytes = 0 }, "positive"},
		{"MaxSectionBytes", func(c *Config) { c.MaxSectionBytes = -1 }, "positive"},
		{"MaxReadBytes", func(c *Config) { c.MaxReadBytes = 0 }, "positive"},
		{"MaxFileBytes", func(c *Config) { c.MaxFileBytes = 0 }, "positive"},
		{"SnapshotThreshold", func(c *Config) { c.SnapshotThreshold = 0 }, "positive"},
		{"SnapshotRetain", func(c *Config) { c.SnapshotRetain = 0 }, "positive"},
		{"SnapshotInterval", func(c *Config) { c.SnapshotInterval = time.Millisecond }, "at least 5ms"},
		{"HeartbeatTimeout", func(c *Config) { c.HeartbeatTimeout = 0 }, "at least 5ms"},
		{"ElectionTimeout", func(c *Config) { c.ElectionTimeout = 0 }, "at least 5ms"},
		{"ElectionTimeout", func(c *Config) { c.ElectionTimeout = c.HeartbeatTimeout / 2 }, "at least HeartbeatTimeout"},
		{"LeaderLeaseTimeout", func(c *Config) { c.LeaderLeaseTimeout = 0 }, "at least 5ms"},
		{"LeaderLeaseTimeout", func(c *Config) { c.LeaderLeaseTimeout = c.HeartbeatTimeout * 2 }, "at most HeartbeatTimeout"},
		{"CommitTimeout", func(c *Config) { c.CommitTimeout = 0 }, "at least 1ms"},
		{"LogSegmentSize", func(c *Config) { c.LogSegmentSize = 0 }, "64 KiB"},
		{"MaxLocks", func(c *Config) { c.MaxLocks = 0 }, "negative value for none"},
		{"LockDelay", func(c *Config) { c.LockDelay = -time.Millisecond }, "from 0 to 1m0s"},
		{"LockDelay", func(c *Config) { c.LockDelay = time.Minute + time.Millisecond }, "from 0 to 1m0s"},
		{"LockDelay", func(c *Config) { c.LockDelay = 1500 * time.Microsecond }, "whole number of milliseconds"},
		{"LogSegmentSize", func(c *Config) { c.LogSegmentSize = 2 << 30 }, "1 GiB"},
		{"MinFreeSpace", func(c *Config) { c.MinFreeSpace = 0 }, "negative value"},
		{"MaxSessions", func(c *Config) { c.MaxSessions = 0 }, "negative value"},
	}
	for _, tc := range cases {
		t.Run(tc.field, func(t *testing.T) {
			dir := t.TempDir() + "/data"
			c := DefaultConfig()
			c.DataDir = dir
			tc.edit(&c)
			err := c.Validate()
			var ce *ConfigError
			if !errors.As(err, &ce) || ce.Field != tc.field {
				t.Fatalf("Validate = %v, want a ConfigError on %s", err, tc.field)
			}
			if msg := err.Error(); !strings.Contains(msg, tc.field) || !strings.Contains(msg, tc.want) {
				t.Fatalf("Validate = %q, want it to name %s and say %q", msg, tc.field, tc.want)
			}
			if n, err := Open(c); err == nil {
				n.Shutdown()
				t.Fatalf("Open took a config that Validate refuses (%s)", tc.field)
			}
			if _, err := os.Lstat(dir); err == nil && tc.field != "DataDir" {
				t.Fatalf("Open refused the config but created %s", dir)
			}
		})
	}
}

// TestConfigErrorExplain renames fields for a caller with its own names
// (the CLI's flags).
func TestConfigErrorExplain(t *testing.T) {
	c := DefaultConfig()
	c.DataDir = t.TempDir()
	c.MaxLease = time.Second
	var ce *ConfigError
	if !errors.As(c.Validate(), &ce) {
		t.Fatal("a MaxLease below DefaultLease was accepted")
	}
	flags := map[string]string{"MaxLease": "--max-lease", "DefaultLease": "--lease"}
	got := ce.Explain(func(f string) string { return flags[f] })
	if want := "--max-lease is 1s: it must be at least --lease (10s)"; got != want {
		t.Fatalf("Explain = %q, want %q", got, want)
	}
}

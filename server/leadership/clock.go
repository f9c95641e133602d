package leadership

import "time"

// Clock is where the leader's memory reads the time and sets its timers, so
// that tests drive time by hand and a lease rule can be checked to the
// millisecond without waiting for it.
type Clock interface {
	Now() time.Time
	NewTimer(d time.Duration) Timer
}

// Timer is the part of *time.Timer the leader uses.
type Timer interface {
	C() <-chan time.Time
	// Reset re-arms the timer to fire d from now; a Go 1.23 timer needs no
	// drain first.
	Reset(d time.Duration)
	Stop()
}

// SystemClock is the real clock.
func SystemClock() Clock { return systemClock{} }

type systemClock struct{}

func (systemClock) Now() time.Time { return time.Now() }

func (systemClock) NewTimer(d time.Duration) Timer { return systemTimer{time.NewTimer(d)} }

type systemTimer struct{ t *time.Timer }

func (t systemTimer) C() <-chan time.Time   { return t.t.C }
func (t systemTimer) Reset(d time.Duration) { t.t.Reset(d) }
func (t systemTimer) Stop()                 { t.t.Stop() }

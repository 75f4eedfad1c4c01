//go:build linux

package chaos

import (
	"reflect"
	"testing"
	"time"
)

func TestPlanReplaysFromItsSeed(t *testing.T) {
	a := Plan(42, 3, 20*time.Second, AllKinds(), 1)
	if b := Plan(42, 3, 20*time.Second, AllKinds(), 1); !reflect.DeepEqual(a, b) {
		t.Fatal("the same seed and round gave two plans")
	}
	if reflect.DeepEqual(a, Plan(43, 3, 20*time.Second, AllKinds(), 1)) || reflect.DeepEqual(a, Plan(42, 4, 20*time.Second, AllKinds(), 1)) {
		t.Fatal("another seed or round gave the same plan")
	}
	if len(a) < 5 || len(a) > 50 {
		t.Fatalf("%d events in 20s at 1/s", len(a))
	}
	for i, e := range a {
		if e.At < 0 || e.At >= 20*time.Second || (i > 0 && e.At < a[i-1].At) {
			t.Fatalf("event %d at %s: outside the round or out of order", i, e.At)
		}
		if e.For < 500*time.Millisecond || e.For > 4*time.Second {
			t.Fatalf("event %d lasts %s", i, e.For)
		}
	}
}

func TestOneStaysInTheRound(t *testing.T) {
	for i := range 200 {
		e := One(7, i, i%3, 8*time.Second, ScanRestart)
		if e.Kind != ScanRestart || e.At < 0 || e.At >= 6*time.Second {
			t.Fatalf("One = %v; want a scanner-restart in the first 6s", e)
		}
	}
}

package liveness

import (
	"net"
	"testing"
)

// TestAttachSetsTheStreamsProtocol: a stream of this version that replaces
// an ALPNv1 one must not be written to as ALPNv1, and detaching a stream
// that was replaced leaves the new one alone.
func TestAttachSetsTheStreamsProtocol(t *testing.T) {
	tests := []struct {
		name          string
		first, second bool // v1 for each stream, in attach order
	}{
		{"v1 replaced by this version", true, false},
		{"this version replaced by v1", false, true},
		{"v1 by v1", true, true},
		{"this version by this version", false, false},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			l := &link{sem: make(chan struct{}, 1), pending: []uint64{7}}
			a, aPeer := net.Pipe()
			b, bPeer := net.Pipe()
			defer aPeer.Close()
			defer bPeer.Close()
			detachA := l.attach(a, tt.first)
			if l.c != a || l.asV1 != tt.first {
				t.Fatalf("after the first attach: c is a %v, asV1 %v; want true, %v", l.c == a, l.asV1, tt.first)
			}
			detachB := l.attach(b, tt.second)
			if l.c != b || l.asV1 != tt.second {
				t.Fatalf("after the second attach: c is b %v, asV1 %v; want true, %v", l.c == b, l.asV1, tt.second)
			}
			if len(l.pending) != 0 {
				t.Errorf("pending = %v after a new stream; want none (they were the old stream's)", l.pending)
			}
			if _, err := a.Write([]byte{0}); err == nil {
				t.Error("the replaced stream is still open")
			}
			detachA()
			if l.c != b || l.asV1 != tt.second {
				t.Errorf("detaching the replaced stream changed the link: c is b %v, asV1 %v", l.c == b, l.asV1)
			}
			detachB()
			if l.c != nil || l.asV1 {
				t.Errorf("after detaching the current stream: c %v, asV1 %v; want none, false", l.c, l.asV1)
			}
		})
	}
}

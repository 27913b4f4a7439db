package health

import (
	"encoding/binary"
	"errors"
	"fmt"
	"strings"
)

// MaxWireText bounds each text a check's status carries to peers (its
// error and its output), so probe replies stay small.
const MaxWireText = 256

// maxWireChecks bounds the checks a peer may send.
const maxWireChecks = 256

// ErrWire marks malformed check statuses from a peer.
var ErrWire = errors.New("malformed check statuses")

// Summary is the check's error and output on one line, for status output.
func (c CheckStatus) Summary() string {
	return strings.TrimSpace(c.Error + " " + c.Output)
}

// AppendWire appends the part of checks that peers see (name, type,
// verdict, error and output, each text cut to MaxWireText) to b, in a
// compact binary form DecodeWire reads. This is how a node's checks travel
// in its liveness replies.
func AppendWire(b []byte, checks []CheckStatus) []byte {
	b = binary.AppendUvarint(b, uint64(len(checks)))
	for _, c := range checks {
		var ok byte
		if c.Healthy {
			ok = 1
		}
		b = appendText(b, c.Name)
		b = appendText(b, c.Type)
		b = append(b, ok)
		b = appendText(b, c.Error)
		b = appendText(b, c.Output)
	}
	return b
}

func appendText(b []byte, s string) []byte {
	// Valid first, so cutting (which marks the cut with "…") cannot grow it.
	s = truncate(strings.ToValidUTF8(s, "\uFFFD"), MaxWireText-len("…"))
	b = binary.AppendUvarint(b, uint64(len(s)))
	return append(b, s...)
}

// DecodeWire reads check statuses written by AppendWire from the front of
// b and returns them with the bytes that follow.
func DecodeWire(b []byte) ([]CheckStatus, []byte, error) {
	n, k := binary.Uvarint(b)
	if k <= 0 || n > maxWireChecks {
		return nil, nil, fmt.Errorf("%w: bad count", ErrWire)
	}
	b = b[k:]
	var out []CheckStatus
	text := func() string {
		l, k := binary.Uvarint(b)
		if k <= 0 || l > MaxWireText || l > uint64(len(b)-k) {
			b = nil
			return ""
		}
		s := string(b[k : k+int(l)])
		b = b[k+int(l):]
		return s
	}
	for range n {
		var c CheckStatus
		c.Name, c.Type = text(), text()
		if len(b) == 0 {
			return nil, nil, fmt.Errorf("%w: truncated check %q", ErrWire, c.Name)
		}
		c.Healthy, b = b[0] == 1, b[1:]
		c.Error, c.Output = text(), text()
		if b == nil {
			return nil, nil, fmt.Errorf("%w: truncated check %q", ErrWire, c.Name)
		}
		out = append(out, c)
	}
	return out, b, nil
}

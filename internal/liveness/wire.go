package liveness

import (
	"bufio"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"slices"
)

// ALPN is the TLS application protocol of the mesh's streams, on which
// both ends send messages (kind 3) whenever they like. The cluster's
// listener hands connections that negotiate it to ServeConn.
const ALPN = "tandem-liveness/2"

// ALPNv1 is the protocol of tandem versions before ALPN: the dialler sends
// requests, the other end replies to each. This version answers them
// (ServeConnV1), so the nodes not yet upgraded keep their lease during a
// rolling upgrade; it never dials it.
const ALPNv1 = "tandem-liveness/1"

// Wire format. Every message is a frame: its length as a uvarint, then the
// body. A body starts with the wire version and the message kind; strings
// and byte values are a uvarint length and the bytes; integers are varints.
//
//	message: version kind=3 flags from id ack n×(voter heard_ms) facts
//	request: version kind=1 flags from facts              (ALPNv1)
//	reply:   version kind=2 node n×(voter heard_ms) facts (ALPNv1)
//	facts:   n×(name value)
//
// Unknown facts are kept and passed on, so a newer node may add facts that
// an older one ignores; a new version number is for changes that cannot
// be ignored.
const (
	wireVersion  = 1
	kindRequest  = 1
	kindReply    = 2
	kindMessage  = 3
	flagAnnounce = 1 << 0
	flagAnswer   = 1 << 1
	flagRound    = 1 << 2

	// MaxFrame bounds a message; a peer sending more is cut off.
	MaxFrame = 64 << 10
	// MaxFactName bounds a fact's name.
	MaxFactName = 64
	maxFacts    = 64
	maxHeard    = 1024
)

// Fact is one named value a node says about itself.
type Fact struct {
	Name  string
	Value []byte
}

// Facts are a node's facts in one message, in contribution order.
type Facts []Fact

// Get returns the value of the fact called name.
func (f Facts) Get(name string) ([]byte, bool) {
	for _, x := range f {
		if x.Name == name {
			return x.Value, true
		}
	}
	return nil, false
}

// Message is what a node sends a peer each interval, and at once when
// asked to. It is a probe and an answer in one: it acknowledges the
// latest message the sender received from the receiver (Ack), which proves
// to the receiver that the sender heard it after it sent that message, and
// it carries the sender's heard ages and facts, which are at least as
// recent as that.
type Message struct {
	From string
	// ID numbers the sender's messages; the receiver echoes it as Ack.
	ID uint64
	// Ack is the ID of the latest message the sender received from the
	// receiver; 0 when it has received none.
	Ack uint64
	// Answer asks the receiver to send a message back now rather than at
	// its next round.
	Answer bool
	// Announce says one of the sender's facts has just changed; it implies
	// Answer.
	Announce bool
	// Round marks the sender's message of its periodic round, which
	// starts the receiver's round if it has not sent it yet (Mesh.Run).
	Round bool
	// HeardMs is, per voter, the age in milliseconds of the last message
	// the sender received from it, as in Reply.
	HeardMs map[string]int64
	Facts   Facts
}

// AppendMessage appends m's frame to dst.
func AppendMessage(dst []byte, m *Message) []byte {
	return frame(dst, func(b []byte) []byte {
		var flags byte
		if m.Announce {
			flags |= flagAnnounce
		}
		if m.Answer {
			flags |= flagAnswer
		}
		if m.Round {
			flags |= flagRound
		}
		b = append(b, wireVersion, kindMessage, flags)
		b = appendString(b, m.From)
		b = binary.AppendUvarint(b, m.ID)
		b = binary.AppendUvarint(b, m.Ack)
		b = appendHeard(b, m.HeardMs)
		return appendFacts(b, m.Facts)
	})
}

// DecodeMessage parses a message body (a frame without its length).
func DecodeMessage(body []byte) (Message, error) {
	d := decoder{b: body}
	d.header(kindMessage)
	flags := d.byte("flags")
	m := Message{From: d.string("sender", 253), Announce: flags&flagAnnounce != 0, Answer: flags&flagAnswer != 0, Round: flags&flagRound != 0}
	m.ID = d.uvarint("id")
	m.Ack = d.uvarint("ack")
	m.HeardMs = d.heard()
	m.Facts = d.facts()
	if err := d.end(); err != nil {
		return Message{}, err
	}
	if m.From == "" {
		return Message{}, fmt.Errorf("%w: no sender", ErrWire)
	}
	return m, nil
}

// Request is one probe (ALPNv1).
type Request struct {
	From string
	// Announce asks the receiver to probe the sender now, because one of
	// its facts has just changed. The receiver learns the new value from
	// its probe's reply, never from this request, so a late request is
	// harmless.
	Announce bool
	// Facts are the sender's facts contributed with InProbes. A request may
	// arrive late (TCP retransmits it after a partition heals), so
	// receivers must not treat them as current.
	Facts Facts
}

// Reply is a node's answer to a probe (ALPNv1).
type Reply struct {
	Node string
	// HeardMs is, per voter, the age in milliseconds of the last probe
	// received from it; for a voter never heard from since this process
	// started, its uptime, or -1 during the startup grace (StartupGrace).
	HeardMs map[string]int64
	Facts   Facts
}

// ErrWire marks a malformed message.
var ErrWire = errors.New("malformed liveness message")

// AppendRequest appends r's frame to dst.
func AppendRequest(dst []byte, r *Request) []byte {
	return frame(dst, func(b []byte) []byte {
		var flags byte
		if r.Announce {
			flags |= flagAnnounce
		}
		b = append(b, wireVersion, kindRequest, flags)
		b = appendString(b, r.From)
		return appendFacts(b, r.Facts)
	})
}

// AppendReply appends r's frame to dst.
func AppendReply(dst []byte, r *Reply) []byte {
	return frame(dst, func(b []byte) []byte {
		b = append(b, wireVersion, kindReply)
		b = appendString(b, r.Node)
		b = appendHeard(b, r.HeardMs)
		return appendFacts(b, r.Facts)
	})
}

func appendHeard(b []byte, heard map[string]int64) []byte {
	b = binary.AppendUvarint(b, uint64(len(heard)))
	for name, ms := range heard {
		b = appendString(b, name)
		b = binary.AppendVarint(b, ms)
	}
	return b
}

// frame appends a length-prefixed body built by body. The length goes in
// front afterwards: the body is built in place, then shifted by the few
// bytes its length takes.
func frame(dst []byte, body func([]byte) []byte) []byte {
	start := len(dst)
	dst = append(dst, make([]byte, binary.MaxVarintLen32)...)
	dst = body(dst)
	n := len(dst) - start - binary.MaxVarintLen32
	var hdr [binary.MaxVarintLen32]byte
	h := binary.PutUvarint(hdr[:], uint64(n))
	copy(dst[start+h:], dst[start+binary.MaxVarintLen32:])
	copy(dst[start:], hdr[:h])
	return dst[:start+h+n]
}

func appendString(b []byte, s string) []byte {
	b = binary.AppendUvarint(b, uint64(len(s)))
	return append(b, s...)
}

func appendFacts(b []byte, facts Facts) []byte {
	b = binary.AppendUvarint(b, uint64(len(facts)))
	for _, f := range facts {
		b = appendString(b, f.Name)
		b = binary.AppendUvarint(b, uint64(len(f.Value)))
		b = append(b, f.Value...)
	}
	return b
}

// readFrame reads one frame's body into buf (grown as needed).
func readFrame(r *bufio.Reader, buf []byte) ([]byte, error) {
	n, err := binary.ReadUvarint(r)
	if err != nil {
		if errors.Is(err, io.EOF) {
			return nil, io.EOF
		}
		return nil, fmt.Errorf("read frame length: %w", err)
	}
	if n > MaxFrame {
		return nil, fmt.Errorf("%w: frame of %d bytes, more than %d", ErrWire, n, MaxFrame)
	}
	buf = slices.Grow(buf[:0], int(n))[:n]
	if _, err := io.ReadFull(r, buf); err != nil {
		return nil, fmt.Errorf("read frame: %w", err)
	}
	return buf, nil
}

// decoder reads a body; the first error sticks and later reads return zeros.
type decoder struct {
	b   []byte
	err error
}

func (d *decoder) fail(what string) {
	if d.err == nil {
		d.err = fmt.Errorf("%w: %s", ErrWire, what)
	}
}

func (d *decoder) byte(what string) byte {
	if d.err != nil || len(d.b) == 0 {
		d.fail("truncated " + what)
		return 0
	}
	c := d.b[0]
	d.b = d.b[1:]
	return c
}

func (d *decoder) uvarint(what string) uint64 {
	if d.err != nil {
		return 0
	}
	v, n := binary.Uvarint(d.b)
	if n <= 0 {
		d.fail("bad " + what)
		return 0
	}
	d.b = d.b[n:]
	return v
}

func (d *decoder) varint(what string) int64 {
	if d.err != nil {
		return 0
	}
	v, n := binary.Varint(d.b)
	if n <= 0 {
		d.fail("bad " + what)
		return 0
	}
	d.b = d.b[n:]
	return v
}

func (d *decoder) bytes(what string, limit int) []byte {
	n := d.uvarint(what + " length")
	if d.err != nil {
		return nil
	}
	if n > uint64(limit) || n > uint64(len(d.b)) {
		d.fail(what + " too long")
		return nil
	}
	v := d.b[:n:n]
	d.b = d.b[n:]
	return v
}

func (d *decoder) string(what string, limit int) string { return string(d.bytes(what, limit)) }

func (d *decoder) header(kind byte) {
	if v := d.byte("version"); d.err == nil && v != wireVersion {
		d.err = fmt.Errorf("%w: wire version %d, this node speaks %d: run the same tandem version on every node", ErrWire, v, wireVersion)
	}
	if k := d.byte("kind"); d.err == nil && k != kind {
		d.fail(fmt.Sprintf("message kind %d, want %d", k, kind))
	}
}

// facts decodes the facts; their values are copied out of the frame buffer,
// which the caller reuses.
func (d *decoder) facts() Facts {
	n := d.uvarint("fact count")
	if d.err == nil && n > maxFacts {
		d.fail("too many facts")
	}
	if d.err != nil || n == 0 {
		return nil
	}
	out := make(Facts, 0, n)
	for range n {
		name := d.string("fact name", MaxFactName)
		val := d.bytes("fact value", MaxFrame)
		if d.err != nil {
			return nil
		}
		out = append(out, Fact{Name: name, Value: slices.Clone(val)})
	}
	return out
}

func (d *decoder) heard() map[string]int64 {
	n := d.uvarint("heard count")
	if d.err == nil && n > maxHeard {
		d.fail("too many heard ages")
	}
	if d.err != nil {
		return nil
	}
	out := make(map[string]int64, n)
	for range n {
		name := d.string("voter", 253)
		out[name] = d.varint("heard age")
	}
	return out
}

func (d *decoder) end() error {
	if d.err == nil && len(d.b) != 0 {
		d.fail("trailing bytes")
	}
	return d.err
}

// DecodeRequest parses a request body (a frame without its length).
func DecodeRequest(body []byte) (Request, error) {
	d := decoder{b: body}
	d.header(kindRequest)
	flags := d.byte("flags")
	r := Request{From: d.string("sender", 253), Announce: flags&flagAnnounce != 0}
	r.Facts = d.facts()
	if err := d.end(); err != nil {
		return Request{}, err
	}
	if r.From == "" {
		return Request{}, fmt.Errorf("%w: no sender", ErrWire)
	}
	return r, nil
}

// DecodeReply parses a reply body (a frame without its length).
func DecodeReply(body []byte) (Reply, error) {
	d := decoder{b: body}
	d.header(kindReply)
	r := Reply{Node: d.string("node", 253)}
	r.HeardMs = d.heard()
	r.Facts = d.facts()
	if err := d.end(); err != nil {
		return Reply{}, err
	}
	return r, nil
}

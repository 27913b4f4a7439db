package liveness

import (
	"bufio"
	"bytes"
	"errors"
	"reflect"
	"strings"
	"testing"
)

// body strips a frame's length.
func body(t testing.TB, frame []byte) []byte {
	t.Helper()
	b, err := readFrame(bufio.NewReader(bytes.NewReader(frame)), nil)
	if err != nil {
		t.Fatal(err)
	}
	return b
}

func TestWireRoundTrip(t *testing.T) {
	reqs := []Request{
		{From: "node2"},
		{From: "witness", Announce: true, Facts: Facts{{Name: "failover.leader", Value: []byte{1, 2, 3}}}},
		{From: "n", Facts: Facts{{Name: "a", Value: []byte{}}, {Name: "b", Value: bytes.Repeat([]byte{7}, 300)}}},
	}
	for _, want := range reqs {
		got, err := DecodeRequest(body(t, AppendRequest(nil, &want)))
		if err != nil {
			t.Fatalf("decode %+v: %v", want, err)
		}
		normalize(&got.Facts, &want.Facts)
		if !reflect.DeepEqual(got, want) {
			t.Errorf("request round trip = %+v; want %+v", got, want)
		}
	}
	replies := []Reply{
		{Node: "node1", HeardMs: map[string]int64{}},
		{Node: "node1", HeardMs: map[string]int64{"node2": 12, "witness": -1}, Facts: Facts{{Name: "failover", Value: []byte("x")}}},
	}
	for _, want := range replies {
		got, err := DecodeReply(body(t, AppendReply(nil, &want)))
		if err != nil {
			t.Fatalf("decode %+v: %v", want, err)
		}
		normalize(&got.Facts, &want.Facts)
		if !reflect.DeepEqual(got, want) {
			t.Errorf("reply round trip = %+v; want %+v", got, want)
		}
	}
}

// normalize makes empty values compare equal to nil ones.
func normalize(fs ...*Facts) {
	for _, f := range fs {
		for i := range *f {
			if len((*f)[i].Value) == 0 {
				(*f)[i].Value = nil
			}
		}
	}
}

func TestWireRejects(t *testing.T) {
	ok := body(t, AppendRequest(nil, &Request{From: "node2", Facts: Facts{{Name: "f", Value: []byte("v")}}}))
	tests := []struct {
		name string
		body []byte
		want string
	}{
		{"empty", nil, "truncated version"},
		{"other version", append([]byte{9}, ok[1:]...), "wire version 9"},
		{"a reply", body(t, AppendReply(nil, &Reply{Node: "x"})), "message kind 2"},
		{"truncated", ok[:len(ok)-1], "fact value too long"},
		{"trailing", append(append([]byte{}, ok...), 0), "trailing bytes"},
		{"no sender", body(t, AppendRequest(nil, &Request{})), "no sender"},
		{"too many facts", append([]byte{wireVersion, kindRequest, 0, 1, 'n'}, 0xff, 0x01), "too many facts"},
		{"long fact name", body(t, AppendRequest(nil, &Request{From: "n", Facts: Facts{{Name: strings.Repeat("x", MaxFactName+1)}}})), "fact name too long"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			_, err := DecodeRequest(tt.body)
			if !errors.Is(err, ErrWire) || !strings.Contains(err.Error(), tt.want) {
				t.Errorf("DecodeRequest = %v; want ErrWire containing %q", err, tt.want)
			}
		})
	}
}

func TestReadFrameBoundsLength(t *testing.T) {
	big := AppendRequest(nil, &Request{From: "n", Facts: Facts{{Name: "f", Value: make([]byte, MaxFrame)}}})
	_, err := readFrame(bufio.NewReader(bytes.NewReader(big)), nil)
	if !errors.Is(err, ErrWire) {
		t.Errorf("oversized frame: %v; want ErrWire", err)
	}
}

func FuzzDecodeRequest(f *testing.F) {
	f.Add(AppendRequest(nil, &Request{From: "node2", Announce: true, Facts: Facts{{Name: "a", Value: []byte("b")}}})[1:])
	f.Add([]byte{wireVersion, kindRequest, 0, 0, 0})
	f.Fuzz(func(t *testing.T, b []byte) {
		r, err := DecodeRequest(b)
		if err != nil {
			return
		}
		again, err := DecodeRequest(body(t, AppendRequest(nil, &r)))
		normalize(&r.Facts, &again.Facts)
		if err != nil || !reflect.DeepEqual(again, r) {
			t.Fatalf("re-encoded %+v decodes as %+v, %v", r, again, err)
		}
	})
}

func FuzzDecodeReply(f *testing.F) {
	f.Add(AppendReply(nil, &Reply{Node: "node1", HeardMs: map[string]int64{"a": -1, "b": 300}, Facts: Facts{{Name: "x", Value: []byte{1}}}})[1:])
	f.Fuzz(func(t *testing.T, b []byte) {
		r, err := DecodeReply(b)
		if err != nil {
			return
		}
		again, err := DecodeReply(body(t, AppendReply(nil, &r)))
		normalize(&r.Facts, &again.Facts)
		if err != nil || !reflect.DeepEqual(again, r) {
			t.Fatalf("re-encoded %+v decodes as %+v, %v", r, again, err)
		}
	})
}

package artifact

import (
	"bytes"
	"encoding/binary"
	"fmt"
)

// maxXZDict is the largest LZMA2 dictionary accepted (xz -9 uses 64 MiB).
// The decoder allocates what a block header asks for, up to 1.5 GiB, so a
// crafted header could exhaust a small node's memory before any data.
const maxXZDict = 64 << 20

// checkXZ walks a whole .xz file's container (stream header, the index
// from the footer, each block header) and refuses anything but one stream
// whose blocks all use LZMA2 with a dictionary of at most maxXZDict. It
// decodes no data.
func checkXZ(b []byte) error {
	bad := func(why string) error { return fmt.Errorf("%w: control.tar.xz: %s", ErrCorrupt, why) }
	if len(b) < 32 || !bytes.Equal(b[:6], []byte("\xfd7zXZ\x00")) || string(b[len(b)-2:]) != "YZ" {
		return bad("not a single .xz stream")
	}
	if !bytes.Equal(b[6:8], b[len(b)-4:len(b)-2]) {
		return bad("stream flags differ between header and footer")
	}
	backward := (int64(binary.LittleEndian.Uint32(b[len(b)-8:len(b)-4])) + 1) * 4
	idx := int64(len(b)) - 12 - backward
	if idx < 12 || b[idx] != 0 {
		return bad("bad index position")
	}
	p := idx + 1
	records, ok := uvarint(b, &p)
	if !ok || records > 1<<16 {
		return bad("bad index")
	}
	pos := int64(12)
	for range records {
		unpadded, ok1 := uvarint(b, &p)
		_, ok2 := uvarint(b, &p)
		if !ok1 || !ok2 || unpadded > uint64(idx) {
			return bad("bad index record")
		}
		if err := checkXZBlockHeader(b[pos:idx]); err != nil {
			return bad(err.Error())
		}
		pos += (int64(unpadded) + 3) &^ 3
		if pos > idx {
			return bad("blocks overrun the index")
		}
	}
	if pos != idx {
		return bad("data between the blocks and the index (several streams?)")
	}
	return nil
}

func checkXZBlockHeader(b []byte) error {
	if len(b) < 2 || b[0] == 0 {
		return fmt.Errorf("missing block header")
	}
	size := (int64(b[0]) + 1) * 4
	if size > int64(len(b)) {
		return fmt.Errorf("truncated block header")
	}
	h := b[:size]
	flags := h[1]
	p := int64(2)
	if flags&0x40 != 0 {
		if _, ok := uvarint(h, &p); !ok {
			return fmt.Errorf("bad block header")
		}
	}
	if flags&0x80 != 0 {
		if _, ok := uvarint(h, &p); !ok {
			return fmt.Errorf("bad block header")
		}
	}
	lzma2 := false
	for range int(flags&3) + 1 {
		id, ok1 := uvarint(h, &p)
		n, ok2 := uvarint(h, &p)
		if !ok1 || !ok2 || n > uint64(size) || p+int64(n) > size {
			return fmt.Errorf("bad filter flags")
		}
		if id == 0x21 {
			if n != 1 || h[p] > 40 {
				return fmt.Errorf("bad LZMA2 properties")
			}
			if d := lzma2Dict(h[p]); d > maxXZDict {
				return fmt.Errorf("LZMA2 dictionary of %d bytes, at most %d accepted", d, maxXZDict)
			}
			lzma2 = true
		}
		p += int64(n)
	}
	if !lzma2 {
		return fmt.Errorf("a block without LZMA2")
	}
	return nil
}

// lzma2Dict decodes the LZMA2 dictionary-size property byte (0..40).
func lzma2Dict(c byte) int64 {
	if c == 40 {
		return 1<<32 - 1
	}
	return int64(2|c&1) << (c/2 + 11)
}

// uvarint reads xz's variable-length integer (at most 9 bytes) at *p.
func uvarint(b []byte, p *int64) (uint64, bool) {
	var v uint64
	for i := 0; i < 9; i++ {
		if *p >= int64(len(b)) {
			return 0, false
		}
		c := b[*p]
		*p++
		v |= uint64(c&0x7f) << (7 * i)
		if c&0x80 == 0 {
			return v, i == 0 || c != 0
		}
	}
	return 0, false
}

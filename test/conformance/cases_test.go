package conformance

import (
	"bytes"
	"encoding/binary"
	"fmt"
	"strconv"
	"strings"
	"time"
	"unicode/utf8"
)

// tcase is one case of the Autobahn|Testsuite fuzzing client (categories
// 1–7 and 9), adapted to Piped: where Autobahn's echo server sends a text
// message back, Piped answers the call inside it. Every text message is the
// call {"id":N,"method":"ping","payload":{"s":"…"}} (padded to the case's size),
// answered locally by the node with {"type":"event","event":"pong","id":N}
// ("answer N" below); a binary message or an empty one is answered with a
// bad_request error frame ("error bad_request").
type tcase struct {
	id    string // Autobahn's case number
	steps []step
	// want is what the server sends, in order. When the server is to fail
	// the connection, want ends with "close <code>"; when the case sent a
	// close itself, with the echo. Either way the server must then close
	// the TCP connection. Otherwise, after want the client closes with 1000
	// and the server must echo it and close.
	want []string
}

// step is one write of the client, chopped into chop-byte writes when chop
// is above 0, followed by pause.
type step struct {
	b     []byte
	chop  int
	pause time.Duration
}

func send(frames ...[]byte) step { return step{b: bytes.Join(frames, nil)} }

func sendChopped(chop int, frames ...[]byte) step {
	return step{b: bytes.Join(frames, nil), chop: chop}
}

func pause(d time.Duration) step { return step{pause: d} }

// call is the ping call with id whose text is exactly size bytes (at
// least its bare form's), its payload a string of pad repeated.
func call(id, size int) []byte {
	head := `{"id":` + strconv.Itoa(id) + `,"method":"ping","payload":{"s":"`
	n := max(0, size-len(head)-3)
	return []byte(head + strings.Repeat("*", n) + `"}}`)
}

// callWith is the ping call with id whose payload string holds s as is.
func callWith(id int, s string) []byte {
	return []byte(`{"id":` + strconv.Itoa(id) + `,"method":"ping","payload":{"s":"` + s + `"}}`)
}

func answer(id int) string { return "answer " + strconv.Itoa(id) }

const badRequest = "error bad_request"

// Frame builders: op with FIN set, or a fragment.
func text(p []byte) []byte      { return masked(0x81, p) }
func binaryMsg(p []byte) []byte { return masked(0x82, p) }
func ping(p []byte) []byte      { return masked(0x89, p) }
func pong(p []byte) []byte      { return masked(0x8a, p) }
func closeFrame(code int, reason string) []byte {
	return masked(0x88, append(binary.BigEndian.AppendUint16(nil, uint16(code)), reason...))
}
func frag(op byte, fin bool, p []byte) []byte {
	if fin {
		op |= 0x80
	}
	return masked(op, p)
}

// fragments splits p into a message of op in frames of size bytes.
func fragments(op byte, p []byte, size int) []byte {
	var out []byte
	first := true
	for first || len(p) > 0 {
		n := min(size, len(p))
		o := byte(0)
		if first {
			o = op
		}
		out = append(out, frag(o, n == len(p), p[:n])...)
		p, first = p[n:], false
	}
	return out
}

func closeWant(code int) string { return "close " + strconv.Itoa(code) }

// cases returns every case; big says whether to include category 9's
// messages of 4 MiB and more.
func cases(big bool) []tcase {
	var cs []tcase
	add := func(id string, want []string, steps ...step) {
		cs = append(cs, tcase{id: id, steps: steps, want: want})
	}
	fail := func(before ...string) []string { return append(before, closeWant(1002)) }

	// 1 Framing: text and binary messages of 0–65536 bytes, and 65536 bytes in 997-byte writes.
	for i, n := range []int{0, 125, 126, 127, 128, 65535, 65536} {
		if n == 0 {
			add("1.1.1", []string{badRequest}, send(text(nil)))
		} else {
			add(fmt.Sprintf("1.1.%d", i+1), []string{answer(i)}, send(text(call(i, n))))
		}
		add(fmt.Sprintf("1.2.%d", i+1), []string{badRequest}, send(binaryMsg(make([]byte, n))))
	}
	add("1.1.8", []string{answer(8)}, sendChopped(997, text(call(8, 65536))))
	add("1.2.8", []string{badRequest}, sendChopped(997, binaryMsg(make([]byte, 65536))))

	// 2 Pings and pongs.
	add("2.1", []string{"pong "}, send(ping(nil)))
	add("2.2", []string{"pong Hello, world!"}, send(ping([]byte("Hello, world!"))))
	add("2.3", []string{"pong \x00\xff\xfe\xfd\xfc\xfb\x00\xff"}, send(ping([]byte{0x00, 0xff, 0xfe, 0xfd, 0xfc, 0xfb, 0x00, 0xff})))
	add("2.4", []string{"pong " + strings.Repeat("\xfe", 125)}, send(ping(bytes.Repeat([]byte{0xfe}, 125))))
	add("2.5", fail(), send(ping(bytes.Repeat([]byte{0xfe}, 126))))
	add("2.6", []string{"pong " + strings.Repeat("\xfe", 125)}, sendChopped(1, ping(bytes.Repeat([]byte{0xfe}, 125))))
	add("2.7", nil, send(pong(nil)))
	add("2.8", nil, send(pong([]byte("unsolicited pong payload"))))
	add("2.9", []string{"pong ping payload"}, send(pong([]byte("unsolicited pong payload")), ping([]byte("ping payload"))))
	var tenPings [][]byte
	var tenPongs []string
	for i := range 10 {
		tenPings = append(tenPings, ping([]byte("payload-"+strconv.Itoa(i))))
		tenPongs = append(tenPongs, "pong payload-"+strconv.Itoa(i))
	}
	add("2.10", tenPongs, send(tenPings...))
	add("2.11", tenPongs, sendChopped(1, tenPings...))

	// 3 Reserved bits: the connection fails at the frame, after answering what came before.
	add("3.1", fail(), send(masked(0x81|0x40, call(1, 40))))
	add("3.2", fail(answer(1)), send(text(call(1, 40)), masked(0x81|0x20, call(2, 40)), ping(nil)))
	add("3.3", fail(answer(1)), sendChopped(1, text(call(1, 40)), masked(0x81|0x10, call(2, 40)), ping(nil)))
	add("3.4", fail(answer(1)), sendChopped(1, text(call(1, 40)), masked(0x81|0x60, call(2, 40)), ping(nil)))
	add("3.5", fail(), send(masked(0x82|0x50, []byte{0, 1, 2, 3})))
	add("3.6", fail(), send(masked(0x89|0x30, []byte("ping"))))
	add("3.7", fail(), send(masked(0x88|0x70, nil)))

	// 4 Opcodes: reserved non-control (3–7) and control (B–F) opcodes fail the connection.
	for i, op := range []byte{3, 4, 5, 6, 7} {
		add(fmt.Sprintf("4.1.%d", i+1), fail(answer(1)), send(text(call(1, 40)), masked(0x80|op, []byte("reserved")), ping(nil)))
	}
	for i, op := range []byte{0xb, 0xc, 0xd, 0xe, 0xf} {
		add(fmt.Sprintf("4.2.%d", i+1), fail(answer(1)), send(text(call(1, 40)), masked(0x80|op, []byte("reserved")), ping(nil)))
	}

	// 5 Fragmentation.
	m := call(1, 64)
	add("5.1", fail(), send(frag(0x9, false, []byte("frag")), frag(0x0, true, []byte("ment"))))
	add("5.2", fail(), send(frag(0xa, false, []byte("frag")), frag(0x0, true, []byte("ment"))))
	add("5.3", []string{answer(1)}, send(frag(0x1, false, m[:20]), frag(0x0, true, m[20:])))
	add("5.4", []string{answer(1)}, send(frag(0x1, false, m[:20])), pause(50*time.Millisecond), send(frag(0x0, true, m[20:])))
	add("5.5", []string{answer(1)}, sendChopped(1, frag(0x1, false, m[:20]), frag(0x0, true, m[20:])))
	add("5.6", []string{"pong ping", answer(1)}, send(frag(0x1, false, m[:20]), ping([]byte("ping")), frag(0x0, true, m[20:])))
	add("5.7", []string{"pong ping", answer(1)}, send(frag(0x1, false, m[:20])), pause(50*time.Millisecond), send(ping([]byte("ping"))), pause(50*time.Millisecond), send(frag(0x0, true, m[20:])))
	add("5.8", []string{"pong ping", answer(1)}, sendChopped(1, frag(0x1, false, m[:20]), ping([]byte("ping")), frag(0x0, true, m[20:])))
	add("5.9", fail(), send(frag(0x0, true, m)))
	add("5.10", fail(), send(frag(0x0, true, m)), pause(50*time.Millisecond), send(text(call(2, 40))))
	add("5.11", fail(), sendChopped(1, frag(0x0, true, m), text(call(2, 40))))
	add("5.12", fail(), send(frag(0x0, false, m)))
	add("5.13", fail(), send(frag(0x0, false, m)), pause(50*time.Millisecond), send(text(call(2, 40))))
	add("5.14", fail(), sendChopped(1, frag(0x0, false, m), text(call(2, 40))))
	add("5.15", fail(answer(1)), send(frag(0x1, false, m[:20]), frag(0x0, true, m[20:]), frag(0x0, false, m[:20]), frag(0x1, true, m)))
	add("5.16", fail(), send(frag(0x0, false, m[:20]), frag(0x0, true, m[20:]), text(m)))
	add("5.17", fail(), send(frag(0x0, true, m[:20]), frag(0x0, true, m[20:]), text(m)))
	add("5.18", fail(), send(frag(0x1, false, m[:20]), frag(0x1, true, m[20:])))
	var five []step
	for i := range 5 {
		end := min(len(m), (i+1)*len(m)/5)
		op := byte(0x0)
		if i == 0 {
			op = 0x1
		}
		five = append(five, send(frag(op, i == 4, m[i*len(m)/5:end]), ping([]byte("p"+strconv.Itoa(i)))), pause(20*time.Millisecond))
	}
	// The last fragment completes the message before its ping arrives.
	add("5.19", []string{"pong p0", "pong p1", "pong p2", "pong p3", answer(1), "pong p4"}, five...)
	add("5.20", []string{"pong p0", "pong p1", "pong p2", "pong p3", answer(1), "pong p4"}, sendChopped(1, bytesOf(five)...))

	// 6 UTF-8 handling: valid text is answered, invalid text fails the connection with 1007
	// (at the end of the message: Autobahn's "non-strict", which it accepts for the fail-fast cases).
	add("6.1.1", []string{badRequest}, send(text(nil)))
	add("6.1.2", []string{badRequest}, send(frag(0x1, false, nil), frag(0x0, false, nil), frag(0x0, true, nil)))
	add("6.1.3", []string{answer(1)}, send(frag(0x1, false, nil), frag(0x0, false, m), frag(0x0, true, nil)))
	n := 0
	for _, u := range utf8Cases() {
		for _, how := range []string{"frame", "fragments of 1 byte", "chopped"} {
			n++
			msg := callWith(n, u.s)
			want := []string{answer(n)}
			if !utf8.ValidString(u.s) {
				want = []string{closeWant(1007)}
			}
			id := fmt.Sprintf("6.%s (%s, %s)", u.id, u.name, how)
			switch how {
			case "frame":
				add(id, want, send(text(msg)))
			case "fragments of 1 byte":
				add(id, want, send(fragments(0x1, msg, 1)))
			default:
				add(id, want, sendChopped(1, text(msg)))
			}
		}
	}

	// 7 Close handling.
	add("7.1.1", []string{answer(1), closeWant(1000)}, send(text(call(1, 40)), closeFrame(1000, "")))
	add("7.1.2", []string{closeWant(1000)}, send(closeFrame(1000, ""), closeFrame(1000, "")))
	add("7.1.3", []string{closeWant(1000)}, send(closeFrame(1000, ""), ping([]byte("after close"))))
	add("7.1.4", []string{closeWant(1000)}, send(closeFrame(1000, ""), text(call(1, 40))))
	add("7.1.5", []string{closeWant(1000)}, send(frag(0x1, false, m[:20]), closeFrame(1000, ""), frag(0x0, true, m[20:])))
	var lots [][]byte
	var lotsWant []string
	for i := range 100 {
		lots = append(lots, text(call(i, 10000)))
		lotsWant = append(lotsWant, answer(i))
	}
	add("7.1.6", append(lotsWant, closeWant(1000)), send(append(lots, closeFrame(1000, ""))...))
	add("7.3.1", []string{"close"}, send(masked(0x88, nil)))
	add("7.3.2", fail(), send(masked(0x88, []byte{0x03})))
	add("7.3.3", []string{closeWant(1000)}, send(closeFrame(1000, "")))
	add("7.3.4", []string{closeWant(1000)}, send(closeFrame(1000, "Hello World!")))
	add("7.3.5", []string{closeWant(1000)}, send(closeFrame(1000, strings.Repeat("*", 123))))
	add("7.3.6", fail(), send(closeFrame(1000, strings.Repeat("*", 124))))
	add("7.5.1", []string{closeWant(1007)}, send(closeFrame(1000, "\xce\xba\xe1\xbd\xb9\xcf\x83\xce\xbc\xce\xb5\xed\xa0\x80\x65\x64\x69\x74\x65\x64")))
	// Valid codes are echoed. 1012 and 1013 are registered since Autobahn's
	// list was written; like gorilla/websocket, Piped takes them as valid.
	for i, code := range []int{1000, 1001, 1002, 1003, 1007, 1008, 1009, 1010, 1011, 3000, 3999, 4000, 4999, 1012, 1013} {
		add(fmt.Sprintf("7.7.%d", i+1), []string{closeWant(code)}, send(closeFrame(code, "")))
	}
	for i, code := range []int{0, 999, 1004, 1005, 1006, 1014, 1015, 1016, 1100, 2000, 2999} {
		add(fmt.Sprintf("7.9.%d", i+1), fail(), send(closeFrame(code, "")))
	}
	add("7.13.1", fail(), send(closeFrame(5000, "")))
	add("7.13.2", fail(), send(closeFrame(65535, "")))

	// 9 Limits: large messages, whole, fragmented and chopped, and many small ones.
	sizes := []int{64 << 10, 256 << 10, 1 << 20}
	if big {
		sizes = append(sizes, 4<<20, 8<<20, 16<<20)
	}
	for i, size := range sizes {
		add(fmt.Sprintf("9.1.%d", i+1), []string{answer(i)}, send(text(call(i, size))))
		add(fmt.Sprintf("9.2.%d", i+1), []string{badRequest}, send(binaryMsg(make([]byte, size))))
	}
	fragSize := 1 << 20
	if big {
		fragSize = 4 << 20
	}
	for i, fs := range []int{64, 256, 1 << 10, 4 << 10, 16 << 10, 64 << 10, 256 << 10, 1 << 20, 4 << 20} {
		if fs > fragSize {
			break
		}
		add(fmt.Sprintf("9.3.%d", i+1), []string{answer(i)}, send(fragments(0x1, call(i, fragSize), fs)))
		add(fmt.Sprintf("9.4.%d", i+1), []string{badRequest}, send(fragments(0x2, make([]byte, fragSize), fs)))
	}
	for i, chop := range []int{64, 128, 256, 512, 1024, 2048, 4096} {
		add(fmt.Sprintf("9.5.%d", i+1), []string{answer(i)}, sendChopped(chop*16, text(call(i, 1<<20))))
		add(fmt.Sprintf("9.6.%d", i+1), []string{badRequest}, sendChopped(chop*16, binaryMsg(make([]byte, 1<<20))))
	}
	for i, size := range []int{0, 16, 64, 256, 1 << 10, 4 << 10} {
		var msgs [][]byte
		var want []string
		for j := range 1000 {
			if size == 0 {
				msgs = append(msgs, text(nil))
				want = append(want, badRequest)
			} else {
				msgs = append(msgs, text(call(j, max(size, 40))))
				want = append(want, answer(j))
			}
		}
		add(fmt.Sprintf("9.7.%d", i+1), want, send(msgs...))
		var bins [][]byte
		var binWant []string
		for range 1000 {
			bins = append(bins, binaryMsg(make([]byte, size)))
			binWant = append(binWant, badRequest)
		}
		add(fmt.Sprintf("9.8.%d", i+1), binWant, send(bins...))
	}
	return cs
}

func bytesOf(steps []step) [][]byte {
	var out [][]byte
	for _, s := range steps {
		out = append(out, s.b)
	}
	return out
}

// utf8Case is a sequence of Autobahn's category 6 (Markus Kuhn's UTF-8
// decoder stress test), carried inside a call's payload string.
type utf8Case struct {
	id, name, s string
}

func utf8Cases() []utf8Case {
	cs := []utf8Case{
		{"2", "valid text", "Hello-\xc2\xb5@\xc3\x9f\xc3\xb6\xc3\xa4\xc3\xbc\xc3\xa0\xc3\xa1-UTF-8!!"},
		{"3", "κόσμε with a surrogate", "\xce\xba\xe1\xbd\xb9\xcf\x83\xce\xbc\xce\xb5\xed\xa0\x80\x65\x64\x69\x74\x65\x64"},
		{"4", "fail fast: beyond U+10FFFF mid-message", "\xce\xba\xe1\xbd\xb9\xcf\x83\xce\xbc\xce\xb5\xf4\x90\x80\x80\x65\x64\x69\x74\x65\x64"},
		{"5", "κόσμε", "\xce\xba\xe1\xbd\xb9\xcf\x83\xce\xbc\xce\xb5"},
		{"7", "first 2-byte", "\xc2\x80"},
		{"7", "first 3-byte", "\xe0\xa0\x80"},
		{"7", "first 4-byte", "\xf0\x90\x80\x80"},
		{"8", "first 5-byte", "\xf8\x88\x80\x80\x80"},
		{"8", "first 6-byte", "\xfc\x84\x80\x80\x80\x80"},
		{"9", "last 1-byte", "\x7f"},
		{"9", "last 2-byte", "\xdf\xbf"},
		{"9", "last 3-byte", "\xef\xbf\xbf"},
		{"9", "last 4-byte (U+1FFFFF)", "\xf7\xbf\xbf\xbf"},
		{"11", "U+D7FF", "\xed\x9f\xbf"},
		{"11", "U+E000", "\xee\x80\x80"},
		{"11", "U+FFFD", "\xef\xbf\xbd"},
		{"11", "U+10FFFF", "\xf4\x8f\xbf\xbf"},
		{"11", "U+110000", "\xf4\x90\x80\x80"},
		{"12", "first continuation byte", "\x80"},
		{"12", "last continuation byte", "\xbf"},
		{"12", "2 continuation bytes", "\x80\xbf"},
		{"13", "lonely start of a 2-byte sequence", "\xc0 "},
		{"13", "lonely start of a 3-byte sequence", "\xe0 "},
		{"14", "2-byte sequence without its last byte", "\xc0"},
		{"14", "3-byte sequence without its last byte", "\xe0\x80"},
		{"14", "4-byte sequence without its last byte", "\xf0\x80\x80"},
		{"14", "U+07FF without its last byte", "\xdf"},
		{"14", "U+FFFF without its last byte", "\xef\xbf"},
		{"15", "concatenated incomplete sequences", "\xc0\xe0\x80\xf0\x80\x80\xdf\xef\xbf"},
		{"16", "impossible byte fe", "\xfe"},
		{"16", "impossible byte ff", "\xff"},
		{"16", "impossible bytes", "\xfe\xfe\xff\xff"},
		{"17", "overlong /, 2 bytes", "\xc0\xaf"},
		{"17", "overlong /, 3 bytes", "\xe0\x80\xaf"},
		{"17", "overlong /, 4 bytes", "\xf0\x80\x80\xaf"},
		{"18", "maximum overlong, 2 bytes", "\xc1\xbf"},
		{"18", "maximum overlong, 3 bytes", "\xe0\x9f\xbf"},
		{"19", "overlong NUL", "\xc0\x80"},
		{"20", "single surrogate U+D800", "\xed\xa0\x80"},
		{"20", "single surrogate U+DFFF", "\xed\xbf\xbf"},
		{"21", "paired surrogates", "\xed\xa0\x80\xed\xb0\x80"},
		{"22", "noncharacter U+FFFE", "\xef\xbf\xbe"},
		{"22", "noncharacter U+FDD0", "\xef\xb7\x90"},
		{"22", "noncharacter U+10FFFF", "\xf4\x8f\xbf\xbf"},
	}
	// 6.6: every prefix of κόσμε, valid exactly when it ends on a character.
	k := "\xce\xba\xe1\xbd\xb9\xcf\x83\xce\xbc\xce\xb5"
	for i := 1; i <= len(k); i++ {
		cs = append(cs, utf8Case{"6", "κόσμε, first " + strconv.Itoa(i) + " bytes", k[:i]})
	}
	return cs
}

package protocol

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"strings"
	"unicode/utf8"
)

// This file holds reference implementations of ParseFrame, ParseInbound
// (with ParseMessage) and ParseControl built on encoding/json
// (map[string]json.RawMessage keeps raw bytes and, like JSON.parse, lets the
// last duplicate key win). Tests and fuzz targets
// compare the hand scanner against them.

// firstByte returns the first non-whitespace byte of b, or 0.
func firstByte(b []byte) byte {
	b = bytes.TrimLeft(b, " \t\r\n")
	if len(b) == 0 {
		return 0
	}
	return b[0]
}

// isNumberStart reports whether raw starts a JSON number.
func isNumberStart(raw []byte) bool {
	return len(raw) > 0 && (raw[0] == '-' || ('0' <= raw[0] && raw[0] <= '9'))
}

// refFrame is what refParseFrame expects from ParseFrame.
type refFrame struct {
	frame  Frame
	reason string // "" on success
	errID  []byte
}

// refParseFrame is a slow reference ParseFrame.
func refParseFrame(b []byte) refFrame {
	if !json.Valid(b) {
		return refFrame{reason: reasonInvalidJSON}
	}
	if firstByte(b) != '{' {
		return refFrame{reason: reasonNotObject}
	}
	var m map[string]json.RawMessage
	if err := json.Unmarshal(b, &m); err != nil {
		panic(fmt.Sprintf("reference: unmarshal valid object: %v", err))
	}
	var f Frame
	rawID, hasID := m["id"]
	idBad, idLong := false, false
	if hasID && string(rawID) != "null" {
		switch {
		case rawID[0] != '"' && !isNumberStart(rawID):
			idBad = true
		case len(rawID) > MaxIDLength:
			idLong = true // never echoed
		default:
			f.ID = rawID
		}
	}
	fail := func(reason string) refFrame { return refFrame{reason: reason, errID: f.ID} }
	rawMethod, ok := m["method"]
	if !ok {
		return fail(reasonMethodRequired)
	}
	if rawMethod[0] != '"' {
		return fail(reasonMethodNotString)
	}
	if err := json.Unmarshal(rawMethod, &f.Method); err != nil {
		panic(err)
	}
	if f.Method == "" {
		return fail(reasonMethodEmpty)
	}
	if len(f.Method) > MaxMethodLength {
		return fail(reasonMethodTooLong)
	}
	if strings.IndexFunc(f.Method, func(r rune) bool { return r < 0x20 || r == 0x7f }) >= 0 {
		return fail(reasonMethodControl)
	}
	if idBad {
		if len(rawID) > MaxIDLength {
			rawID = nil // never echoed
		}
		return refFrame{reason: reasonIDType, errID: rawID}
	}
	if idLong {
		return refFrame{reason: reasonIDTooLong}
	}
	if raw, ok := m["payload"]; ok && string(raw) != "null" {
		if raw[0] != '{' {
			return fail(reasonPayloadType)
		}
		f.Payload = raw
	}
	for _, tc := range []struct {
		key, reason string
		dst         *string
	}{
		{"traceparent", reasonTraceParentType, &f.TraceParent},
		{"tracestate", reasonTraceStateType, &f.TraceState},
	} {
		if raw, ok := m[tc.key]; ok {
			if raw[0] != '"' {
				return fail(tc.reason)
			}
			if err := json.Unmarshal(raw, tc.dst); err != nil {
				panic(err)
			}
		}
	}
	return refFrame{frame: f}
}

// refInbound is what refParseInbound expects from ParseInbound. Body is not
// predicted; bodyMap is the expected top-level member set of Body.
type refInbound struct {
	in      Inbound
	bodyMap map[string]json.RawMessage
	err     error
}

// refParseInbound is a slow reference ParseInbound.
func refParseInbound(b []byte) refInbound { return refParseMessage(b, true) }

// refParseMessage is a slow reference ParseMessage (ParseInbound when
// needToken).
func refParseMessage(b []byte, needToken bool) refInbound {
	if !json.Valid(b) {
		return refInbound{err: ErrNotJSON}
	}
	if firstByte(b) != '{' {
		return refInbound{err: ErrNotObject}
	}
	var m map[string]json.RawMessage
	if err := json.Unmarshal(b, &m); err != nil {
		panic(fmt.Sprintf("reference: unmarshal valid object: %v", err))
	}
	var in Inbound
	if raw, ok := m["token"]; ok && raw[0] == '"' {
		if err := json.Unmarshal(raw, &in.Token); err != nil {
			panic(err)
		}
	}
	if needToken && in.Token == "" {
		return refInbound{err: ErrNoToken}
	}
	if raw, ok := m["type"]; ok && raw[0] == '"' {
		_ = json.Unmarshal(raw, &in.Type)
	}
	if raw, ok := m["method"]; ok && raw[0] == '"' {
		_ = json.Unmarshal(raw, &in.Method)
	}
	if raw, ok := m["id"]; ok {
		in.ID = raw
	}
	if raw, ok := m["connection"]; ok && raw[0] != 'n' {
		in.HasConnection = true
		if raw[0] == '"' {
			_ = json.Unmarshal(raw, &in.Connection)
		}
	}
	delete(m, "token")
	return refInbound{in: in, bodyMap: m}
}

// refParseControl is a slow reference ParseControl. It reports only
// whether the error is ErrNotJSON, ErrNotObject or ErrBadControl.
func refParseControl(b []byte) (Control, error) {
	if !json.Valid(b) {
		return Control{}, ErrNotJSON
	}
	if firstByte(b) != '{' {
		return Control{}, ErrNotObject
	}
	var m map[string]json.RawMessage
	if err := json.Unmarshal(b, &m); err != nil {
		panic(fmt.Sprintf("reference: unmarshal valid object: %v", err))
	}
	get := func(k string) (json.RawMessage, bool) {
		raw, ok := m[k]
		if !ok || string(raw) == "null" {
			return nil, false
		}
		return raw, true
	}
	str := func(k string) (string, bool, bool) { // value, present, is a string
		raw, ok := get(k)
		if !ok {
			return "", false, false
		}
		if raw[0] != '"' {
			return "", true, false
		}
		var s string
		if err := json.Unmarshal(raw, &s); err != nil {
			panic(err)
		}
		return s, true, true
	}
	var c Control
	c.Type, _, _ = str("type")
	switch c.Type {
	case TypeDisconnect:
		tok, _, _ := str("token")
		if raw, _ := get("token"); raw == nil || string(raw) == `""` || raw[0] != '"' {
			return Control{}, ErrBadControl
		}
		c.Token = tok
		if raw, ok := get("connection"); ok {
			if raw[0] != '"' || string(raw) == `""` {
				return Control{}, ErrBadControl
			}
			c.Connection, _, _ = str("connection")
		}
		if raw, ok := get("code"); ok {
			if !isNumberStart(raw) {
				return Control{}, ErrBadControl
			}
			c.CodeSet = true
			var n int64
			if err := json.Unmarshal(raw, &n); err == nil && n >= -999999999 && n <= 999999999 && !bytes.ContainsAny(raw, ".eE") {
				c.Code = int(n)
			}
		}
		if r, ok, isStr := str("reason"); ok {
			if !isStr {
				return Control{}, ErrBadControl
			}
			c.Reason = r
		}
	case TypeBroadcast:
		raw, ok := get("event")
		if !ok || raw[0] != '"' || string(raw) == `""` {
			return Control{}, ErrBadControl
		}
		c.Event = raw
		if raw, ok := m["payload"]; ok {
			c.Payload = raw
		}
	default:
		return Control{}, ErrBadControl
	}
	return c, nil
}

// checkControlAgainstRef compares ParseControl(b) with refParseControl(b).
func checkControlAgainstRef(b []byte) error {
	got, err := ParseControl(b)
	want, wantErr := refParseControl(b)
	if wantErr != nil {
		if !errors.Is(err, wantErr) {
			return fmt.Errorf("ParseControl(%q) error = %v, want %v", b, err, wantErr)
		}
		return nil
	}
	if err != nil {
		return fmt.Errorf("ParseControl(%q) error = %v, want success", b, err)
	}
	switch {
	case got.Type != want.Type, got.Token != want.Token, got.Connection != want.Connection,
		got.Code != want.Code, got.CodeSet != want.CodeSet, got.Reason != want.Reason:
		return fmt.Errorf("ParseControl(%q) = %+v, want %+v", b, got, want)
	case !sameRaw(got.Event, want.Event), !sameRaw(got.Payload, want.Payload):
		return fmt.Errorf("ParseControl(%q) event %q payload %.200q, want %q %.200q", b, got.Event, got.Payload, want.Event, want.Payload)
	}
	if got.Type == TypeBroadcast {
		if out := AppendEvent(nil, got.Event, got.Payload); !json.Valid(out) {
			return fmt.Errorf("AppendEvent output %.200q is not valid JSON", out)
		}
	}
	return nil
}

// isSubsequence reports whether sub can be obtained from s by deleting bytes.
func isSubsequence(sub, s []byte) bool {
	for _, c := range sub {
		i := bytes.IndexByte(s, c)
		if i < 0 {
			return false
		}
		s = s[i+1:]
	}
	return true
}

// checkFrameAgainstRef compares ParseFrame(b) with refParseFrame(b).
func checkFrameAgainstRef(b []byte) error {
	got, err := ParseFrame(b)
	want := refParseFrame(b)
	if want.reason != "" {
		var fe *FrameError
		if !errors.As(err, &fe) {
			return fmt.Errorf("ParseFrame(%q) error = %v, want FrameError %q", b, err, want.reason)
		}
		if fe.Reason != want.reason {
			return fmt.Errorf("ParseFrame(%q) reason = %q, want %q", b, fe.Reason, want.reason)
		}
		if !sameRaw(fe.ID, want.errID) {
			return fmt.Errorf("ParseFrame(%q) FrameError.ID = %q, want %q", b, fe.ID, want.errID)
		}
		return nil
	}
	if err != nil {
		return fmt.Errorf("ParseFrame(%q) error = %v, want success", b, err)
	}
	return compareFrames(got, want.frame)
}

// compareFrames reports the first difference between got and want.
func compareFrames(got, want Frame) error {
	switch {
	case !sameRaw(got.ID, want.ID):
		return fmt.Errorf("ID = %q, want %q", got.ID, want.ID)
	case got.Method != want.Method:
		return fmt.Errorf("Method = %q, want %q", got.Method, want.Method)
	case !sameRaw(got.Payload, want.Payload):
		return fmt.Errorf("Payload = %.200q, want %.200q", got.Payload, want.Payload)
	case got.TraceParent != want.TraceParent:
		return fmt.Errorf("TraceParent = %q, want %q", got.TraceParent, want.TraceParent)
	case got.TraceState != want.TraceState:
		return fmt.Errorf("TraceState = %q, want %q", got.TraceState, want.TraceState)
	case !utf8.ValidString(got.Method):
		return fmt.Errorf("Method %q is not valid UTF-8", got.Method)
	}
	return nil
}

// checkInboundAgainstRef compares ParseInbound(b) and ParseMessage(b)
// with their references and checks the Body invariants.
func checkInboundAgainstRef(b []byte) error {
	if err := checkParsedAgainstRef(b, "ParseInbound", ParseInbound, refParseMessage(b, true)); err != nil {
		return err
	}
	return checkParsedAgainstRef(b, "ParseMessage", ParseMessage, refParseMessage(b, false))
}

func checkParsedAgainstRef(b []byte, name string, parse func([]byte) (Inbound, error), want refInbound) error {
	got, err := parse(b)
	if want.err != nil {
		if !errors.Is(err, want.err) {
			return fmt.Errorf("%s(%q) error = %v, want %v", name, b, err, want.err)
		}
		return nil
	}
	if err != nil {
		return fmt.Errorf("%s(%q) error = %v, want success", name, b, err)
	}
	switch {
	case got.Token != want.in.Token:
		return fmt.Errorf("%s: Token = %q, want %q", name, got.Token, want.in.Token)
	case got.Type != want.in.Type:
		return fmt.Errorf("%s: Type = %q, want %q", name, got.Type, want.in.Type)
	case got.Method != want.in.Method:
		return fmt.Errorf("%s: Method = %q, want %q", name, got.Method, want.in.Method)
	case !sameRaw(got.ID, want.in.ID):
		return fmt.Errorf("%s: ID = %q, want %q", name, got.ID, want.in.ID)
	case got.Connection != want.in.Connection || got.HasConnection != want.in.HasConnection:
		return fmt.Errorf("%s: Connection = %q (present %v), want %q (%v)", name, got.Connection, got.HasConnection, want.in.Connection, want.in.HasConnection)
	}
	return checkBody(b, got.Body, want.bodyMap)
}

// checkBody checks that body is a valid JSON object derived from the input
// by deleting bytes, that it has no top-level "token" member, and that its
// members are wantMap (nil to skip that comparison).
func checkBody(input, body []byte, wantMap map[string]json.RawMessage) error {
	if !json.Valid(body) {
		return fmt.Errorf("Body %.200q is not valid JSON", body)
	}
	if firstByte(body) != '{' {
		return fmt.Errorf("Body %.200q is not an object", body)
	}
	// Equal lengths only when nothing was removed; the check for a token
	// member below catches a token that should have been.
	if !isSubsequence(body, input) || len(body) > len(input) {
		return fmt.Errorf("Body %.200q is not the input %.200q with bytes removed", body, input)
	}
	var gotMap map[string]json.RawMessage
	if err := json.Unmarshal(body, &gotMap); err != nil {
		return fmt.Errorf("Body: %v", err)
	}
	if _, ok := gotMap["token"]; ok {
		return fmt.Errorf("Body %.200q still has a token member", body)
	}
	if wantMap == nil {
		return nil
	}
	if len(gotMap) != len(wantMap) {
		return fmt.Errorf("Body has %d members, want %d", len(gotMap), len(wantMap))
	}
	for k, v := range wantMap {
		if !bytes.Equal(gotMap[k], v) {
			return fmt.Errorf("Body member %q = %.200q, want %.200q", k, gotMap[k], v)
		}
	}
	return nil
}

// sameRaw reports whether a and b are both nil or hold the same bytes.
func sameRaw(a, b []byte) bool {
	return (a == nil) == (b == nil) && bytes.Equal(a, b)
}

// checkCall checks that AppendCall(f, token) is valid JSON holding exactly
// f's raw id and payload, its method and token.
func checkCall(f *Frame, token string) error {
	out := AppendCall(nil, f, token)
	if !json.Valid(out) {
		return fmt.Errorf("AppendCall output %.200q is not valid JSON", out)
	}
	var m map[string]json.RawMessage
	if err := json.Unmarshal(out, &m); err != nil {
		return err
	}
	want := 2
	if f.ID != nil {
		want++
	}
	if f.Payload != nil {
		want++
	}
	if len(m) != want {
		return fmt.Errorf("AppendCall output %.200q has %d members, want %d", out, len(m), want)
	}
	if rawID, ok := m["id"]; (f.ID != nil) != ok || !bytes.Equal(rawID, f.ID) {
		return fmt.Errorf("AppendCall id = %q, want %q", rawID, f.ID)
	}
	if rawPayload, ok := m["payload"]; (f.Payload != nil) != ok || !bytes.Equal(rawPayload, f.Payload) {
		return fmt.Errorf("AppendCall payload = %.200q, want %.200q", rawPayload, f.Payload)
	}
	var method, tok string
	if err := json.Unmarshal(m["method"], &method); err != nil {
		return err
	}
	if err := json.Unmarshal(m["token"], &tok); err != nil {
		return err
	}
	if method != string([]rune(f.Method)) {
		return fmt.Errorf("AppendCall method = %q, want %q", method, f.Method)
	}
	if tok != string([]rune(token)) {
		return fmt.Errorf("AppendCall token = %q, want %q", tok, token)
	}
	return nil
}

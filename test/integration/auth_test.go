package integration

import (
	"crypto/rand"
	"crypto/rsa"
	"encoding/json"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/MicahParks/jwkset"
	"github.com/golang-jwt/jwt/v5"
	amqp "github.com/rabbitmq/amqp091-go"

	h "github.com/piped-dev/piped/test/harness"
)

// jwtSecret is the HS256 secret of the jwt-mode nodes (32 bytes).
const jwtSecret = "integration-secret-0123456789abc"

// jwks is a JWKS endpoint on the loopback whose keys the test changes.
type jwks struct {
	*httptest.Server
	mu   sync.Mutex
	keys []jwkset.JWKMarshal
}

func newJWKS(t *testing.T) *jwks {
	j := &jwks{}
	j.Server = httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		j.mu.Lock()
		defer j.mu.Unlock()
		w.Header().Set("Content-Type", "application/json")
		_ = json.NewEncoder(w).Encode(jwkset.JWKSMarshal{Keys: j.keys})
	}))
	t.Cleanup(j.Close)
	return j
}

// serve makes the endpoint serve the public halves of keys, by kid.
func (j *jwks) serve(t *testing.T, keys map[string]*rsa.PrivateKey) {
	t.Helper()
	var out []jwkset.JWKMarshal
	for kid, k := range keys {
		jwk, err := jwkset.NewJWKFromKey(&k.PublicKey, jwkset.JWKOptions{Metadata: jwkset.JWKMetadataOptions{KID: kid, ALG: jwkset.AlgRS256, USE: jwkset.UseSig}})
		if err != nil {
			t.Fatal(err)
		}
		out = append(out, jwk.Marshal())
	}
	j.mu.Lock()
	j.keys = out
	j.mu.Unlock()
}

func rsaKey(t *testing.T) *rsa.PrivateKey {
	t.Helper()
	k, err := rsa.GenerateKey(rand.Reader, 2048)
	if err != nil {
		t.Fatal(err)
	}
	return k
}

// signJWT signs claims (sub, exp in from now, plus extra) with HS256 and
// jwtSecret, or RS256 and key with kid when key is set.
func signJWT(t *testing.T, sub string, exp time.Duration, key *rsa.PrivateKey, kid string) string {
	t.Helper()
	c := jwt.MapClaims{"sub": sub, "exp": time.Now().Add(exp).Unix(), "iat": time.Now().Unix()}
	var (
		s   string
		err error
	)
	if key == nil {
		s, err = jwt.NewWithClaims(jwt.SigningMethodHS256, c).SignedString([]byte(jwtSecret))
	} else {
		tok := jwt.NewWithClaims(jwt.SigningMethodRS256, c)
		tok.Header["kid"] = kid
		s, err = tok.SignedString(key)
	}
	if err != nil {
		t.Fatal(err)
	}
	return s
}

// startJWTNode starts a node in auth mode "jwt" with the HS256 secret and
// the JWKS at j, refreshed every second, logging at debug level (so that
// the refusals are logged too).
func startJWTNode(t *testing.T, j *jwks, env ...string) *h.Node {
	t.Helper()
	return h.StartNode(t, h.WithEnv(append([]string{
		"PIPED_AUTH_MODE=jwt",
		"PIPED_AUTH_JWT_SECRET=" + jwtSecret,
		"PIPED_AUTH_JWKS_URL=" + j.URL + "/jwks",
		"PIPED_AUTH_JWKS_REFRESH=1s",
		"PIPED_WS_TOKEN_MAX_LENGTH=4096", // until jwt mode defaults to it
		"PIPED_LOG_LEVEL=debug",
	}, env...)...))
}

// assertNoRawTokens fails when the node's log holds any of the tokens or the secret.
func assertNoRawTokens(t *testing.T, n *h.Node, tokens ...string) {
	t.Helper()
	logs := n.Logs()
	for _, tok := range append(tokens, jwtSecret) {
		if strings.Contains(logs, tok) {
			t.Errorf("the node's log contains %.40s…:\n%s", tok, logs)
		}
	}
}

// With a valid JWT the connection's address is its sub: the call reaches
// the backend with "token": sub and header x-piped-subject, the answer
// through reply_to and an event to the sub reach the client, and the raw
// JWT is nowhere in the message or the log.
func TestJWTValid(t *testing.T) {
	t.Parallel()
	key := rsaKey(t)
	j := newJWKS(t)
	j.serve(t, map[string]*rsa.PrivateKey{"k1": key})
	n := startJWTNode(t, j)
	ch := h.Channel(t)
	calls, err := ch.Consume("queue-out-"+n.ID, "", true, true, false, false, nil)
	if err != nil {
		t.Fatal(err)
	}
	for _, tc := range []struct{ name, token, sub string }{
		{"HS256", signJWT(t, "alice", time.Hour, nil, ""), "alice"},
		{"RS256 from the JWKS", signJWT(t, "bob", time.Hour, key, "k1"), "bob"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			c := h.Dial(t, n, tc.token)
			c.Send(t, `{"id":1,"method":"whoami","payload":{"x":1}}`)
			var d amqp.Delivery
			select {
			case d = <-calls:
			case <-time.After(wait):
				t.Fatal("no call reached queue-out")
			}
			var body map[string]json.RawMessage
			if err := json.Unmarshal(d.Body, &body); err != nil {
				t.Fatalf("call body %s: %v", d.Body, err)
			}
			if got := string(body["token"]); got != `"`+tc.sub+`"` {
				t.Errorf("call token %s, want %q", got, tc.sub)
			}
			if got := d.Headers["x-piped-subject"]; got != tc.sub {
				t.Errorf("header x-piped-subject %v, want %q", got, tc.sub)
			}
			for k, v := range d.Headers {
				if s, ok := v.(string); ok && strings.Contains(s, tc.token) {
					t.Errorf("header %s holds the raw JWT", k)
				}
			}
			if strings.Contains(string(d.Body), tc.token) {
				t.Errorf("the call holds the raw JWT: %s", d.Body)
			}
			h.Publish(t, "", d.ReplyTo, amqp.Publishing{CorrelationId: d.CorrelationId,
				Body: []byte(`{"type":"result","token":"` + tc.sub + `","id":1,"payload":{"you":"` + tc.sub + `"}}`)})
			if got, want := string(c.Next(t, wait)), `{"type":"result","id":1,"payload":{"you":"`+tc.sub+`"}}`; got != want {
				t.Errorf("answer %s, want %s", got, want)
			}
			h.Publish(t, "exchange-in-"+n.ID, "", amqp.Publishing{Body: []byte(`{"type":"event","token":"` + tc.sub + `","event":"hello"}`)})
			if got, want := string(c.Next(t, wait)), `{"type":"event","event":"hello"}`; got != want {
				t.Errorf("event %s, want %s", got, want)
			}
			assertNoRawTokens(t, n, tc.token)
		})
	}
}

// Forged, expired, garbage and sub-less tokens are refused with HTTP 401
// before the upgrade, counted, and logged without the token.
func TestJWTRefused(t *testing.T) {
	t.Parallel()
	key, other := rsaKey(t), rsaKey(t)
	j := newJWKS(t)
	j.serve(t, map[string]*rsa.PrivateKey{"k1": key})
	n := startJWTNode(t, j)
	forgedHS, _ := jwt.NewWithClaims(jwt.SigningMethodHS256, jwt.MapClaims{"sub": "alice", "exp": time.Now().Add(time.Hour).Unix()}).SignedString([]byte("not-the-secret-not-the-secret-xx"))
	noSub, _ := jwt.NewWithClaims(jwt.SigningMethodHS256, jwt.MapClaims{"exp": time.Now().Add(time.Hour).Unix()}).SignedString([]byte(jwtSecret))
	noExp, _ := jwt.NewWithClaims(jwt.SigningMethodHS256, jwt.MapClaims{"sub": "alice"}).SignedString([]byte(jwtSecret))
	none, _ := jwt.NewWithClaims(jwt.SigningMethodNone, jwt.MapClaims{"sub": "alice", "exp": time.Now().Add(time.Hour).Unix()}).SignedString(jwt.UnsafeAllowNoneSignatureType)
	badSub, _ := jwt.NewWithClaims(jwt.SigningMethodHS256, jwt.MapClaims{"sub": "a b/c", "exp": time.Now().Add(time.Hour).Unix()}).SignedString([]byte(jwtSecret))
	cases := []struct{ name, token string }{
		{"forged HS256", forgedHS},
		{"forged RS256", signJWT(t, "alice", time.Hour, other, "k1")},
		{"expired", signJWT(t, "alice", -time.Minute, nil, "")},
		{"no exp", noExp},
		{"alg none", none},
		{"no sub", noSub},
		{"sub not an address", badSub},
		{"garbage", "garbage"},
		{"garbage with dots", "eyJhbGciOiJIUzI1NiJ9.e30.c2ln"},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			ws, resp, err := h.RawDialer{}.Dial(n, tc.token)
			if ws != nil {
				ws.Close()
				t.Fatal("the upgrade succeeded")
			}
			if resp == nil || resp.StatusCode != http.StatusUnauthorized {
				t.Fatalf("dial: %v (%v), want HTTP 401", err, resp)
			}
		})
	}
	if got := n.Metric(t, `piped_upgrades_refused_total{reason="auth"}`); got != float64(len(cases)) {
		t.Errorf(`piped_upgrades_refused_total{reason="auth"} = %v, want %d`, got, len(cases))
	}
	// The refusal's body, from a plain request.
	resp, err := http.Get(n.URL("/api/garbage"))
	if err != nil {
		t.Fatal(err)
	}
	var body map[string]string
	_ = json.NewDecoder(resp.Body).Decode(&body)
	resp.Body.Close()
	if resp.StatusCode != http.StatusUnauthorized || body["error"] != "invalid token" {
		t.Errorf("GET /api/garbage: %d %v, want 401 {\"error\":\"invalid token\"}", resp.StatusCode, body)
	}
	h.Eventually(t, wait, "the refusals logged", func() bool { return strings.Count(n.Logs(), "upgrade refused: invalid token") >= len(cases) })
	var tokens []string
	for _, tc := range cases {
		tokens = append(tokens, tc.token)
	}
	assertNoRawTokens(t, n, tokens...)
}

// A connection whose JWT expires while it is open is closed with 4003
// token_expired (at exp plus auth.leeway); until then it works.
func TestJWTExpiresWhileConnected(t *testing.T) {
	t.Parallel()
	j := newJWKS(t)
	n := startJWTNode(t, j, "PIPED_AUTH_LEEWAY=1s")
	tok := signJWT(t, h.UniqueID("sub"), 3*time.Second, nil, "")
	c := h.Dial(t, n, tok)
	c.Send(t, `{"method":"ping"}`)
	if got := string(c.Next(t, wait)); got != `{"type":"event","event":"pong"}` {
		t.Fatalf("got %s", got)
	}
	if code := c.CloseCode(t, 15*time.Second); code != 4003 {
		t.Fatalf("close code %d (%v), want 4003", code, c.Err())
	}
	if !strings.Contains(c.Err().Error(), "token_expired") {
		t.Errorf("close reason: %v, want token_expired", c.Err())
	}
	h.Eventually(t, wait, "the disconnect counted", func() bool {
		return n.Metric(t, `piped_disconnects_total{reason="token_expired"}`) == 1
	})
	assertNoRawTokens(t, n, tok)
}

// A key the JWKS starts serving after the node started is accepted after
// the next refresh (auth.jwks_refresh), without a restart.
func TestJWKSRotation(t *testing.T) {
	t.Parallel()
	k1, k2 := rsaKey(t), rsaKey(t)
	j := newJWKS(t)
	j.serve(t, map[string]*rsa.PrivateKey{"k1": k1})
	n := startJWTNode(t, j)
	tok2 := signJWT(t, "carol", time.Hour, k2, "k2")
	if code, _ := h.DialStatus(n, tok2, nil); code != http.StatusUnauthorized {
		t.Fatalf("key 2 before it is served: HTTP %d, want 401", code)
	}
	j.serve(t, map[string]*rsa.PrivateKey{"k1": k1, "k2": k2})
	h.Eventually(t, wait, "key 2 accepted after a refresh", func() bool {
		code, _ := h.DialStatus(n, tok2, nil)
		return code == http.StatusSwitchingProtocols
	})
	c := h.Dial(t, n, signJWT(t, "dave", time.Hour, k1, "k1"))
	c.Send(t, `{"method":"ping"}`)
	c.Next(t, wait)
	assertNoRawTokens(t, n, tok2)
}

// A node whose JWKS cannot be fetched at start does not start: it exits
// with 1 and says why.
func TestJWKSUnreachableAtStart(t *testing.T) {
	t.Parallel()
	j := newJWKS(t)
	url := j.URL + "/jwks"
	j.Close()
	n := h.LaunchNode(t, h.WithEnv("PIPED_AUTH_MODE=jwt", "PIPED_AUTH_JWKS_URL="+url))
	if code := n.Wait(t, 30*time.Second); code != 1 {
		t.Fatalf("exit code %d, want 1", code)
	}
	if logs := n.Logs(); !strings.Contains(logs, "JWKS") || !strings.Contains(logs, url) || !strings.Contains(logs, "connection refused") {
		t.Errorf("the log does not say the JWKS at %s could not be fetched:\n%s", url, logs)
	}
}

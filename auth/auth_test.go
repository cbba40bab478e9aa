package auth

import (
	"bytes"
	"context"
	"crypto/ecdsa"
	"crypto/ed25519"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/rsa"
	"crypto/x509"
	"encoding/json"
	"encoding/pem"
	"errors"
	"io"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/MicahParks/jwkset"
	"github.com/golang-jwt/jwt/v5"
	"go.uber.org/goleak"

	"github.com/piped-dev/piped/config"
)

func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

const testSecret = "0123456789abcdef0123456789abcdef" // 32 bytes

// testKeys are generated once per run: RSA generation is slow under -race.
var testKeys = sync.OnceValue(func() (k struct {
	rsa, rsa2, rsaOther *rsa.PrivateKey
	ec, ecOther         *ecdsa.PrivateKey
}) {
	gen := func() *rsa.PrivateKey {
		key, err := rsa.GenerateKey(rand.Reader, 2048)
		if err != nil {
			panic(err)
		}
		return key
	}
	genEC := func() *ecdsa.PrivateKey {
		key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
		if err != nil {
			panic(err)
		}
		return key
	}
	k.rsa, k.rsa2, k.rsaOther = gen(), gen(), gen()
	k.ec, k.ecOther = genEC(), genEC()
	return k
})

func pemOf(t testing.TB, pub any) string {
	t.Helper()
	der, err := x509.MarshalPKIXPublicKey(pub)
	if err != nil {
		t.Fatal(err)
	}
	return string(pem.EncodeToMemory(&pem.Block{Type: "PUBLIC KEY", Bytes: der}))
}

func discard() *slog.Logger { return slog.New(slog.NewTextHandler(io.Discard, nil)) }

// claims returns valid claims for sub, expiring in an hour; tweak changes them.
func claims(sub string, tweak func(jwt.MapClaims)) jwt.MapClaims {
	now := time.Now()
	c := jwt.MapClaims{"sub": sub, "exp": now.Add(time.Hour).Unix(), "iat": now.Unix(), "iss": "https://issuer.test", "aud": "piped"}
	if tweak != nil {
		tweak(c)
	}
	return c
}

func sign(t testing.TB, m jwt.SigningMethod, key any, c jwt.MapClaims, kid string) string {
	t.Helper()
	tok := jwt.NewWithClaims(m, c)
	if kid != "" {
		tok.Header["kid"] = kid
	}
	s, err := tok.SignedString(key)
	if err != nil {
		t.Fatalf("sign %s: %v", m.Alg(), err)
	}
	return s
}

func newJWT(t testing.TB, cfg config.Auth) *JWT {
	t.Helper()
	if cfg.Mode == "" {
		cfg.Mode = "jwt"
	}
	v, err := New(context.Background(), cfg, discard())
	if err != nil {
		t.Fatalf("New: %v", err)
	}
	t.Cleanup(func() { _ = v.Close() })
	return v
}

// Every claim check and every kind of key, against a verifier with a
// secret, an RSA and an ECDSA key, an issuer and an audience.
func TestVerify(t *testing.T) {
	k := testKeys()
	v := newJWT(t, config.Auth{
		JWTSecret:     testSecret,
		JWTPublicKeys: []string{pemOf(t, &k.rsa.PublicKey), pemOf(t, &k.ec.PublicKey)},
		Issuer:        "https://issuer.test",
		Audience:      "piped",
		Leeway:        5 * time.Second,
	})
	rsaPEM := []byte(pemOf(t, &k.rsa.PublicKey))
	valid := func(m jwt.SigningMethod, key any) string { return sign(t, m, key, claims("user-1", nil), "") }
	tamper := func(tok string) string { // another payload under the same signature
		parts := strings.Split(tok, ".")
		other := strings.Split(sign(t, jwt.SigningMethodHS256, []byte(testSecret), claims("admin", nil), ""), ".")
		return parts[0] + "." + other[1] + "." + parts[2]
	}
	for _, tc := range []struct {
		name  string
		token string
		want  string // subject; "" = refused
		why   error  // wrapped by the refusal, when set
	}{
		{"HS256", valid(jwt.SigningMethodHS256, []byte(testSecret)), "user-1", nil},
		{"RS256", valid(jwt.SigningMethodRS256, k.rsa), "user-1", nil},
		{"ES256", valid(jwt.SigningMethodES256, k.ec), "user-1", nil},
		{"forged HS256 (other secret)", valid(jwt.SigningMethodHS256, []byte("another-secret-of-thirty-two-byt")), "", jwt.ErrTokenSignatureInvalid},
		{"forged RS256 (other key)", valid(jwt.SigningMethodRS256, k.rsaOther), "", jwt.ErrTokenSignatureInvalid},
		{"forged ES256 (other key)", valid(jwt.SigningMethodES256, k.ecOther), "", jwt.ErrTokenSignatureInvalid},
		{"tampered RS256 payload", tamper(valid(jwt.SigningMethodRS256, k.rsa)), "", jwt.ErrTokenSignatureInvalid},
		{"alg confusion: HS256 keyed with the RSA public key", valid(jwt.SigningMethodHS256, rsaPEM), "", jwt.ErrTokenSignatureInvalid},
		{"wrong alg RS384", valid(jwt.SigningMethodRS384, k.rsa), "", jwt.ErrTokenSignatureInvalid},
		{"wrong alg PS256", valid(jwt.SigningMethodPS256, k.rsa), "", jwt.ErrTokenSignatureInvalid},
		{"wrong alg none", valid(jwt.SigningMethodNone, jwt.UnsafeAllowNoneSignatureType), "", jwt.ErrTokenSignatureInvalid},
		{"ES256 header on an RSA signature", func() string {
			parts := strings.Split(valid(jwt.SigningMethodRS256, k.rsa), ".")
			h := strings.Split(valid(jwt.SigningMethodES256, k.ec), ".")[0]
			return h + "." + parts[1] + "." + parts[2]
		}(), "", nil},
		{"expired", sign(t, jwt.SigningMethodHS256, []byte(testSecret), claims("user-1", func(c jwt.MapClaims) { c["exp"] = time.Now().Add(-time.Minute).Unix() }), ""), "", jwt.ErrTokenExpired},
		{"expired within the leeway", sign(t, jwt.SigningMethodHS256, []byte(testSecret), claims("user-1", func(c jwt.MapClaims) { c["exp"] = time.Now().Add(-2 * time.Second).Unix() }), ""), "user-1", nil},
		{"no exp", sign(t, jwt.SigningMethodHS256, []byte(testSecret), claims("user-1", func(c jwt.MapClaims) { delete(c, "exp") }), ""), "", jwt.ErrTokenRequiredClaimMissing},
		{"nbf in the future", sign(t, jwt.SigningMethodHS256, []byte(testSecret), claims("user-1", func(c jwt.MapClaims) { c["nbf"] = time.Now().Add(time.Minute).Unix() }), ""), "", jwt.ErrTokenNotValidYet},
		{"nbf in the past", sign(t, jwt.SigningMethodHS256, []byte(testSecret), claims("user-1", func(c jwt.MapClaims) { c["nbf"] = time.Now().Add(-time.Minute).Unix() }), ""), "user-1", nil},
		{"wrong iss", sign(t, jwt.SigningMethodHS256, []byte(testSecret), claims("user-1", func(c jwt.MapClaims) { c["iss"] = "https://evil.test" }), ""), "", jwt.ErrTokenInvalidIssuer},
		{"no iss", sign(t, jwt.SigningMethodHS256, []byte(testSecret), claims("user-1", func(c jwt.MapClaims) { delete(c, "iss") }), ""), "", jwt.ErrTokenRequiredClaimMissing},
		{"wrong aud", sign(t, jwt.SigningMethodHS256, []byte(testSecret), claims("user-1", func(c jwt.MapClaims) { c["aud"] = "other" }), ""), "", jwt.ErrTokenInvalidAudience},
		{"aud list with ours", sign(t, jwt.SigningMethodHS256, []byte(testSecret), claims("user-1", func(c jwt.MapClaims) { c["aud"] = []string{"other", "piped"} }), ""), "user-1", nil},
		{"no sub", sign(t, jwt.SigningMethodHS256, []byte(testSecret), claims("", func(c jwt.MapClaims) { delete(c, "sub") }), ""), "", ErrNoSubject},
		{"empty sub", sign(t, jwt.SigningMethodHS256, []byte(testSecret), claims("", nil), ""), "", ErrNoSubject},
		{"sub not a string", sign(t, jwt.SigningMethodHS256, []byte(testSecret), claims("", func(c jwt.MapClaims) { c["sub"] = 42 }), ""), "", jwt.ErrTokenMalformed},
		{"exp not a number", sign(t, jwt.SigningMethodHS256, []byte(testSecret), claims("u", func(c jwt.MapClaims) { c["exp"] = "tomorrow" }), ""), "", jwt.ErrTokenMalformed},
		{"garbage", "not-a-jwt", "", jwt.ErrTokenMalformed},
		{"garbage with dots", "a.b.c", "", jwt.ErrTokenMalformed},
		{"empty", "", "", jwt.ErrTokenMalformed},
		{"header only", strings.Split(valid(jwt.SigningMethodHS256, []byte(testSecret)), ".")[0], "", jwt.ErrTokenMalformed},
		{"no signature", func() string {
			p := strings.Split(valid(jwt.SigningMethodHS256, []byte(testSecret)), ".")
			return p[0] + "." + p[1]
		}(), "", jwt.ErrTokenMalformed},
		{"empty signature", func() string {
			p := strings.Split(valid(jwt.SigningMethodHS256, []byte(testSecret)), ".")
			return p[0] + "." + p[1] + "."
		}(), "", jwt.ErrTokenSignatureInvalid},
	} {
		t.Run(tc.name, func(t *testing.T) {
			id, err := v.Verify(context.Background(), tc.token)
			if tc.want != "" {
				if err != nil || id.Subject != tc.want {
					t.Fatalf("Verify: %+v, %v; want subject %q", id, err, tc.want)
				}
				return
			}
			if err == nil {
				t.Fatalf("Verify accepted it: %+v", id)
			}
			if !errors.Is(err, ErrInvalidToken) {
				t.Errorf("error %v does not wrap ErrInvalidToken", err)
			}
			if tc.why != nil && !errors.Is(err, tc.why) {
				t.Errorf("error %v, want one wrapping %v", err, tc.why)
			}
			if tc.token != "" && strings.Contains(err.Error(), tc.token) {
				t.Errorf("the error quotes the token: %v", err)
			}
		})
	}
}

// Expires is exp plus the leeway: the gateway closes the connection then.
func TestVerifyExpires(t *testing.T) {
	v := newJWT(t, config.Auth{JWTSecret: testSecret, Leeway: 3 * time.Second})
	exp := time.Now().Add(time.Minute).Truncate(time.Second)
	id, err := v.Verify(context.Background(), sign(t, jwt.SigningMethodHS256, []byte(testSecret), jwt.MapClaims{"sub": "s", "exp": exp.Unix()}, ""))
	if err != nil {
		t.Fatal(err)
	}
	if want := exp.Add(3 * time.Second); !id.Expires.Equal(want) {
		t.Errorf("Expires %v, want %v", id.Expires, want)
	}
}

// Only the algorithms of the configured keys are accepted: without a
// secret, an HS256 token keyed with the public key's PEM (the classic
// confusion attack) is refused before any key is looked at.
func TestValidMethods(t *testing.T) {
	k := testKeys()
	rsaPEM := pemOf(t, &k.rsa.PublicKey)
	for _, tc := range []struct {
		name string
		cfg  config.Auth
		want []string
	}{
		{"secret", config.Auth{JWTSecret: testSecret}, []string{"HS256"}},
		{"rsa", config.Auth{JWTPublicKeys: []string{rsaPEM}}, []string{"RS256"}},
		{"ec", config.Auth{JWTPublicKeys: []string{pemOf(t, &k.ec.PublicKey)}}, []string{"ES256"}},
		{"all", config.Auth{JWTSecret: testSecret, JWTPublicKeys: []string{rsaPEM + pemOf(t, &k.ec.PublicKey)}}, []string{"HS256", "RS256", "ES256"}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			v := newJWT(t, tc.cfg)
			if got := v.methods(); strings.Join(got, ",") != strings.Join(tc.want, ",") {
				t.Errorf("methods %v, want %v", got, tc.want)
			}
		})
	}
	v := newJWT(t, config.Auth{JWTPublicKeys: []string{rsaPEM}})
	forged := sign(t, jwt.SigningMethodHS256, []byte(rsaPEM), claims("admin", nil), "")
	if _, err := v.Verify(context.Background(), forged); !errors.Is(err, jwt.ErrTokenSignatureInvalid) {
		t.Errorf("HS256 keyed with the RSA PEM: %v, want a signature error", err)
	}
	if _, err := v.Verify(context.Background(), sign(t, jwt.SigningMethodES256, k.ec, claims("u", nil), "")); err == nil {
		t.Error("an ES256 token verified without an EC key")
	}
}

func TestNewErrors(t *testing.T) {
	k := testKeys()
	small, err := rsa.GenerateKey(rand.Reader, 1024)
	if err != nil {
		t.Fatal(err)
	}
	p384, _ := ecdsa.GenerateKey(elliptic.P384(), rand.Reader)
	edPub, _, _ := ed25519.GenerateKey(rand.Reader)
	down := httptest.NewServer(http.NotFoundHandler())
	down.Close()
	broken := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) { io.WriteString(w, "{not json") }))
	defer broken.Close()
	failing := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) { http.Error(w, "no", 500) }))
	defer failing.Close()
	huge := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		io.WriteString(w, `{"keys":[],"pad":"`)
		for range 4 << 10 { // 4 MiB, never held: the fetch fails at 1 MiB
			if _, err := w.Write(bytes.Repeat([]byte("x"), 1024)); err != nil {
				return
			}
		}
		io.WriteString(w, `"}`)
	}))
	defer huge.Close()
	for _, tc := range []struct {
		name string
		cfg  config.Auth
		want error
		text string
	}{
		{"mode none", config.Auth{Mode: "none", JWTSecret: testSecret}, ErrMode, ""},
		{"no keys", config.Auth{}, ErrNoKeys, ""},
		{"weak secret", config.Auth{JWTSecret: "short"}, ErrWeakSecret, ""},
		{"not PEM", config.Auth{JWTPublicKeys: []string{pemOf(t, &k.rsa.PublicKey), "hello"}}, ErrBadKey, "auth.jwt_public_keys[1]"},
		{"private key PEM", config.Auth{JWTPublicKeys: []string{string(pem.EncodeToMemory(&pem.Block{Type: "RSA PRIVATE KEY", Bytes: x509.MarshalPKCS1PrivateKey(k.rsa)}))}}, ErrBadKey, "not a public key"},
		{"small RSA", config.Auth{JWTPublicKeys: []string{pemOf(t, &small.PublicKey)}}, ErrBadKey, "1024 bits"},
		{"P-384", config.Auth{JWTPublicKeys: []string{pemOf(t, &p384.PublicKey)}}, ErrBadKey, "P-256"},
		{"Ed25519", config.Auth{JWTPublicKeys: []string{pemOf(t, edPub)}}, ErrBadKey, "not supported"},
		{"JWKS unreachable", config.Auth{JWKSURL: down.URL + "/jwks"}, ErrJWKS, "connection refused"},
		{"JWKS not JSON", config.Auth{JWKSURL: broken.URL}, ErrJWKS, ""},
		{"JWKS 500", config.Auth{JWKSURL: failing.URL}, ErrJWKS, "500"},
		{"JWKS over 1 MiB", config.Auth{JWKSURL: huge.URL}, ErrJWKS, "larger than 1 MiB"},
		{"negative refresh", config.Auth{JWTSecret: testSecret, JWKSRefresh: -time.Second}, nil, "negative"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			if tc.cfg.Mode == "" {
				tc.cfg.Mode = "jwt"
			}
			v, err := New(context.Background(), tc.cfg, discard())
			if err == nil {
				v.Close()
				t.Fatal("New accepted it")
			}
			if tc.want != nil && !errors.Is(err, tc.want) {
				t.Errorf("error %v, want %v", err, tc.want)
			}
			if !strings.Contains(err.Error(), tc.text) {
				t.Errorf("error %q does not say %q", err, tc.text)
			}
			if strings.Contains(err.Error(), testSecret) {
				t.Errorf("error shows the secret: %v", err)
			}
		})
	}
}

// The PEM forms: PKIX, PKCS #1 and a certificate; several blocks in one entry.
func TestPublicKeyForms(t *testing.T) {
	k := testKeys()
	pkcs1 := string(pem.EncodeToMemory(&pem.Block{Type: "RSA PUBLIC KEY", Bytes: x509.MarshalPKCS1PublicKey(&k.rsa2.PublicKey)}))
	tmpl := &x509.Certificate{SerialNumber: bigOne(), NotBefore: time.Now().Add(-time.Hour), NotAfter: time.Now().Add(time.Hour)}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &k.ecOther.PublicKey, k.ecOther)
	if err != nil {
		t.Fatal(err)
	}
	cert := string(pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der}))
	v := newJWT(t, config.Auth{JWTPublicKeys: []string{pemOf(t, &k.rsa.PublicKey) + "\n" + pkcs1, cert}})
	for name, tok := range map[string]string{
		"PKIX":        sign(t, jwt.SigningMethodRS256, k.rsa, claims("a", nil), ""),
		"PKCS1":       sign(t, jwt.SigningMethodRS256, k.rsa2, claims("b", nil), ""),
		"certificate": sign(t, jwt.SigningMethodES256, k.ecOther, claims("c", nil), ""),
	} {
		if _, err := v.Verify(context.Background(), tok); err != nil {
			t.Errorf("%s: %v", name, err)
		}
	}
}

// jwksServer serves a JWKS that the test can change, and counts requests.
type jwksServer struct {
	*httptest.Server
	mu       sync.Mutex
	keys     []jwkset.JWKMarshal
	status   int
	requests atomic.Int64
}

func newJWKSServer(t *testing.T) *jwksServer {
	s := &jwksServer{status: http.StatusOK}
	s.Server = httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		s.requests.Add(1)
		s.mu.Lock()
		defer s.mu.Unlock()
		if s.status != http.StatusOK {
			w.WriteHeader(s.status)
			return
		}
		_ = json.NewEncoder(w).Encode(jwkset.JWKSMarshal{Keys: s.keys})
	}))
	t.Cleanup(s.Close)
	return s
}

// serve replaces the served keys: kid → public key.
func (s *jwksServer) serve(t testing.TB, keys ...any) {
	t.Helper()
	var out []jwkset.JWKMarshal
	for i := 0; i < len(keys); i += 2 {
		kid, pub := keys[i].(string), keys[i+1]
		alg := jwkset.AlgRS256
		if _, ok := pub.(*ecdsa.PublicKey); ok {
			alg = jwkset.AlgES256
		}
		jwk, err := jwkset.NewJWKFromKey(pub, jwkset.JWKOptions{Metadata: jwkset.JWKMetadataOptions{KID: kid, ALG: alg, USE: jwkset.UseSig}})
		if err != nil {
			t.Fatal(err)
		}
		out = append(out, jwk.Marshal())
	}
	s.mu.Lock()
	s.keys, s.status = out, http.StatusOK
	s.mu.Unlock()
}

func (s *jwksServer) fail(status int) {
	s.mu.Lock()
	s.status = status
	s.mu.Unlock()
}

func eventually(t *testing.T, within time.Duration, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(within)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out after %v waiting for %s", within, what)
		}
		time.Sleep(10 * time.Millisecond)
	}
}

// A key that appears in the JWKS is accepted after the next refresh, one
// that disappears is refused then; a failed refresh keeps the keys; a
// token with an unknown kid never causes a fetch.
func TestJWKSRotation(t *testing.T) {
	k := testKeys()
	srv := newJWKSServer(t)
	srv.serve(t, "k1", &k.rsa.PublicKey, "e1", &k.ec.PublicKey)
	v := newJWT(t, config.Auth{JWKSURL: srv.URL + "/jwks", JWKSRefresh: 50 * time.Millisecond})
	ok := func(tok string) bool { _, err := v.Verify(context.Background(), tok); return err == nil }
	k1 := sign(t, jwt.SigningMethodRS256, k.rsa, claims("u1", nil), "k1")
	e1 := sign(t, jwt.SigningMethodES256, k.ec, claims("u1", nil), "e1")
	k2 := sign(t, jwt.SigningMethodRS256, k.rsa2, claims("u2", nil), "k2")
	noKID := sign(t, jwt.SigningMethodRS256, k.rsa, claims("u1", nil), "")
	k1AsK2 := sign(t, jwt.SigningMethodRS256, k.rsa, claims("u1", nil), "k2") // right key, wrong kid
	if !ok(k1) || !ok(e1) || !ok(noKID) {
		t.Fatalf("k1 %v, e1 %v, no kid %v: want all accepted", ok(k1), ok(e1), ok(noKID))
	}
	if ok(k2) {
		t.Fatal("k2 accepted before the JWKS holds it")
	}
	if ok(k1AsK2) {
		t.Fatal("a token naming kid k2 verified against k1")
	}

	srv.serve(t, "k1", &k.rsa.PublicKey, "k2", &k.rsa2.PublicKey)
	eventually(t, 5*time.Second, "k2 accepted after a refresh", func() bool { return ok(k2) })
	if !ok(k1) {
		t.Error("k1 refused while still served")
	}

	srv.serve(t, "k2", &k.rsa2.PublicKey)
	eventually(t, 5*time.Second, "k1 refused once the JWKS drops it", func() bool { return !ok(k1) })

	srv.fail(http.StatusInternalServerError)
	before := srv.requests.Load()
	eventually(t, 5*time.Second, "failed refreshes", func() bool { return srv.requests.Load() >= before+2 })
	if !ok(k2) {
		t.Error("a failed refresh dropped the keys")
	}
}

// Without a refresh, verification never fetches, not even for an unknown kid.
func TestJWKSNoFetchOnVerify(t *testing.T) {
	k := testKeys()
	srv := newJWKSServer(t)
	srv.serve(t, "k1", &k.rsa.PublicKey)
	v := newJWT(t, config.Auth{JWKSURL: srv.URL})
	if n := srv.requests.Load(); n != 1 {
		t.Fatalf("%d requests at start, want 1", n)
	}
	for _, tok := range []string{
		sign(t, jwt.SigningMethodRS256, k.rsa, claims("u", nil), "k1"),
		sign(t, jwt.SigningMethodRS256, k.rsa2, claims("u", nil), "unknown"),
		sign(t, jwt.SigningMethodES256, k.ec, claims("u", nil), ""),
	} {
		_, _ = v.Verify(context.Background(), tok)
	}
	if n := srv.requests.Load(); n != 1 {
		t.Errorf("%d requests after verifying, want still 1", n)
	}
}

// Close stops the refresh loop (goleak checks that it ended) and the
// server hears no more from the verifier.
func TestCloseStopsRefresh(t *testing.T) {
	k := testKeys()
	srv := newJWKSServer(t)
	srv.serve(t, "k1", &k.rsa.PublicKey)
	v, err := New(context.Background(), config.Auth{Mode: "jwt", JWKSURL: srv.URL, JWKSRefresh: 10 * time.Millisecond}, discard())
	if err != nil {
		t.Fatal(err)
	}
	eventually(t, 5*time.Second, "a refresh", func() bool { return srv.requests.Load() >= 2 })
	_ = v.Close()
	_ = v.Close()
	n := srv.requests.Load()
	time.Sleep(100 * time.Millisecond) // ten refresh periods
	// A request already on the wire at Close may still reach the handler.
	if got := srv.requests.Load(); got > n+1 {
		t.Errorf("%d requests after Close: the refresh goes on", got-n)
	}
	if _, err := v.Verify(context.Background(), sign(t, jwt.SigningMethodRS256, k.rsa, claims("u", nil), "k1")); err != nil {
		t.Errorf("Verify after Close: %v", err)
	}
}

// A refresh failure is logged at warn; the log names the URL and never
// holds a token or the secret.
func TestRefreshFailureLogged(t *testing.T) {
	k := testKeys()
	srv := newJWKSServer(t)
	srv.serve(t, "k1", &k.rsa.PublicKey)
	var buf lockedBuffer
	v, err := New(context.Background(), config.Auth{Mode: "jwt", JWTSecret: testSecret, JWKSURL: srv.URL, JWKSRefresh: 10 * time.Millisecond},
		slog.New(slog.NewTextHandler(&buf, &slog.HandlerOptions{Level: slog.LevelDebug})))
	if err != nil {
		t.Fatal(err)
	}
	defer v.Close()
	srv.fail(http.StatusBadGateway)
	eventually(t, 5*time.Second, "a warning", func() bool { return strings.Contains(buf.String(), "refreshing the JWKS failed") })
	if log := buf.String(); !strings.Contains(log, "502") || strings.Contains(log, testSecret) {
		t.Errorf("log:\n%s", log)
	}
}

type lockedBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (l *lockedBuffer) Write(p []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.Write(p)
}

func (l *lockedBuffer) String() string {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.String()
}

func TestInsecureJWKS(t *testing.T) {
	for _, tc := range []struct {
		url  string
		want bool
	}{
		{"https://keys.example/jwks", false},
		{"http://keys.example/jwks", true},
		{"HTTP://10.0.0.5/jwks", true},
		{"http://127.0.0.1:8080/jwks", false},
		{"http://[::1]/jwks", false},
		{"http://localhost/jwks", false},
	} {
		if got := insecureJWKS(tc.url); got != tc.want {
			t.Errorf("insecureJWKS(%q) = %v, want %v", tc.url, got, tc.want)
		}
	}
}

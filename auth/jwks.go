package auth

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"net/url"
	"strings"
	"sync/atomic"
	"time"

	"github.com/MicahParks/jwkset"
	"github.com/MicahParks/keyfunc/v3"
	"github.com/golang-jwt/jwt/v5"

	"github.com/piped-dev/piped/config"
)

// jwksTimeout bounds one fetch of the JWKS, at start and on every refresh.
const jwksTimeout = 10 * time.Second

// maxJWKSBytes bounds a JWKS response: a JWKS of 100 RSA-4096 keys is about
// 80 KB; a larger body fails the fetch (and a refresh keeps the old keys)
// instead of being held in memory.
const maxJWKSBytes = 1 << 20

// errJWKSTooLarge is the read error of a JWKS response over maxJWKSBytes.
var errJWKSTooLarge = errors.New("auth: the JWKS response is larger than 1 MiB")

// limitedTransport cuts every response body at maxJWKSBytes.
type limitedTransport struct{ next http.RoundTripper }

func (t limitedTransport) RoundTrip(req *http.Request) (*http.Response, error) {
	resp, err := t.next.RoundTrip(req)
	if err == nil {
		resp.Body = &limitedBody{ReadCloser: resp.Body, left: maxJWKSBytes}
	}
	return resp, err
}

// limitedBody fails once more than left bytes were read.
type limitedBody struct {
	io.ReadCloser
	left int64
}

func (b *limitedBody) Read(p []byte) (int, error) {
	if int64(len(p)) > b.left+1 {
		p = p[:b.left+1]
	}
	n, err := b.ReadCloser.Read(p)
	if b.left -= int64(n); b.left < 0 {
		return n, errJWKSTooLarge
	}
	return n, err
}

// insecureJWKS reports whether raw is a plain http:// URL to a host that is
// not this machine.
func insecureJWKS(raw string) bool {
	u, err := url.Parse(raw)
	if err != nil || !strings.EqualFold(u.Scheme, "http") {
		return false
	}
	h := u.Hostname()
	ip := net.ParseIP(h)
	return h != "localhost" && (ip == nil || !ip.IsLoopback())
}

// jwksCache holds the keys of a JWKS document. Verify reads them from
// memory only: fetching happens at start (fetch) and in the refresh loop
// (run), never on a connection's path. A failed refresh keeps the keys
// fetched before; a successful one replaces them all, so a key the issuer
// removed stops verifying (revocation).
type jwksCache struct {
	// Set at construction.
	url    string
	client *http.Client
	log    *slog.Logger

	cur atomic.Pointer[keyfunc.Keyfunc] // the keys of the last successful fetch
}

func newJWKSCache(url string, log *slog.Logger) *jwksCache {
	return &jwksCache{url: url, log: log,
		client: &http.Client{Timeout: jwksTimeout, Transport: limitedTransport{next: http.DefaultTransport}}}
}

// fetch downloads and parses the JWKS and, when that worked, makes its keys
// the current ones. It returns how many keys the document held.
func (c *jwksCache) fetch(ctx context.Context) (int, error) {
	ctx, cancel := context.WithTimeout(ctx, jwksTimeout)
	defer cancel()
	// Without a RefreshInterval the storage fetches once, here, and starts
	// no goroutine; the refresh loop is ours (run).
	store, err := jwkset.NewStorageFromHTTP(c.url, jwkset.HTTPClientStorageOptions{
		Client:      c.client,
		Ctx:         ctx,
		HTTPTimeout: jwksTimeout,
	})
	if err != nil {
		return 0, fmt.Errorf("%w: fetching %s: %w", ErrJWKS, config.RedactURL(c.url), err)
	}
	keys, err := store.KeyReadAll(ctx)
	if err != nil {
		return 0, fmt.Errorf("%w: reading %s: %w", ErrJWKS, config.RedactURL(c.url), err)
	}
	// A memory storage: looking a kid up never fetches (no refresh on an unknown kid).
	kf, err := keyfunc.New(keyfunc.Options{Storage: store})
	if err != nil {
		return 0, fmt.Errorf("%w: %s: %w", ErrJWKS, config.RedactURL(c.url), err)
	}
	c.cur.Store(&kf)
	return len(keys), nil
}

// run refreshes the keys every interval until ctx is done; its caller owns
// it and waits for it.
func (c *jwksCache) run(ctx context.Context, interval time.Duration) {
	t := time.NewTicker(interval)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
		n, err := c.fetch(ctx)
		switch {
		case ctx.Err() != nil:
			return
		case err != nil:
			c.log.Warn("refreshing the JWKS failed; keeping the keys fetched before", "error", err)
		case n == 0:
			c.log.Warn("the JWKS holds no keys: RS256 and ES256 tokens are refused until it does", "url", config.RedactURL(c.url))
		default:
			c.log.Debug("JWKS refreshed", "url", config.RedactURL(c.url), "keys", n)
		}
	}
}

// keys returns the current keys able to verify t: the one named by its kid,
// or, without a kid, every key of the kind its alg needs. found is false
// when the token names a kid the JWKS does not hold.
func (c *jwksCache) keys(ctx context.Context, t *jwt.Token, alg string, into []jwt.VerificationKey) (out []jwt.VerificationKey, found bool) {
	kf := c.cur.Load()
	if kf == nil {
		return into, false
	}
	key, err := (*kf).KeyfuncCtx(ctx)(t)
	if err != nil {
		return into, false
	}
	switch k := key.(type) {
	case jwt.VerificationKeySet:
		for _, kk := range k.Keys {
			if fitsAlg(kk, alg) {
				into = append(into, kk)
			}
		}
		return into, true
	default:
		if fitsAlg(k, alg) {
			return append(into, k), true
		}
		return into, false
	}
}

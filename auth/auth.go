// Package auth verifies the path tokens of /api/{token} for the gateway in
// auth mode "jwt": the token must be a JWT signed with HS256 (auth.jwt_secret),
// RS256 or ES256 (auth.jwt_public_keys, auth.jwks_url), unexpired, and its
// sub claim becomes the connection's address. *JWT is a gateway.Verifier;
// main wires it. See docs/auth.md.
package auth

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"sync"
	"time"

	"github.com/golang-jwt/jwt/v5"

	"github.com/piped-dev/piped/config"
	"github.com/piped-dev/piped/gateway"
)

// minSecretBytes is the shortest HS256 secret accepted: the size of the
// hash output (RFC 7518 section 3.2).
const minSecretBytes = 32

// maxLoggedKID bounds the part of a token's kid quoted in a refusal's reason.
const maxLoggedKID = 64

// JWT verifies JWTs. Verify may be called from any goroutine; it does no I/O.
// Close stops the JWKS refresh.
type JWT struct {
	// Set at construction.
	parser *jwt.Parser
	keys   staticKeys
	jwks   *jwksCache // nil without auth.jwks_url
	leeway time.Duration

	cancel    context.CancelFunc
	refresher sync.WaitGroup // the JWKS refresh loop
	closeOnce sync.Once
}

var _ gateway.Verifier = (*JWT)(nil)

// New returns a verifier for cfg (auth.mode must be "jwt"). With
// auth.jwks_url it fetches the JWKS before returning and fails when that
// does not work, so that a node never starts unable to verify tokens; then
// a goroutine refreshes the keys every auth.jwks_refresh (0: never) until
// Close is called or ctx is done. Errors name the key at fault.
func New(ctx context.Context, cfg config.Auth, log *slog.Logger) (*JWT, error) {
	if cfg.Mode != "jwt" {
		return nil, fmt.Errorf("%w (got %q)", ErrMode, cfg.Mode)
	}
	if cfg.JWTSecret == "" && len(cfg.JWTPublicKeys) == 0 && cfg.JWKSURL == "" {
		return nil, ErrNoKeys
	}
	if cfg.JWTSecret != "" && len(cfg.JWTSecret) < minSecretBytes {
		return nil, fmt.Errorf("%w (got %d)", ErrWeakSecret, len(cfg.JWTSecret))
	}
	if cfg.JWKSRefresh < 0 || cfg.Leeway < 0 {
		return nil, errors.New("auth: auth.jwks_refresh and auth.leeway must not be negative")
	}
	v := &JWT{leeway: cfg.Leeway, cancel: func() {}}
	if cfg.JWTSecret != "" {
		v.keys.secret = []byte(cfg.JWTSecret)
	}
	var err error
	if v.keys.rsa, v.keys.ec, err = parsePublicKeys(cfg.JWTPublicKeys); err != nil {
		return nil, err
	}
	if cfg.JWKSURL != "" {
		if insecureJWKS(cfg.JWKSURL) {
			log.Warn("auth.jwks_url is http:// to another host: whoever sits on the path can replace the keys and sign any token; use https://",
				"url", config.RedactURL(cfg.JWKSURL))
		}
		v.jwks = newJWKSCache(cfg.JWKSURL, log)
		n, err := v.jwks.fetch(ctx)
		if err != nil {
			return nil, err
		}
		if n == 0 {
			log.Warn("the JWKS holds no keys: RS256 and ES256 tokens are refused until it does", "url", config.RedactURL(cfg.JWKSURL))
		}
		if cfg.JWKSRefresh > 0 {
			rctx, cancel := context.WithCancel(ctx)
			v.cancel = cancel
			v.refresher.Add(1)
			go func() {
				defer v.refresher.Done()
				v.jwks.run(rctx, cfg.JWKSRefresh)
			}()
		}
	}
	opts := []jwt.ParserOption{
		jwt.WithValidMethods(v.methods()),
		jwt.WithExpirationRequired(),
		jwt.WithLeeway(cfg.Leeway),
	}
	if cfg.Issuer != "" {
		opts = append(opts, jwt.WithIssuer(cfg.Issuer))
	}
	if cfg.Audience != "" {
		opts = append(opts, jwt.WithAudience(cfg.Audience))
	}
	v.parser = jwt.NewParser(opts...)
	return v, nil
}

// methods lists the signing methods the configured keys can verify; the
// parser refuses any other alg before looking for a key.
func (v *JWT) methods() []string {
	var m []string
	if v.keys.secret != nil {
		m = append(m, algHS256)
	}
	if len(v.keys.rsa) > 0 || v.jwks != nil {
		m = append(m, algRS256)
	}
	if len(v.keys.ec) > 0 || v.jwks != nil {
		m = append(m, algES256)
	}
	return m
}

// Close stops the JWKS refresh and waits for it to end. It may be called
// more than once; Verify keeps working with the keys it has.
func (v *JWT) Close() error {
	v.closeOnce.Do(func() {
		v.cancel()
		v.refresher.Wait()
	})
	return nil
}

// Verify checks token's signature, exp (required), nbf, and iss and aud when
// configured, all with auth.leeway, and returns its sub as the Subject and
// exp plus the leeway as Expires. The error wraps ErrInvalidToken and says
// why without quoting the token.
func (v *JWT) Verify(ctx context.Context, token string) (gateway.Identity, error) {
	var claims jwt.RegisteredClaims
	if _, err := v.parser.ParseWithClaims(token, &claims, v.keyFunc(ctx)); err != nil {
		return gateway.Identity{}, fmt.Errorf("%w: %w", ErrInvalidToken, err)
	}
	if claims.Subject == "" {
		return gateway.Identity{}, fmt.Errorf("%w: %w", ErrInvalidToken, ErrNoSubject)
	}
	// WithExpirationRequired makes ExpiresAt non-nil here.
	return gateway.Identity{Subject: claims.Subject, Expires: claims.ExpiresAt.Add(v.leeway)}, nil
}

// keyFunc returns the keys that may verify a token: the secret for HS256
// only, and for RS256/ES256 only keys of the matching kind, so that a token
// never verifies against a key of another algorithm. A token with a kid the
// JWKS holds is checked against that key alone; otherwise against every
// configured key of its kind.
func (v *JWT) keyFunc(ctx context.Context) jwt.Keyfunc {
	return func(t *jwt.Token) (any, error) {
		alg := t.Method.Alg()
		if alg == algHS256 {
			if v.keys.secret == nil {
				return nil, ErrNoKey
			}
			return v.keys.secret, nil
		}
		var static []jwt.VerificationKey
		switch alg {
		case algRS256:
			static = v.keys.rsa
		case algES256:
			static = v.keys.ec
		default:
			return nil, ErrNoKey // WithValidMethods refuses these first
		}
		var keys []jwt.VerificationKey
		if v.jwks != nil {
			var found bool
			keys, found = v.jwks.keys(ctx, t, alg, nil)
			if _, hasKID := t.Header["kid"]; hasKID && found {
				return jwt.VerificationKeySet{Keys: keys}, nil
			}
		}
		keys = append(keys, static...)
		if len(keys) == 0 {
			if kid, ok := t.Header["kid"].(string); ok {
				if len(kid) > maxLoggedKID {
					kid = kid[:maxLoggedKID] + "…"
				}
				return nil, fmt.Errorf("%w: no %s key with kid %q", ErrNoKey, alg, kid)
			}
			return nil, fmt.Errorf("%w: no %s key", ErrNoKey, alg)
		}
		return jwt.VerificationKeySet{Keys: keys}, nil
	}
}

package auth

import "errors"

// Errors of New (configuration) and of Verify (a refused token). Verify's
// errors wrap ErrInvalidToken; their text never contains the token.
var (
	// ErrMode is returned by New for an auth.mode other than "jwt".
	ErrMode = errors.New("auth: New needs auth.mode \"jwt\"")
	// ErrNoKeys: mode "jwt" without auth.jwt_secret, auth.jwt_public_keys or auth.jwks_url.
	ErrNoKeys = errors.New("auth: mode \"jwt\" needs auth.jwt_secret, auth.jwt_public_keys or auth.jwks_url")
	// ErrWeakSecret: auth.jwt_secret is shorter than HS256's 32 bytes (RFC 7518 section 3.2).
	ErrWeakSecret = errors.New("auth: auth.jwt_secret must be at least 32 bytes for HS256")
	// ErrBadKey: an entry of auth.jwt_public_keys is not a usable RSA (2048 bits or more) or P-256 public key.
	ErrBadKey = errors.New("auth: unusable public key")
	// ErrJWKS: the JWKS at auth.jwks_url could not be fetched or read.
	ErrJWKS = errors.New("auth: JWKS")

	// ErrInvalidToken is wrapped by every error of Verify.
	ErrInvalidToken = errors.New("auth: invalid token")
	// ErrNoSubject: the token has no sub claim, or an empty one.
	ErrNoSubject = errors.New("auth: token has no sub claim")
	// ErrNoKey: no configured key can verify the token (its alg, or its kid, is unknown).
	ErrNoKey = errors.New("auth: no key for the token")
)

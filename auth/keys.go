package auth

import (
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rsa"
	"crypto/x509"
	"encoding/pem"
	"fmt"
	"strings"

	"github.com/golang-jwt/jwt/v5"
)

// minRSABits is the smallest RSA modulus accepted for RS256 keys.
const minRSABits = 2048

// The signing methods a verifier can accept; which of them it does depends
// on the keys configured (see methods).
const (
	algHS256 = "HS256"
	algRS256 = "RS256"
	algES256 = "ES256"
)

// staticKeys are the keys known at start: the HS256 secret and the PEM keys
// of auth.jwt_public_keys, sorted by the algorithm they verify.
type staticKeys struct {
	secret []byte
	rsa    []jwt.VerificationKey // *rsa.PublicKey
	ec     []jwt.VerificationKey // *ecdsa.PublicKey on P-256
}

// parsePublicKeys reads every PEM block of every entry of pems (an entry may
// hold several) and sorts the keys by algorithm. Errors name the entry.
func parsePublicKeys(pems []string) (rsaKeys, ecKeys []jwt.VerificationKey, err error) {
	for i, s := range pems {
		rest := []byte(strings.TrimSpace(s))
		found := 0
		for len(rest) > 0 {
			var block *pem.Block
			block, rest = pem.Decode(rest)
			if block == nil {
				if found == 0 {
					return nil, nil, fmt.Errorf("%w: auth.jwt_public_keys[%d] is not PEM", ErrBadKey, i)
				}
				break
			}
			found++
			key, err := parsePEMBlock(block)
			if err != nil {
				return nil, nil, fmt.Errorf("%w: auth.jwt_public_keys[%d]: %w", ErrBadKey, i, err)
			}
			switch k := key.(type) {
			case *rsa.PublicKey:
				if k.N.BitLen() < minRSABits {
					return nil, nil, fmt.Errorf("%w: auth.jwt_public_keys[%d]: RSA key of %d bits, want at least %d", ErrBadKey, i, k.N.BitLen(), minRSABits)
				}
				rsaKeys = append(rsaKeys, k)
			case *ecdsa.PublicKey:
				if k.Curve != elliptic.P256() {
					return nil, nil, fmt.Errorf("%w: auth.jwt_public_keys[%d]: ECDSA key on %s, ES256 needs P-256", ErrBadKey, i, k.Curve.Params().Name)
				}
				ecKeys = append(ecKeys, k)
			default:
				return nil, nil, fmt.Errorf("%w: auth.jwt_public_keys[%d]: %T keys are not supported (RSA for RS256, P-256 ECDSA for ES256)", ErrBadKey, i, key)
			}
		}
	}
	return rsaKeys, ecKeys, nil
}

// parsePEMBlock reads a public key from a "PUBLIC KEY" (PKIX),
// "RSA PUBLIC KEY" (PKCS #1) or "CERTIFICATE" block.
func parsePEMBlock(b *pem.Block) (any, error) {
	switch b.Type {
	case "PUBLIC KEY":
		return x509.ParsePKIXPublicKey(b.Bytes)
	case "RSA PUBLIC KEY":
		return x509.ParsePKCS1PublicKey(b.Bytes)
	case "CERTIFICATE":
		cert, err := x509.ParseCertificate(b.Bytes)
		if err != nil {
			return nil, err
		}
		return cert.PublicKey, nil
	default:
		return nil, fmt.Errorf("PEM block %q is not a public key (PUBLIC KEY, RSA PUBLIC KEY or CERTIFICATE)", b.Type)
	}
}

// fitsAlg reports whether key can verify tokens signed with alg: the one
// place that ties algorithms to key types, so that no token verifies
// against a key of another kind (no algorithm confusion).
func fitsAlg(key any, alg string) bool {
	switch k := key.(type) {
	case *rsa.PublicKey:
		return alg == algRS256 && k.N.BitLen() >= minRSABits
	case *ecdsa.PublicKey:
		return alg == algES256 && k.Curve == elliptic.P256()
	}
	return false
}

package auth

import (
	"context"
	"math/big"
	"testing"

	"github.com/golang-jwt/jwt/v5"

	"github.com/piped-dev/piped/config"
)

func bigOne() *big.Int { return big.NewInt(1) }

// The cost of verifying one connection's token, by algorithm.
func benchmarkVerify(b *testing.B, cfg config.Auth, token string) {
	v := newJWT(b, cfg)
	ctx := context.Background()
	if _, err := v.Verify(ctx, token); err != nil {
		b.Fatal(err)
	}
	b.ReportAllocs()
	for b.Loop() {
		if _, err := v.Verify(ctx, token); err != nil {
			b.Fatal(err)
		}
	}
}

func BenchmarkVerifyHS256(b *testing.B) {
	benchmarkVerify(b, config.Auth{Mode: "jwt", JWTSecret: testSecret, Issuer: "https://issuer.test", Audience: "piped"},
		sign(b, jwt.SigningMethodHS256, []byte(testSecret), claims("user-1", nil), ""))
}

func BenchmarkVerifyRS256(b *testing.B) {
	k := testKeys()
	benchmarkVerify(b, config.Auth{Mode: "jwt", JWTPublicKeys: []string{pemOf(b, &k.rsa.PublicKey)}, Issuer: "https://issuer.test", Audience: "piped"},
		sign(b, jwt.SigningMethodRS256, k.rsa, claims("user-1", nil), ""))
}

func BenchmarkVerifyES256(b *testing.B) {
	k := testKeys()
	benchmarkVerify(b, config.Auth{Mode: "jwt", JWTPublicKeys: []string{pemOf(b, &k.ec.PublicKey)}, Issuer: "https://issuer.test", Audience: "piped"},
		sign(b, jwt.SigningMethodES256, k.ec, claims("user-1", nil), ""))
}

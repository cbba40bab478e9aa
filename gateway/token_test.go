package gateway

import (
	"encoding/json"
	"net/http"
	"testing"
)

// A token with "/" is refused like any other bad token: 400 with the
// character rule, as docs/protocol.md says (not a 404 from the router).
func TestTokenWithSlashIs400(t *testing.T) {
	ts := newTestServer(t, nil)
	for _, path := range []string{"/api/a/b", "/api/a/", "/api/a%2Fb"} {
		resp, err := http.Get(ts.URL + path)
		if err != nil {
			t.Fatal(err)
		}
		var body struct{ Error string }
		err = json.NewDecoder(resp.Body).Decode(&body)
		resp.Body.Close()
		if resp.StatusCode != http.StatusBadRequest || err != nil ||
			body.Error != "token has characters other than A-Z a-z 0-9 - . _ ~ + = :" {
			t.Errorf("GET %s: %d %q (%v)", path, resp.StatusCode, body.Error, err)
		}
	}
}

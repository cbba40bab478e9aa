package routetable

import (
	"testing"

	"github.com/piped-dev/piped/config"
)

// benchTable is a realistic table: a dozen exact names and a few globs,
// with the default route switched off so a miss walks everything.
func benchTable(tb testing.TB) *Table {
	routes := []config.Route{
		{Match: "$connect", Exchange: "lifecycle"},
		{Match: "chat.send", Exchange: "chat"},
		{Match: "chat.history", Exchange: "chat"},
		{Match: "user.get", Exchange: "users"},
		{Match: "user.update", Exchange: "users"},
		{Match: "billing.*", Exchange: "billing"},
		{Match: "orders.v?.*", Exchange: "orders"},
		{Match: "search.**", Exchange: "search"},
		{Match: "admin.*.audit", Exchange: "admin"},
		{Match: "report.*.pdf", Exchange: "reports"},
	}
	for _, m := range []string{"a", "b", "c", "d", "e", "f", "g"} {
		routes = append(routes, config.Route{Match: "misc." + m, Exchange: "misc"})
	}
	t, err := Compile(routes, Default{Exchange: "exchange-out-n1", Enabled: false})
	if err != nil {
		tb.Fatal(err)
	}
	return t
}

// BenchmarkLookup measures route lookup on the call path: an exact name
// (map), a glob found after other globs, and a miss that tries every glob.
func BenchmarkLookup(b *testing.B) {
	t := benchTable(b)
	for _, bc := range []struct{ name, method string }{
		{"exact", "chat.send"},
		{"glob", "orders.v2.get"},
		{"glob_general", "admin.users.audit"},
		{"miss", "nothing.matches.this"},
	} {
		b.Run(bc.name, func(b *testing.B) {
			b.ReportAllocs()
			for b.Loop() {
				if t.Lookup(bc.method) == nil && bc.name != "miss" {
					b.Fatal("no route")
				}
			}
		})
	}
}

package integration

import (
	"fmt"
	"slices"
	"sync"
	"testing"
	"time"

	"github.com/gorilla/websocket"

	h "github.com/piped-dev/piped/test/harness"
)

// BenchmarkUpgradeTargeted measures what targeted events add to a
// WebSocket upgrade: dial, 101, close, in a loop, on a node without
// amqp.events_exchange and on one with it (default 30 s unbind delay),
// side by side in the same run. "new token" binds on every upgrade (the
// worst case); "same token" reconnects within the delay (no binding
// operation). With -cpu or parallel > 1, that many clients dial at once
// (binds share batches). It reports the median and 90th percentile
// upgrade time.
//
//	go test -run '^$' -bench UpgradeTargeted -benchtime 400x ./test/integration/
func BenchmarkUpgradeTargeted(b *testing.B) {
	ex := eventsExchange(b)
	off := h.StartNode(b)
	on := targetedNode(b, ex, 30*time.Second)
	for _, parallel := range []int{1, 8} {
		for _, tc := range []struct {
			name     string
			n        *h.Node
			newToken bool
		}{
			{"fanout/new-token", off, true},
			{"targeted/new-token", on, true},
			{"targeted/same-token", on, false},
		} {
			b.Run(fmt.Sprintf("%s/clients=%d", tc.name, parallel), func(b *testing.B) {
				lat := make([]time.Duration, b.N)
				same := h.UniqueID("same")
				keep := h.Dial(b, tc.n, same) // holds the same token throughout
				defer keep.WS.Close()
				var wg sync.WaitGroup
				b.ResetTimer()
				for w := range parallel {
					wg.Add(1)
					go func() {
						defer wg.Done()
						for i := w; i < b.N; i += parallel {
							tok := same
							if tc.newToken {
								tok = h.UniqueID("bench")
							}
							start := time.Now()
							ws, _, err := websocket.DefaultDialer.Dial(tc.n.WSURL(tok), nil)
							lat[i] = time.Since(start)
							if err != nil {
								b.Errorf("dial: %v", err)
								return
							}
							ws.Close()
						}
					}()
				}
				wg.Wait()
				b.StopTimer()
				slices.Sort(lat)
				b.ReportMetric(float64(lat[len(lat)/2].Microseconds()), "p50-µs")
				b.ReportMetric(float64(lat[len(lat)*9/10].Microseconds()), "p90-µs")
			})
		}
	}
}

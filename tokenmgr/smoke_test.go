package tokenmgr_test

import (
	"context"
	"sync/atomic"
	"testing"
	"testing/synctest"
	"time"

	"github.com/seed-a64d9e1f/chatwire/tokenmgr"
)

func TestSmoke(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		var n atomic.Int64
		src := tokenmgr.SourceFunc(func(ctx context.Context) (tokenmgr.Token, error) {
			i := n.Add(1)
			time.Sleep(200 * time.Millisecond)
			return tokenmgr.Token{Value: "tok" + string(rune('0'+i)), ExpiresAt: time.Now().Add(2 * time.Hour)}, nil
		})
		m := tokenmgr.New("wecom/ww1/1000002", src, tokenmgr.Options{})
		defer m.Close()
		tok, err := m.Token(t.Context())
		if err != nil || tok.Value != "tok1" {
			t.Fatalf("Token = %v, %v", tok, err)
		}
		time.Sleep(100 * time.Minute)
		synctest.Wait()
		tok, _ = m.Token(t.Context())
		t.Logf("after 100m: %s fetches=%d status=%+v", tok.Value, n.Load(), m.Status())
	})
}

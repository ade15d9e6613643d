package aibot

import (
	"testing"
	"time"
)

func TestBackoffMatchesTheSDK(t *testing.T) {
	want := []time.Duration{1, 2, 4, 8, 16, 30, 30}
	for i, w := range want {
		if got := backoff(time.Second, 30*time.Second, i+1); got != w*time.Second {
			t.Errorf("backoff(attempt %d) = %s; want %s", i+1, got, w*time.Second)
		}
	}
	if got := backoff(time.Second, 30*time.Second, 100); got != 30*time.Second {
		t.Errorf("backoff(attempt 100) = %s; want 30s", got)
	}
}

func TestSubscribeWaitIsAtLeastAMinute(t *testing.T) {
	for _, tc := range []struct {
		opts Options
		want time.Duration
	}{
		{Options{}, 60 * time.Second},
		{Options{SubscribeRateLimitWait: time.Second}, 60 * time.Second},
		{Options{SubscribeRateLimitWait: 2 * time.Minute}, 2 * time.Minute},
		{Options{SubscribeRateLimitWait: time.Second, AllowShortRateLimitWait: true}, time.Second},
	} {
		if got := (&Bot{opts: tc.opts}).subscribeWait(); got != tc.want {
			t.Errorf("subscribeWait(%+v) = %s; want %s", tc.opts, got, tc.want)
		}
	}
}

func TestSanitize(t *testing.T) {
	in := "{\"a\":\x00\"b\x1f\tc\nd\r\x0b\"}"
	if got := string(sanitize([]byte(in))); got != "{\"a\":\"b\tc\nd\"}" {
		t.Errorf("sanitize = %q", got)
	}
	clean := []byte(`{"x":"字"}`)
	if got := sanitize(clean); &got[0] != &clean[0] {
		t.Error("sanitize copied a clean frame")
	}
}

func TestSplitText(t *testing.T) {
	s := "ab\ncdé\nfgh"
	for max := 3; max <= len(s); max++ {
		parts := splitText(s, max)
		joined := ""
		for _, p := range parts {
			if len(p) > max {
				t.Errorf("splitText(max %d) part %q over max", max, p)
			}
			joined += p
		}
		if joined != s {
			t.Errorf("splitText(max %d) = %q; does not join to the input", max, parts)
		}
	}
}

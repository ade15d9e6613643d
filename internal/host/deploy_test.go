package host

import (
	"bytes"
	"io"
	"net/http"
	"net/http/httptest"
	"os"
	"regexp"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/prometheus/common/expfmt"
	"github.com/prometheus/common/model"

	"github.com/seed-a64d9e1f/chatwire/internal/redistest"
)

// deployFiles are the shipped dashboard and alerting rules; every metric they name must be
// one a running host exports.
var deployFiles = []string{"../../deploy/grafana/chatwire.json", "../../deploy/prometheus/alerts.yaml"}

var metricRef = regexp.MustCompile(`\bchatwire_[a-z0-9_]+`)

// referencedMetrics returns the metric families the deploy files name (a histogram's
// _bucket, _sum and _count are its family).
func referencedMetrics(t *testing.T) map[string][]string {
	t.Helper()
	refs := map[string][]string{}
	for _, f := range deployFiles {
		data, err := os.ReadFile(f)
		if err != nil {
			t.Fatal(err)
		}
		for _, name := range metricRef.FindAllString(string(data), -1) {
			for _, suf := range []string{"_bucket", "_sum", "_count"} {
				if base, ok := strings.CutSuffix(name, suf); ok && strings.HasSuffix(base, "_seconds") {
					name = base
				}
			}
			if !slices.Contains(refs[name], f) {
				refs[name] = append(refs[name], f)
			}
		}
	}
	if len(refs) < 10 {
		t.Fatalf("the deploy files name only %d metrics: %v", len(refs), refs)
	}
	return refs
}

// A host with Redis that received a webhook, delivered it, sent a message and met a platform
// error exports every metric the dashboard and the alerts use.
func TestDeployFilesNameExportedMetrics(t *testing.T) {
	refs := referencedMetrics(t)
	rs := redistest.Start(t)
	delivered := make(chan struct{}, 10)
	recv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		io.Copy(io.Discard, r.Body)
		delivered <- struct{}{}
	}))
	t.Cleanup(recv.Close)
	e := setup(t, setupOpts{redisURL: "redis://" + rs.Addr() + "/0", deliverURL: recv.URL})
	e.push("alice", "hello")
	select {
	case <-delivered:
	case <-time.After(30 * time.Second):
		t.Fatal("event not delivered")
	}
	if status, _, body := e.do("POST", "/v1/bots/hr/messages", testAPIKey, `{"to":{"user":"alice"},"text":"hi"}`); status != 200 {
		t.Fatalf("send = %d %s", status, body)
	}
	e.emu.Fail("message/send", 60020, 1)
	if status, _, _ := e.do("POST", "/v1/bots/hr/messages", testAPIKey, `{"to":{"user":"alice"},"text":"hi"}`); status == 200 {
		t.Fatal("send with errcode 60020 succeeded")
	}

	_, _, data := e.do("GET", "/metrics", "", nil)
	parser := expfmt.NewTextParser(model.UTF8Validation)
	mfs, err := parser.TextToMetricFamilies(bytes.NewReader(data))
	if err != nil {
		t.Fatalf("/metrics: %v\n%s", err, data)
	}
	for name, files := range refs {
		if mf := mfs[name]; mf == nil || len(mf.GetMetric()) == 0 {
			t.Errorf("%s (named in %v) is not exported", name, files)
		}
	}
	for _, want := range []string{
		`chatwire_upstream_errors_total{code="60020",platform="wecom"} 1`,
		`chatwire_token_refreshes_total{code="",key="wecom/` + testCorp + `/1000002",platform="wecom",reason="initial",result="ok",source="upstream"} 1`,
		`chatwire_bot_healthy{bot="hr",platform="wecom",reason=""} 1`,
		`chatwire_events_unconsumed{bot="hr"} 0`,
		`chatwire_send_duration_seconds_count{bot="hr",result="ok"} 1`,
		`chatwire_send_duration_seconds_count{bot="hr",result="error"} 1`,
		`chatwire_webhook_duration_seconds_count{bot="hr"} 1`,
		`chatwire_token_fetch_duration_seconds_count{platform="wecom",result="ok",source="upstream"} 1`,
	} {
		if !strings.Contains(string(data), want) {
			t.Errorf("/metrics lacks %s", want)
		}
	}
	if mf := mfs["chatwire_build_info"]; mf != nil {
		for _, l := range mf.GetMetric()[0].GetLabel() {
			if l.GetName() == "goversion" && !strings.HasPrefix(l.GetValue(), "go") {
				t.Errorf("chatwire_build_info goversion = %q", l.GetValue())
			}
		}
	}
	if t.Failed() {
		t.Logf("/metrics:\n%s", data)
	}
}

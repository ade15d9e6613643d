package config

import (
	"strings"
	"testing"
	"time"
)

// TestPacingConfig: a bot's pacing section and wecom.duplicate_check are read and checked.
func TestPacingConfig(t *testing.T) {
	good := strings.Replace(goodConfig, `    deliver: {webhook_url`, `    pacing: {limits: {member: ["20/1m"], app: ["5000/24h"]}, concurrency: 4, max_wait: 10s}
    deliver: {webhook_url`, 1)
	good = strings.Replace(good, "agent_id: 1000002,", "agent_id: 1000002, duplicate_check: 30m,", 1)
	cfg, err := Parse("c.yaml", []byte(good), envOf(goodEnv))
	if err != nil {
		t.Fatal(err)
	}
	opts, mw := cfg.Bots[0].Pacing.Options()
	if mw != 10*time.Second || opts.Concurrency != 4 || len(opts.Limits["member"]) != 1 || opts.Limits["member"][0].N != 20 || cfg.Bots[0].WeCom.DuplicateCheck != "30m" {
		t.Errorf("pacing options %+v, max wait %v, duplicate check %q", opts, mw, cfg.Bots[0].WeCom.DuplicateCheck)
	}
	for _, tc := range []struct{ from, to, want string }{
		{`member: ["20/1m"]`, `member: ["20 a minute"]`, `bots[0].pacing.limits.member[0]: "20 a minute": want N/duration`},
		{`member: ["20/1m"]`, `members: ["20/1m"]`, `bots[0].pacing.limits: unknown key "members"`},
		{`member: ["20/1m"]`, `channel: ["20/1m"]`, `bots[0].pacing.limits.channel: wecom has no scope "channel" (it has app, appchat, member)`},
		{`max_wait: 10s`, `max_wait: 5m`, `bots[0].pacing.max_wait: "5m": want a duration from 0s to 2m0s`},
		{`duplicate_check: 30m`, `duplicate_check: 5h`, `bots[0].wecom.duplicate_check: want a duration from 1s to 4h`},
		{`concurrency: 4`, `concurrency: 4, burst: 2`, `bots[0].pacing: unknown key "burst"`},
	} {
		_, err := Parse("c.yaml", []byte(strings.Replace(good, tc.from, tc.to, 1)), envOf(goodEnv))
		if err == nil || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("%s → %s: %v; want %q", tc.from, tc.to, err, tc.want)
		}
	}
}

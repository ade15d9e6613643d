package config

import (
	"fmt"
	"sort"
	"strings"
	"time"

	"github.com/seed-a64d9e1f/chatwire/internal/pacing"
)

// SendTimeout bounds one synchronous send of the host, pacing wait included.
const SendTimeout = 2 * time.Minute

// defaultMaxWait is how long a synchronous send waits for its turn under the platform's
// limits before it is answered 429 with Retry-After instead.
const defaultMaxWait = 30 * time.Second

// PacingConfig is a bot's pacing section: the platform's published limits apply without it.
type PacingConfig struct {
	// Limits replace the platform's limits scope by scope; an empty list turns a scope off.
	Limits PacingLimits `yaml:"limits"`
	// Concurrency bounds the bot's sends in flight in this host. 0 means 32.
	Concurrency int `yaml:"concurrency"`
	// MaxWait is the longest a synchronous send waits for its turn, as a Go duration; a
	// longer wait is answered 429 with Retry-After. Empty means 30s. A request's
	// "Prefer: wait=N" (seconds) can only lower it.
	MaxWait string `yaml:"max_wait"`
}

// PacingLimits are limits by scope (see package pacing), each "N/duration" such as "30/1m".
// WeCom scopes: member, app, appchat; Graph: chat, chats, channel, channels, mail; Teams:
// conversation.
type PacingLimits struct {
	Member   []string `yaml:"member"`
	App      []string `yaml:"app"`
	AppChat  []string `yaml:"appchat"`
	Chat     []string `yaml:"chat"`
	Chats    []string `yaml:"chats"`
	Channel  []string `yaml:"channel"`
	Channels []string `yaml:"channels"`
	Mail     []string `yaml:"mail"`
	// Conversation (Teams): sends to one conversation; default 7/1s, 8/2s, 60/30s, 1800/1h.
	Conversation []string `yaml:"conversation"`
}

// scopes returns the scopes set (nil lists are not).
func (l PacingLimits) scopes() map[string][]string {
	out := map[string][]string{}
	for scope, ls := range map[string][]string{pacing.ScopeMember: l.Member, pacing.ScopeApp: l.App, pacing.ScopeAppChat: l.AppChat,
		pacing.ScopeChat: l.Chat, pacing.ScopeChats: l.Chats, pacing.ScopeChannel: l.Channel, pacing.ScopeChannels: l.Channels, pacing.ScopeMail: l.Mail,
		pacing.ScopeConversation: l.Conversation} {
		if ls != nil {
			out[scope] = ls
		}
	}
	return out
}

// Options returns the pacing options and the max wait of pc (nil: defaults). pc must be
// valid.
func (pc *PacingConfig) Options() (pacing.Options, time.Duration) {
	if pc == nil {
		return pacing.Options{}, defaultMaxWait
	}
	var o pacing.Options
	if set := pc.Limits.scopes(); len(set) > 0 {
		o.Limits = map[string][]pacing.Limit{}
		for scope, ls := range set {
			o.Limits[scope] = []pacing.Limit{}
			for _, s := range ls {
				l, _ := pacing.ParseLimit(s)
				o.Limits[scope] = append(o.Limits[scope], l)
			}
		}
	}
	o.Concurrency = pc.Concurrency
	mw := defaultMaxWait
	if pc.MaxWait != "" {
		mw, _ = time.ParseDuration(pc.MaxWait)
	}
	return o, mw
}

// validate reports the problems of pc (nil is valid) at path at.
func (pc *PacingConfig) validate(at, platform string, p func(string, string, ...any)) {
	if pc == nil {
		return
	}
	scopes := pc.Limits.scopes()
	names := make([]string, 0, len(scopes))
	for scope := range scopes {
		names = append(names, scope)
	}
	sort.Strings(names)
	for _, scope := range names {
		for i, s := range scopes[scope] {
			if _, err := pacing.ParseLimit(s); err != nil {
				p(fmt.Sprintf("%s.limits.%s[%d]", at, scope, i), "%q: want N/duration such as 30/1m", s)
			}
		}
		if _, err := pacing.Merge(platform, map[string][]pacing.Limit{scope: nil}); err != nil {
			p(at+".limits."+scope, "%v", strings.TrimPrefix(err.Error(), "pacing: "))
		}
	}
	if pc.Concurrency < 0 || pc.Concurrency > 1000 {
		p(at+".concurrency", "%d: want 1 to 1000 (0 means %d)", pc.Concurrency, pacing.DefaultConcurrency)
	}
	if pc.MaxWait != "" {
		if d, err := time.ParseDuration(pc.MaxWait); err != nil || d < 0 || d > SendTimeout {
			p(at+".max_wait", "%q: want a duration from 0s to %v such as 30s", pc.MaxWait, SendTimeout)
		}
	}
}

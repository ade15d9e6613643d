package pacing

import (
	"fmt"
	"slices"
	"sort"
	"strconv"
	"strings"
	"time"

	"github.com/seed-a64d9e1f/chatwire/adapter"
	"github.com/seed-a64d9e1f/chatwire/adapter/teams"
)

// A Limit allows at most N sends in any window of length Per.
type Limit struct {
	N   int
	Per time.Duration
}

// String returns "N/Per", as [ParseLimit] reads it: "30/1m0s".
func (l Limit) String() string { return strconv.Itoa(l.N) + "/" + l.Per.String() }

// ParseLimit reads "N/duration", e.g. "30/1m" or "1000/1h".
func ParseLimit(s string) (Limit, error) {
	n, per, ok := strings.Cut(s, "/")
	if !ok {
		return Limit{}, fmt.Errorf("pacing: limit %q: want N/duration, e.g. 30/1m", s)
	}
	l := Limit{}
	var err error
	if l.N, err = strconv.Atoi(strings.TrimSpace(n)); err != nil || l.N < 1 {
		return Limit{}, fmt.Errorf("pacing: limit %q: count must be a whole number ≥ 1", s)
	}
	if l.Per, err = time.ParseDuration(strings.TrimSpace(per)); err != nil || l.Per < time.Millisecond {
		return Limit{}, fmt.Errorf("pacing: limit %q: window must be a duration ≥ 1ms, e.g. 1m", s)
	}
	return l, nil
}

// Scopes of limits. A scope names what one counter counts; [Plan] maps a message onto the
// counters it draws on.
const (
	// ScopeMember (WeCom message/send): sends to one member from the app. A send to several
	// users draws on each user's counter. A send to @all, a party or a tag draws on the one
	// pseudo-member "@broadcast": chatwire does not know who is in them, so broadcasts
	// together stay within what one member may receive. A direct send and a broadcast that
	// reach the same member are counted apart.
	ScopeMember = "member"
	// ScopeApp (WeCom): person-sends of the app: a send to n users counts n, a broadcast 1.
	ScopeApp = "app"
	// ScopeAppChat (WeCom appchat/send): sends to one app chat.
	ScopeAppChat = "appchat"
	// ScopeChat (Graph): posts to one Teams chat (or 1:1 chat with a user); paused alone
	// on a 429 with Retry-After.
	ScopeChat = "chat"
	// ScopeChats (Graph): chat posts of the app, all chats together.
	ScopeChats = "chats"
	// ScopeChannel (Graph): posts to one channel.
	ScopeChannel = "channel"
	// ScopeChannels (Graph): channel posts of the app, all channels together.
	ScopeChannels = "channels"
	// ScopeMail (Graph): mail sends of the bot's mailbox.
	ScopeMail = "mail"
	// ScopeConversation (Teams bots): sends to one conversation (a 1:1 chat, group chat or
	// channel, all its reply threads together); paused alone on a 429 with Retry-After. A
	// send to a user counts on "user:<id>" (their 1:1 chat, whose id the adapter finds when
	// sending), apart from sends addressed to that chat's id.
	ScopeConversation = "conversation"
)

// Limits are the limits of each scope; a scope with no limits is not counted (but can
// still be paused).
type Limits map[string][]Limit

// Defaults returns the platform's published limits ("wecom" or "graph"; nil for others):
//   - WeCom (doc 90454; specs/wecom.md §3): member 30/1m and 1000/1h (per app, to one
//     member; more are dropped without an error); appchat 200/1m and 10000/24h (per member
//     of the chat, applied to the chat); app none (the daily "account limit × 200"
//     person-sends depend on the corp's licences: set it).
//   - Graph (throttling-limits; specs/graph.md §3): chats 2/1s (POST chat message, per app
//     per tenant), channels 2/1s, channel 4/1s and 3000/24h (per team channel), mail
//     10000/10m (per app and mailbox), chat none (a chat is paced by the Retry-After of its
//     429s).
//   - Teams bots (specs/botconnector.md §3.5, [teams.ThreadLimits]): conversation 7/1s,
//     8/2s, 60/30s and 1800/1h (per bot per thread: 1:1, group chat or channel; "for
//     estimation only").
func Defaults(platform string) Limits {
	switch platform {
	case adapter.PlatformWeCom:
		return Limits{
			ScopeMember:  {{30, time.Minute}, {1000, time.Hour}},
			ScopeAppChat: {{200, time.Minute}, {10000, 24 * time.Hour}},
			ScopeApp:     nil,
		}
	case adapter.PlatformGraph:
		return Limits{
			ScopeChat:     nil,
			ScopeChats:    {{2, time.Second}},
			ScopeChannel:  {{4, time.Second}, {3000, 24 * time.Hour}},
			ScopeChannels: {{2, time.Second}},
			ScopeMail:     {{10000, 10 * time.Minute}},
		}
	case adapter.PlatformTeams:
		var conv []Limit
		for _, l := range teams.ThreadLimits {
			conv = append(conv, Limit{l.N, l.Per})
		}
		return Limits{ScopeConversation: conv}
	}
	return nil
}

// Merge returns the defaults of platform with the scopes of over replacing them; a scope
// over names must exist on the platform (the error lists those that do).
func Merge(platform string, over map[string][]Limit) (Limits, error) {
	l := Defaults(platform)
	if l == nil && len(over) > 0 {
		return nil, fmt.Errorf("pacing: platform %q has no paced scopes", platform)
	}
	for scope, lims := range over {
		if _, ok := l[scope]; !ok {
			names := make([]string, 0, len(l))
			for n := range l {
				names = append(names, n)
			}
			sort.Strings(names)
			return nil, fmt.Errorf("pacing: %s has no scope %q (it has %s)", platform, scope, strings.Join(names, ", "))
		}
		l[scope] = slices.Clone(lims)
	}
	return l, nil
}

// A Slot is one counter a send draws on: a scope, the counted thing's id, and how many
// sends it counts.
type Slot struct {
	Scope string
	ID    string
	Cost  int
}

func (s Slot) key() string { return s.Scope + ":" + s.ID }

// wecomTextBytes is WeCom's text limit: a longer text is split into several messages when
// the adapter splits (each counted).
const wecomTextBytes = 2048

// Plan returns the slots one send of msg draws on for platform. WeCom counts each message
// the adapter makes of it (a text over 2048 bytes in 2048-byte parts, each attachment one).
func Plan(platform string, msg adapter.Message) []Slot {
	kind, err := msg.To.Kind()
	if err != nil {
		if platform == adapter.PlatformTeams { // a reply with no target goes to reply_to's conversation
			if conv, _, ok := teams.ParseID(msg.ReplyTo); ok {
				return []Slot{{ScopeConversation, teamsConversation(conv), 1}}
			}
		}
		return nil
	}
	switch platform {
	case adapter.PlatformWeCom:
		parts := len(msg.Attachments)
		for _, s := range []string{msg.Text, msg.Markdown} {
			if s != "" {
				parts += max(1, (len(s)+wecomTextBytes-1)/wecomTextBytes)
			}
		}
		if len(msg.Card) > 0 {
			parts++
		}
		parts = max(parts, 1)
		switch kind {
		case adapter.TargetUser:
			return []Slot{{ScopeMember, strings.ToLower(msg.To.User), parts}, {ScopeApp, "", parts}}
		case adapter.TargetUsers:
			var out []Slot
			seen := map[string]bool{}
			for _, u := range msg.To.Users {
				u = strings.ToLower(u)
				if !seen[u] {
					seen[u] = true
					out = append(out, Slot{ScopeMember, u, parts})
				}
			}
			return append(out, Slot{ScopeApp, "", parts * len(seen)})
		case adapter.TargetParty, adapter.TargetTag, adapter.TargetAll:
			return []Slot{{ScopeMember, "@broadcast", parts}, {ScopeApp, "", parts}}
		case adapter.TargetChat:
			return []Slot{{ScopeAppChat, msg.To.Chat, parts}}
		}
	case adapter.PlatformGraph:
		switch kind {
		case adapter.TargetChat:
			return []Slot{{ScopeChat, msg.To.Chat, 1}, {ScopeChats, "", 1}}
		case adapter.TargetUser:
			return []Slot{{ScopeChat, "user:" + strings.ToLower(msg.To.User), 1}, {ScopeChats, "", 1}}
		case adapter.TargetChannel:
			return []Slot{{ScopeChannel, msg.To.Channel.Team + "/" + msg.To.Channel.Channel, 1}, {ScopeChannels, "", 1}}
		case adapter.TargetEmail, adapter.TargetEmails:
			return []Slot{{ScopeMail, "", 1}}
		}
	case adapter.PlatformTeams:
		switch kind {
		case adapter.TargetChat:
			return []Slot{{ScopeConversation, teamsConversation(msg.To.Chat), 1}}
		case adapter.TargetChannel:
			return []Slot{{ScopeConversation, teamsConversation(msg.To.Channel.Channel), 1}}
		case adapter.TargetUser:
			return []Slot{{ScopeConversation, "user:" + strings.ToLower(msg.To.User), 1}}
		}
	}
	return nil
}

// teamsConversation is the conversation of a Teams conversation id: a channel thread's id
// ("…;messageid=…") without its thread.
func teamsConversation(id string) string {
	base, _, _ := strings.Cut(id, ";messageid=")
	return base
}

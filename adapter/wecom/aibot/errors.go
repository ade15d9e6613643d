package aibot

import (
	"fmt"
	"strconv"
	"strings"
	"time"

	"github.com/seed-a64d9e1f/chatwire/adapter"
)

// Platform codes the adapter acts on (specs/wecom-aibot.md §4).
const (
	CodeBadSecret    = 853000 // invalid bot_id or secret (subscribe)
	CodeFreq         = 45009  // api freq out of limit (subscribe)
	CodeInvalidReqID = 846605 // wrong reply kind for the req_id, or too late
	CodeResponded    = 846606 // req_id consumed (after a template card)
	CodeRateLimited  = 846607 // per-conversation message limit
	CodeExpired      = 846608 // stream message update expired
	CodeInvalidChat  = 93006  // invalid chatid
)

// RateLimitWait is how long the adapter waits after 45009 on subscribe, and the retry-after
// of 846607: WeCom blocks an over-limit caller for at least a minute.
const RateLimitWait = 60 * time.Second

// codeInfo is the one table of AI Bot codes: the kind each maps onto, its retry-after and a
// hint that says what to do.
var codeInfo = map[int]struct {
	kind  adapter.Kind
	retry time.Duration
	hint  string
}{
	CodeBadSecret: {adapter.KindUnauthorized, 0, "the bot_id or secret is wrong: copy the BotID and the long-connection secret " +
		"(长连接专用密钥) from the bot's API mode page (API 模式 → 长连接) in the WeCom admin console; a secret reset there invalidates the old one"},
	CodeFreq:         {adapter.KindRateLimited, RateLimitWait, "subscribe is rate-protected: keep one connection per bot and wait at least a minute"},
	CodeInvalidReqID: {adapter.KindInvalidRequest, 0, "this reply kind does not fit the callback's req_id (or came too late)"},
	CodeResponded:    {adapter.KindInvalidRequest, 0, "the callback was already answered with a template card"},
	CodeRateLimited:  {adapter.KindRateLimited, RateLimitWait, "over 30 messages a minute (or 1000 an hour) in this conversation"},
	CodeExpired:      {adapter.KindInvalidRequest, 0, "the stream is older than WeCom's 6-minute limit"},
	CodeInvalidChat:  {adapter.KindInvalidRecipient, 0, "chatids are case-sensitive, and only chats that messaged the bot can be sent to"},
	-1:               {adapter.KindUnavailable, 0, "WeCom system error; retry later"},
}

// APIError is a non-zero errcode in an ack. It keeps the code verbatim, and maps onto the
// adapter sentinels through Is.
type APIError struct {
	Code int    // errcode
	Msg  string // errmsg, verbatim
	Cmd  string // the command acked, e.g. "aibot_respond_msg"
}

// Error returns "wecom_aibot: <cmd>: errcode <code>: <errmsg> (<hint>)".
func (e *APIError) Error() string {
	s := fmt.Sprintf("wecom_aibot: %s: errcode %d: %s", e.Cmd, e.Code, e.Msg)
	if h := codeInfo[e.Code].hint; h != "" {
		s += " (" + h + ")"
	}
	return s
}

// Kind returns the adapter kind of the code (KindInternal for codes the table lacks).
func (e *APIError) Kind() adapter.Kind {
	if info, ok := codeInfo[e.Code]; ok {
		return info.kind
	}
	return adapter.KindInternal
}

// RetryAfter returns how long WeCom wants callers to wait (60 s for 45009 and 846607).
func (e *APIError) RetryAfter() time.Duration { return codeInfo[e.Code].retry }

// Is reports whether target is the sentinel of e's Kind.
func (e *APIError) Is(target error) bool { return target == e.Kind().Err() }

// asAdapterError wraps err (an *APIError or any other) as an *adapter.Error.
func asAdapterError(err error, msg string) error {
	if err == nil {
		return nil
	}
	const prefix = adapter.PlatformWeComAIBot + ": "
	msg = strings.TrimPrefix(msg, prefix)
	if ae, ok := err.(*APIError); ok {
		return &adapter.Error{Kind: ae.Kind(), Platform: adapter.PlatformWeComAIBot, Code: strconv.Itoa(ae.Code),
			Message: msg + ": " + strings.TrimPrefix(ae.Error(), prefix), RetryAfter: ae.RetryAfter(), Err: ae}
	}
	if _, ok := err.(*adapter.Error); ok {
		return err
	}
	return &adapter.Error{Kind: adapter.KindOf(err), Platform: adapter.PlatformWeComAIBot, Message: msg + ": " + strings.TrimPrefix(err.Error(), prefix), Err: err}
}

package plugin

import (
	"encoding/json"
	"net/http"
	"net/url"
	"time"

	"google.golang.org/protobuf/types/known/timestamppb"

	"github.com/seed-a64d9e1f/chatwire/adapter"
	pb "github.com/seed-a64d9e1f/chatwire/plugin/proto"
	"github.com/seed-a64d9e1f/chatwire/tokenmgr"
)

// This file maps the adapter model to its wire form and back, field by field.

func storeToProto(s StoreConfig) *pb.StoreConfig {
	return &pb.StoreConfig{RedisUrl: s.RedisURL, KeyPrefix: s.KeyPrefix, Dir: s.Dir,
		RedisAddrs: s.RedisAddrs, RedisMasterName: s.RedisMasterName, RedisUsername: s.RedisUsername,
		RedisPassword: s.RedisPassword, RedisSentinelPassword: s.RedisSentinelPassword,
		RedisDb: int32(s.RedisDB), RedisTls: s.RedisTLS,
		EncryptionKey: s.EncryptionKey, PreviousEncryptionKeys: s.PreviousEncryptionKeys, AcceptPlaintext: s.AcceptPlaintext}
}

func storeFromProto(p *pb.StoreConfig) StoreConfig {
	if p == nil {
		return StoreConfig{}
	}
	return StoreConfig{RedisURL: p.RedisUrl, KeyPrefix: p.KeyPrefix, Dir: p.Dir,
		RedisAddrs: p.RedisAddrs, RedisMasterName: p.RedisMasterName, RedisUsername: p.RedisUsername,
		RedisPassword: p.RedisPassword, RedisSentinelPassword: p.RedisSentinelPassword,
		RedisDB: int(p.RedisDb), RedisTLS: p.RedisTls,
		EncryptionKey: p.EncryptionKey, PreviousEncryptionKeys: p.PreviousEncryptionKeys, AcceptPlaintext: p.AcceptPlaintext}
}

func targetToProto(t adapter.Target) *pb.Target {
	p := &pb.Target{User: t.User, Users: t.Users, Party: t.Party, Tag: t.Tag, All: t.All, Chat: t.Chat,
		Email: t.Email, Emails: t.Emails}
	if t.Channel != nil {
		p.Channel = &pb.Channel{Team: t.Channel.Team, Channel: t.Channel.Channel}
	}
	return p
}

func targetFromProto(p *pb.Target) adapter.Target {
	if p == nil {
		return adapter.Target{}
	}
	t := adapter.Target{User: p.User, Users: p.Users, Party: p.Party, Tag: p.Tag, All: p.All, Chat: p.Chat,
		Email: p.Email, Emails: p.Emails}
	if p.Channel != nil {
		t.Channel = &adapter.Channel{Team: p.Channel.Team, Channel: p.Channel.Channel}
	}
	return t
}

func attachmentsToProto(as []adapter.Attachment) []*pb.Attachment {
	if len(as) == 0 {
		return nil
	}
	out := make([]*pb.Attachment, len(as))
	for i, a := range as {
		out[i] = attachmentToProto(a)
	}
	return out
}

func attachmentToProto(a adapter.Attachment) *pb.Attachment {
	return &pb.Attachment{Type: a.Type, Name: a.Name, ContentType: a.ContentType, Size: a.Size, Id: a.ID,
		Url: a.URL, Title: a.Title, Description: a.Description, Data: a.Data}
}

func attachmentsFromProto(ps []*pb.Attachment) []adapter.Attachment {
	if len(ps) == 0 {
		return nil
	}
	out := make([]adapter.Attachment, len(ps))
	for i, p := range ps {
		out[i] = attachmentFromProto(p)
	}
	return out
}

func attachmentFromProto(p *pb.Attachment) adapter.Attachment {
	if p == nil {
		return adapter.Attachment{}
	}
	return adapter.Attachment{Type: p.Type, Name: p.Name, ContentType: p.ContentType, Size: p.Size, ID: p.Id,
		URL: p.Url, Title: p.Title, Description: p.Description, Data: p.Data}
}

func messageToProto(m adapter.Message) *pb.Message {
	p := &pb.Message{To: targetToProto(m.To), Text: m.Text, Markdown: m.Markdown, Html: m.HTML, Card: m.Card,
		Subject: m.Subject, ReplyTo: m.ReplyTo, Attachments: attachmentsToProto(m.Attachments)}
	for _, mn := range m.Mentions {
		p.Mentions = append(p.Mentions, &pb.Mention{Id: mn.ID, Name: mn.Name})
	}
	return p
}

func messageFromProto(p *pb.Message) adapter.Message {
	if p == nil {
		return adapter.Message{}
	}
	m := adapter.Message{To: targetFromProto(p.To), Text: p.Text, Markdown: p.Markdown, HTML: p.Html,
		Subject: p.Subject, ReplyTo: p.ReplyTo, Attachments: attachmentsFromProto(p.Attachments)}
	if len(p.Card) > 0 {
		m.Card = json.RawMessage(p.Card)
	}
	for _, mn := range p.Mentions {
		m.Mentions = append(m.Mentions, adapter.Mention{ID: mn.Id, Name: mn.Name})
	}
	return m
}

func receiptToProto(r adapter.Receipt) *pb.Receipt {
	return &pb.Receipt{Id: r.ID, Invalid: r.Invalid, Ids: r.IDs}
}

func receiptFromProto(p *pb.Receipt) adapter.Receipt {
	if p == nil {
		return adapter.Receipt{}
	}
	return adapter.Receipt{ID: p.Id, Invalid: p.Invalid, IDs: p.Ids}
}

func valuesToProto(v map[string][]string) map[string]*pb.Values {
	if len(v) == 0 {
		return nil
	}
	out := make(map[string]*pb.Values, len(v))
	for k, vs := range v {
		out[k] = &pb.Values{Values: vs}
	}
	return out
}

func valuesFromProto(p map[string]*pb.Values) map[string][]string {
	if len(p) == 0 {
		return nil
	}
	out := make(map[string][]string, len(p))
	for k, vs := range p {
		out[k] = vs.GetValues()
	}
	return out
}

// webhookRequestToProto maps r, with its query and header as pairs (for a plugin of protocol
// minor 3, on the Calls stream) or as maps.
func webhookRequestToProto(r *adapter.WebhookRequest, pairs bool) *pb.WebhookRequest {
	if r == nil {
		return nil
	}
	p := &pb.WebhookRequest{Method: r.Method, Path: r.Path, Body: r.Body, RemoteAddr: r.RemoteAddr}
	if pairs {
		p.QueryPairs, p.HeaderPairs = valuesToPairs(r.Query), valuesToPairs(r.Header)
	} else {
		p.Query, p.Header = valuesToProto(r.Query), valuesToProto(r.Header)
	}
	return p
}

func webhookRequestFromProto(p *pb.WebhookRequest) *adapter.WebhookRequest {
	if p == nil {
		return &adapter.WebhookRequest{}
	}
	r := &adapter.WebhookRequest{Method: p.Method, Path: p.Path, Body: p.Body, RemoteAddr: p.RemoteAddr}
	if len(p.QueryPairs) > 0 {
		r.Query = url.Values(valuesFromPairs(p.QueryPairs))
	} else {
		r.Query = url.Values(valuesFromProto(p.Query))
	}
	if len(p.HeaderPairs) > 0 {
		r.Header = http.Header(valuesFromPairs(p.HeaderPairs))
	} else {
		r.Header = http.Header(valuesFromProto(p.Header))
	}
	return r
}

// valuesToPairs flattens v into name, value, name, value, ...; nil if v has no values.
func valuesToPairs(v map[string][]string) []string {
	n := 0
	for _, vs := range v {
		n += 2 * len(vs)
	}
	if n == 0 {
		return nil
	}
	out := make([]string, 0, n)
	for k, vs := range v {
		for _, s := range vs {
			out = append(out, k, s)
		}
	}
	return out
}

// valuesFromPairs rebuilds the map valuesToPairs flattened; a trailing name without a value
// (from a broken host) is dropped.
func valuesFromPairs(p []string) map[string][]string {
	out := make(map[string][]string, len(p)/2)
	for i := 0; i+1 < len(p); i += 2 {
		out[p[i]] = append(out[p[i]], p[i+1])
	}
	return out
}

func webhookResponseToProto(r *adapter.WebhookResponse) *pb.WebhookResponse {
	if r == nil {
		return nil
	}
	return &pb.WebhookResponse{Status: int32(r.Status), Header: valuesToProto(r.Header), Body: r.Body}
}

func webhookResponseFromProto(p *pb.WebhookResponse) *adapter.WebhookResponse {
	if p == nil {
		return nil
	}
	return &adapter.WebhookResponse{Status: int(p.Status), Header: http.Header(valuesFromProto(p.Header)), Body: p.Body}
}

func eventToProto(e adapter.Event) *pb.Event {
	p := &pb.Event{Id: e.ID, Bot: e.Bot, Platform: e.Platform, Kind: e.Kind,
		Chat: &pb.Chat{Id: e.Chat.ID, Type: e.Chat.Type}, Sender: &pb.Sender{Id: e.Sender.ID, Name: e.Sender.Name},
		Text: e.Text, Attachments: attachmentsToProto(e.Attachments), Raw: e.Raw}
	if !e.Time.IsZero() {
		p.Time = timestamppb.New(e.Time)
	}
	return p
}

func eventFromProto(p *pb.Event) adapter.Event {
	e := adapter.Event{ID: p.Id, Bot: p.Bot, Platform: p.Platform, Kind: p.Kind,
		Chat:   adapter.Chat{ID: p.GetChat().GetId(), Type: p.GetChat().GetType()},
		Sender: adapter.Sender{ID: p.GetSender().GetId(), Name: p.GetSender().GetName()},
		Text:   p.Text, Attachments: attachmentsFromProto(p.Attachments), Time: timeFromProto(p.Time)}
	if len(p.Raw) > 0 {
		e.Raw = json.RawMessage(p.Raw)
	}
	return e
}

func eventsToProto(es []adapter.Event) []*pb.Event {
	if len(es) == 0 {
		return nil
	}
	out := make([]*pb.Event, len(es))
	for i, e := range es {
		out[i] = eventToProto(e)
	}
	return out
}

func eventsFromProto(ps []*pb.Event) []adapter.Event {
	if len(ps) == 0 {
		return nil
	}
	out := make([]adapter.Event, len(ps))
	for i, p := range ps {
		out[i] = eventFromProto(p)
	}
	return out
}

func timeToProto(t time.Time) *timestamppb.Timestamp {
	if t.IsZero() {
		return nil
	}
	return timestamppb.New(t)
}

func timeFromProto(p *timestamppb.Timestamp) time.Time {
	if p == nil {
		return time.Time{}
	}
	return p.AsTime()
}

func statusToProto(s adapter.Status) *pb.StatusResponse {
	p := &pb.StatusResponse{Bot: s.Bot, Platform: s.Platform, Healthy: s.Healthy, Detail: s.Detail}
	for _, t := range s.Tokens {
		p.Tokens = append(p.Tokens, &pb.TokenStatus{Key: t.Key, Platform: t.Platform, State: t.State,
			Fingerprint: t.Fingerprint, ExpiresAt: timeToProto(t.ExpiresAt), RefreshAt: timeToProto(t.RefreshAt),
			LastRefresh: timeToProto(t.LastRefresh), Generation: t.Generation, Refreshes: t.Refreshes,
			Fetches: t.Fetches, Failures: t.Failures, ConsecutiveFailures: int64(t.Consecutive),
			NextAttempt: timeToProto(t.NextAttempt), LastError: t.LastError})
	}
	return p
}

func statusFromProto(p *pb.StatusResponse) adapter.Status {
	s := adapter.Status{Bot: p.Bot, Platform: p.Platform, Healthy: p.Healthy, Detail: p.Detail,
		Tokens: []tokenmgr.Status{}}
	for _, t := range p.Tokens {
		s.Tokens = append(s.Tokens, tokenmgr.Status{Key: t.Key, Platform: t.Platform, State: t.State,
			Fingerprint: t.Fingerprint, ExpiresAt: timeFromProto(t.ExpiresAt), RefreshAt: timeFromProto(t.RefreshAt),
			LastRefresh: timeFromProto(t.LastRefresh), Generation: t.Generation, Refreshes: t.Refreshes,
			Fetches: t.Fetches, Failures: t.Failures, Consecutive: int(t.ConsecutiveFailures),
			NextAttempt: timeFromProto(t.NextAttempt), LastError: t.LastError})
	}
	return s
}

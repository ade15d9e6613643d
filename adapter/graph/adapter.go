// Package graph is the Microsoft Graph adapter of chatwire: Teams chat and channel messages,
// Outlook mail and OneDrive files over a thin net/http client, with tokens from the identity
// platform (client credentials, rotating refresh tokens, PKCE and device code sign-in) kept by
// tokenmgr, and change notifications turned into events. Package graphtest emulates both.
package graph

import (
	"context"
	"errors"
	"fmt"
	"html"
	"io"
	"log/slog"
	"net/http"
	"path"
	"strings"
	"sync"
	"time"

	"golang.org/x/sync/semaphore"
	"golang.org/x/sync/singleflight"

	"github.com/seed-a64d9e1f/chatwire/adapter"
	"github.com/seed-a64d9e1f/chatwire/tokenmgr"
)

// Auth modes of [Options.Auth].
const (
	AuthDelegated         = "delegated"          // a signed-in user (refresh token): Teams and mail
	AuthClientCredentials = "client_credentials" // the app itself: mail only
)

// Subscription kinds of [Options.Subscribe].
const (
	SubscribeChats = "chats"
	SubscribeMail  = "mail"
)

// Options configure an [Adapter]. Zero values are documented per field.
type Options struct {
	// Bot is the configured bot name, copied into events and status.
	Bot string
	// Config is the app registration (tenant, client id, secret, login base).
	Config Config
	// Auth is AuthDelegated or AuthClientCredentials. Empty means AuthDelegated.
	Auth string
	// User is the bot's mailbox / user (id or UPN). Required with client credentials (the
	// mailbox to send from and watch); with delegated auth, empty means the signed-in user.
	User string
	// GraphBase is Graph's base URL. Empty means DefaultGraphBase.
	GraphBase string
	// HTTPClient sends Graph, token and upload requests. Nil means http.DefaultClient.
	HTTPClient *http.Client
	// Store keeps tokens, rotated refresh tokens and subscription state. Nil means a
	// MemoryStore private to this adapter (a delegated bot then needs Seed first).
	Store tokenmgr.Store
	// Logger receives operational logs; never a token or secret. Nil means none.
	Logger *slog.Logger
	// TokenOptions are passed to the token managers (Store and Logger are set from above).
	TokenOptions tokenmgr.Options

	// NotificationURL is the public HTTPS URL Graph posts change notifications to (the
	// host's /webhook/{bot}). Empty means no subscriptions: use [Adapter.Poll] instead.
	NotificationURL string
	// LifecycleURL receives lifecycle events. Empty means NotificationURL.
	LifecycleURL string
	// ClientState is the secret Graph echoes in every notification; items without it are
	// dropped. Required with NotificationURL.
	ClientState string
	// Subscribe lists what to receive: SubscribeChats, SubscribeMail. Nil means both with
	// delegated auth and mail only with client credentials.
	Subscribe []string
	// Chats limits chat subscriptions and polling to these chat ids. Nil means all chats of
	// the user: one getAllMessages subscription, and for polling and resyncs the chats
	// GET /me/chats lists (each polled every PollInterval; set Chats to watch fewer).
	Chats []string
	// SubscriptionLifetime is how long a subscription is requested for; it is renewed at
	// about 80% of it. Zero means 24 hours.
	SubscriptionLifetime time.Duration
	// PollInterval is how long Poll waits when nothing is new. Zero means 30 seconds.
	PollInterval time.Duration
	// UploadFolder is the OneDrive folder files for Teams go to. Empty means "Chatwire".
	UploadFolder string
	// MaxRetryWait bounds throttling waits inside a call (see ClientOptions). Zero means 10 s.
	MaxRetryWait time.Duration
	// UploadProgress, if not nil, is told about the progress of every OneDrive upload
	// (sent and total bytes of the named file). It must return quickly.
	UploadProgress func(name string, sent, total int64)
	// FetchTimeout bounds fetching the messages of one notification POST, so Graph gets its
	// answer within 3 seconds. Zero means 2.5 seconds.
	FetchTimeout time.Duration
}

// Adapter is a Microsoft Graph bot: Teams chat and channel messages, Outlook mail and
// OneDrive files. It implements [adapter.Adapter], [adapter.Uploader] and [adapter.Poller].
// Its methods are safe for concurrent use.
type Adapter struct {
	opts   Options
	tokens *tokenmgr.Manager
	client *Client
	log    *slog.Logger

	subsMu sync.Mutex // guards subs, subIDs and subIDOrder
	subs   map[string]*subscription
	// subIDs maps the ids of this adapter's subscriptions, current and recent (a recreated
	// subscription's old id may still be redelivered), to their resource: a notification is
	// trusted only for resources under the subscription it names.
	subIDs     map[string]string
	subIDOrder []string

	meMu    sync.Mutex         // guards me; never held across a call
	me      *User              // the bot's user, once self succeeded
	meGroup singleflight.Group // collapses concurrent self lookups
	pollMu  sync.Mutex         // guards poll
	poll    pollState

	fetchSem *semaphore.Weighted // bounds concurrent notification fetches (maxConcurrentFetches)
	fetched  fetchCache          // recent notification fetch outcomes, for redeliveries

	closeOnce sync.Once
	closed    chan struct{}
}

var (
	_ adapter.Adapter  = (*Adapter)(nil)
	_ adapter.Uploader = (*Adapter)(nil)
	_ adapter.Poller   = (*Adapter)(nil)
)

// New returns an Adapter. It makes no network call; call [Adapter.Start] to create
// subscriptions. Close it when done.
func New(opts Options) (*Adapter, error) {
	if opts.Auth == "" {
		opts.Auth = AuthDelegated
	}
	if opts.Auth != AuthDelegated && opts.Auth != AuthClientCredentials {
		return nil, adapter.Errorf(adapter.KindInvalidRequest, "graph: auth %q: want %s or %s", opts.Auth, AuthDelegated, AuthClientCredentials)
	}
	if opts.Config.ClientID == "" {
		return nil, adapter.Errorf(adapter.KindInvalidRequest, "graph: client_id is required")
	}
	if opts.User != "" {
		if err := validUserID("user (the bot's mailbox)", opts.User); err != nil {
			return nil, err
		}
	}
	for _, c := range opts.Chats {
		if err := validChatID("chats: chat", c); err != nil {
			return nil, err
		}
	}
	if opts.Auth == AuthClientCredentials && opts.User == "" {
		return nil, adapter.Errorf(adapter.KindInvalidRequest, "graph: user (the mailbox) is required with client credentials")
	}
	if opts.NotificationURL != "" && opts.ClientState == "" {
		return nil, adapter.Errorf(adapter.KindInvalidRequest, "graph: client_state is required with notification_url")
	}
	if len(opts.ClientState) > 128 {
		return nil, adapter.Errorf(adapter.KindInvalidRequest, "graph: client_state is longer than 128 characters")
	}
	if opts.Subscribe == nil {
		opts.Subscribe = []string{SubscribeMail}
		if opts.Auth == AuthDelegated {
			opts.Subscribe = []string{SubscribeChats, SubscribeMail}
		}
	}
	for _, s := range opts.Subscribe {
		if s != SubscribeChats && s != SubscribeMail {
			return nil, adapter.Errorf(adapter.KindInvalidRequest, "graph: subscribe %q: want chats or mail", s)
		}
		if s == SubscribeChats && opts.Auth == AuthClientCredentials {
			return nil, adapter.Errorf(adapter.KindInvalidRequest, "graph: subscribing to chats needs delegated auth (app-only chat subscriptions need protected API access)")
		}
	}
	if opts.SubscriptionLifetime <= 0 {
		opts.SubscriptionLifetime = 24 * time.Hour
	}
	if opts.PollInterval <= 0 {
		opts.PollInterval = 30 * time.Second
	}
	if opts.UploadFolder == "" {
		opts.UploadFolder = "Chatwire"
	}
	if opts.FetchTimeout <= 0 {
		opts.FetchTimeout = 2500 * time.Millisecond
	}
	if opts.Store == nil {
		opts.Store = new(tokenmgr.MemoryStore)
	}
	if opts.Config.HTTPClient == nil {
		opts.Config.HTTPClient = opts.HTTPClient
	}
	a := &Adapter{opts: opts, log: opts.Logger, subs: map[string]*subscription{}, closed: make(chan struct{}),
		fetchSem: semaphore.NewWeighted(maxConcurrentFetches)}
	if a.log == nil {
		a.log = slog.New(slog.DiscardHandler)
	}
	tmo := opts.TokenOptions
	tmo.Store, tmo.Logger = opts.Store, opts.Logger
	var claims ClaimsSetter
	if opts.Auth == AuthClientCredentials {
		src := opts.Config.ClientCredentials()
		a.tokens, claims = tokenmgr.New(opts.Config.Key(""), src, tmo), src
	} else {
		src := opts.Config.RefreshSource()
		user := opts.User
		if user == "" {
			user = "me"
		}
		a.tokens, claims = tokenmgr.New(opts.Config.Key(user), src, tmo), src
	}
	a.client = NewClient(a.tokens, claims, ClientOptions{GraphBase: opts.GraphBase, HTTPClient: opts.HTTPClient,
		MaxRetryWait: opts.MaxRetryWait, Logger: opts.Logger})
	return a, nil
}

// Client returns the adapter's Graph client, for calls the adapter does not wrap.
func (a *Adapter) Client() *Client { return a.client }

// Tokens returns the adapter's token manager.
func (a *Adapter) Tokens() *tokenmgr.Manager { return a.tokens }

func (a *Adapter) mailbox() string {
	if a.opts.User != "" {
		return a.opts.User
	}
	return "me"
}

// self returns the bot's user, cached after the first success. Concurrent callers share one
// GetUser call (no lock is held across it); a failure is not cached, and a caller whose ctx
// ends leaves while the shared call finishes for the others.
func (a *Adapter) self(ctx context.Context) (*User, error) {
	a.meMu.Lock()
	me := a.me
	a.meMu.Unlock()
	if me != nil {
		return me, nil
	}
	ch := a.meGroup.DoChan("me", func() (any, error) {
		ctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), time.Minute)
		defer cancel()
		u, err := a.client.GetUser(ctx, a.mailbox())
		if err != nil {
			return nil, err
		}
		a.meMu.Lock()
		a.me = u
		a.meMu.Unlock()
		return u, nil
	})
	select {
	case r := <-ch:
		if r.Err != nil {
			return nil, r.Err
		}
		return r.Val.(*User), nil
	case <-ctx.Done():
		return nil, ctx.Err()
	}
}

// errDelegated is returned for Teams sends with client credentials.
func errDelegated() error {
	return &adapter.Error{Kind: adapter.KindUnauthorized, Platform: adapter.PlatformGraph, Code: "DelegatedAuthRequired",
		Message: "Teams messages need delegated auth: Graph allows posting chat and channel messages with client credentials only for imports; set auth: delegated and run graph login"}
}

// Send delivers msg: to a chat, a channel (a reply when ReplyTo is set), a 1:1 chat with a
// user, or mail addresses.
func (a *Adapter) Send(ctx context.Context, msg adapter.Message) (adapter.Receipt, error) {
	if a.isClosed() {
		return adapter.Receipt{}, adapter.Errorf(adapter.KindUnavailable, "graph: adapter closed")
	}
	kind, err := msg.To.Kind()
	if err != nil {
		return adapter.Receipt{}, err
	}
	switch kind {
	case adapter.TargetEmail, adapter.TargetEmails:
		return adapter.Receipt{}, a.sendMail(ctx, msg)
	case adapter.TargetChat, adapter.TargetChannel, adapter.TargetUser:
		if err := validateTarget(msg); err != nil {
			return adapter.Receipt{}, err
		}
		if a.opts.Auth == AuthClientCredentials {
			return adapter.Receipt{}, errDelegated()
		}
		id, err := a.sendTeams(ctx, kind, msg)
		if err != nil {
			return adapter.Receipt{}, toAdapterError(err, "send to %s", msg.To)
		}
		return adapter.Receipt{ID: id}, nil
	}
	return adapter.Receipt{}, adapter.Errorf(adapter.KindInvalidRecipient, "graph: cannot send to %s: use chat, channel, user or email", msg.To)
}

func (a *Adapter) sendTeams(ctx context.Context, kind string, msg adapter.Message) (string, error) {
	m := &NewChatMessage{}
	isHTML := false
	switch {
	case msg.HTML != "":
		m.Body.Content, isHTML = msg.HTML, true
	case msg.Text != "":
		m.Body.Content = msg.Text
	case msg.Markdown != "":
		// Teams chat bodies have no markdown type: sent as the HTML it stands for.
		h, err := markdownHTML(msg.Markdown)
		if err != nil {
			return "", adapter.Errorf(adapter.KindInvalidRequest, "graph: markdown: %v", err)
		}
		m.Body.Content, isHTML = h, true
	}
	if len(msg.Card) > 0 {
		att, err := cardAttachment(msg.Card)
		if err != nil {
			return "", adapter.Errorf(adapter.KindInvalidRequest, "graph: %v", err)
		}
		m.Attachments = append(m.Attachments, att)
	}
	for _, at := range msg.Attachments {
		item, err := a.uploadForTeams(ctx, at)
		if err != nil {
			return "", err
		}
		m.Attachments = append(m.Attachments, ChatAttachment{ID: item.GUID(), ContentType: "reference",
			ContentURL: item.WebURL, Name: item.Name})
	}
	var names []string
	for _, mn := range msg.Mentions {
		name := mn.Name
		if name == "" {
			name = mn.ID
		}
		m.AddMention(mn.ID, name)
		names = append(names, name)
	}
	needHTML := isHTML || len(names) > 0 || len(m.Attachments) > 0
	if needHTML {
		content := m.Body.Content
		if len(names) > 0 {
			content = mentionHTML(content, isHTML, m, names)
		} else if !isHTML {
			content = strings.ReplaceAll(html.EscapeString(content), "\n", "<br>")
		}
		for _, at := range m.Attachments {
			content += `<attachment id="` + at.ID + `"></attachment>`
		}
		m.Body = ChatBody{ContentType: "html", Content: content}
	} else {
		m.Body.ContentType = "text"
	}
	if m.Body.Content == "" {
		return "", adapter.Errorf(adapter.KindInvalidRequest, "graph: empty message: set text, html, markdown, a card or attachments")
	}
	var out *ChatMessage
	var err error
	switch kind {
	case adapter.TargetChannel:
		out, err = a.client.PostChannelMessage(ctx, msg.To.Channel.Team, msg.To.Channel.Channel, msg.ReplyTo, m)
	case adapter.TargetUser:
		me, e := a.self(ctx)
		if e != nil {
			return "", e
		}
		chat, e := a.client.OneOnOneChat(ctx, me.ID, msg.To.User)
		if e != nil {
			return "", e
		}
		out, err = a.client.PostChatMessage(ctx, chat, m)
	default:
		// Chats have no reply threads: ReplyTo is ignored there.
		out, err = a.client.PostChatMessage(ctx, msg.To.Chat, m)
	}
	if err != nil {
		return "", err
	}
	return out.ID, nil
}

// uploadForTeams puts an attachment in the bot's OneDrive (or looks up one already uploaded
// through Upload) and returns the drive item to reference.
func (a *Adapter) uploadForTeams(ctx context.Context, at adapter.Attachment) (*DriveItem, error) {
	if at.ID != "" && at.Data == nil && at.Body == nil {
		var item DriveItem
		if err := a.client.Do(ctx, http.MethodGet, a.drivePrefix()+"/drive/items/"+pathID(at.ID), nil, &item); err != nil {
			return nil, err
		}
		return &item, nil
	}
	up, err := a.Upload(ctx, at)
	if err != nil {
		return nil, err
	}
	return &DriveItem{ID: up.ID, Name: up.Name, WebURL: up.URL, ETag: up.Description}, nil
}

func (a *Adapter) drivePrefix() string {
	if a.opts.User != "" {
		return "/users/" + pathID(a.opts.User)
	}
	return "/me"
}

// Upload stores a file in the bot's OneDrive folder (simple PUT up to 4 MiB, an upload
// session above) and returns it with ID = the drive item id, URL = its webUrl and
// Description = its eTag (which holds the GUID Teams references).
func (a *Adapter) Upload(ctx context.Context, at adapter.Attachment) (adapter.Attachment, error) {
	r, size, err := at.Open()
	if err != nil {
		return adapter.Attachment{}, err
	}
	name := path.Base(strings.ReplaceAll(at.Name, "\\", "/"))
	if name == "" || name == "." || name == "/" {
		name = "file"
	}
	var uo UploadOptions
	if p := a.opts.UploadProgress; p != nil {
		uo.Progress = func(sent, total int64) { p(name, sent, total) }
	}
	item, err := a.client.UploadFile(ctx, a.drivePrefix()+"/drive/root:/"+a.opts.UploadFolder+"/"+name, r, size, uo)
	if err != nil {
		return adapter.Attachment{}, toAdapterError(err, "upload %s", name)
	}
	return adapter.Attachment{Type: at.AttachType(), Name: item.Name, ContentType: at.ContentType, Size: item.Size,
		ID: item.ID, URL: item.WebURL, Description: item.ETag}, nil
}

func (a *Adapter) sendMail(ctx context.Context, msg adapter.Message) error {
	m := &Mail{Subject: msg.Subject}
	switch {
	case msg.HTML != "":
		m.Body = ChatBody{ContentType: "HTML", Content: msg.HTML}
	case msg.Text != "":
		m.Body = ChatBody{ContentType: "Text", Content: msg.Text}
	case msg.Markdown != "":
		h, err := markdownHTML(msg.Markdown) // mail has no markdown type either
		if err != nil {
			return adapter.Errorf(adapter.KindInvalidRequest, "graph: markdown: %v", err)
		}
		m.Body = ChatBody{ContentType: "HTML", Content: h}
	default:
		m.Body = ChatBody{ContentType: "Text"}
	}
	if len(msg.Card) > 0 {
		return adapter.Errorf(adapter.KindInvalidRequest, "graph: cards cannot be mailed")
	}
	addrs := msg.To.Emails
	if msg.To.Email != "" {
		addrs = []string{msg.To.Email}
	}
	for _, addr := range addrs {
		if !strings.Contains(addr, "@") {
			return adapter.Errorf(adapter.KindInvalidRecipient, "graph: %q is not a mail address", addr)
		}
		var r Recipient
		r.EmailAddress.Address = addr
		m.ToRecipients = append(m.ToRecipients, r)
	}
	var large []LargeAttachment
	var inline int
	for _, at := range msg.Attachments {
		rd, size, err := at.Open()
		if err != nil {
			return err
		}
		if size > 150<<20 {
			return adapter.Errorf(adapter.KindTooLarge, "graph: attachment %q is %d bytes; mail takes at most 150 MB", at.Name, size)
		}
		data, err := io.ReadAll(io.LimitReader(rd, size))
		if err != nil {
			return adapter.Errorf(adapter.KindInvalidRequest, "graph: reading attachment %q: %w", at.Name, err)
		}
		ct := at.ContentType
		if ct == "" {
			ct = "application/octet-stream"
		}
		if inline+len(data) <= MaxInlineMailAttachments {
			inline += len(data)
			m.Attachments = append(m.Attachments, MailAttachment{ODataType: "#microsoft.graph.fileAttachment", Name: at.Name, ContentType: ct, ContentBytes: data})
		} else {
			large = append(large, LargeAttachment{Name: at.Name, ContentType: ct, Data: data})
		}
	}
	if err := a.client.SendMail(ctx, a.mailbox(), m, large, nil); err != nil {
		return toAdapterError(err, "send mail to %s", strings.Join(addrs, ","))
	}
	return nil
}

// Status reports the adapter's health and token state.
func (a *Adapter) Status(ctx context.Context) (adapter.Status, error) {
	st := a.tokens.Status()
	s := adapter.Status{Bot: a.opts.Bot, Platform: adapter.PlatformGraph, Tokens: []tokenmgr.Status{st}, Healthy: true}
	switch {
	case a.isClosed():
		s.Healthy, s.Detail = false, "closed"
	case st.State == "fresh" || st.State == "refreshing" || st.State == "failing":
		// A valid token is held (a failing background refresh still leaves it usable).
	case st.State == "empty" && st.LastError == "":
		// No token fetched yet: the first send will fetch one.
	default:
		s.Healthy, s.Detail = false, "token "+st.State
		if st.LastError != "" {
			s.Detail += ": " + st.LastError
		}
	}
	a.subsMu.Lock()
	for _, sub := range a.subs {
		ss := sub.m.Status()
		ss.Fingerprint = "" // a subscription id is not a secret, but keep the shape uniform
		s.Tokens = append(s.Tokens, ss)
	}
	a.subsMu.Unlock()
	return s, nil
}

// Done returns a channel that is closed when the adapter is closed, so background work for
// it (a host retrying [Adapter.Start]) can end with it.
func (a *Adapter) Done() <-chan struct{} { return a.closed }

func (a *Adapter) isClosed() bool {
	select {
	case <-a.closed:
		return true
	default:
		return false
	}
}

// Close stops renewals and token refreshes. Subscriptions are left to expire (another host
// of the fleet may still be using them).
func (a *Adapter) Close() error {
	a.closeOnce.Do(func() {
		close(a.closed)
		a.subsMu.Lock()
		subs := a.subs
		a.subs = map[string]*subscription{}
		a.subsMu.Unlock()
		for _, s := range subs {
			s.m.Close()
		}
		a.tokens.Close()
	})
	return nil
}

// errorf wraps a non-adapter error for returning from the adapter.
func errorf(err error, format string, args ...any) error {
	if err == nil {
		return nil
	}
	if errors.Is(err, context.Canceled) || errors.Is(err, context.DeadlineExceeded) {
		return &adapter.Error{Kind: adapter.KindUnavailable, Platform: adapter.PlatformGraph, Message: strings.TrimPrefix(fmt.Sprintf(format, args...), "graph: ") + ": " + err.Error(), Err: err}
	}
	return toAdapterError(err, format, args...)
}

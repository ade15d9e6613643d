package graphtest

import (
	"encoding/base64"
	"encoding/json"
	"fmt"
	"net/http"
	"net/url"
	"slices"
	"sort"
	"strconv"
	"strings"
	"time"
)

const bearerChallenge = `Bearer realm="", authorization_uri="https://login.microsoftonline.com/common/oauth2/authorize", client_id="` + graphAppID + `"`

// caeChallenge is the claims request of the challenge the emulator sends in CAE mode, and
// caeClaims the base64 form it takes in WWW-Authenticate.
const caeChallenge = `{"access_token":{"nbf":{"essential":true,"value":"1604106651"}}}`

var caeClaims = base64.StdEncoding.EncodeToString([]byte(caeChallenge))

// hasChallengeClaims reports whether a token request's claims parameter asks for every
// access-token claim of caeChallenge. Anything that is not a JSON claims request does not.
func hasChallengeClaims(claims string) bool {
	var want, got struct {
		AccessToken map[string]json.RawMessage `json:"access_token"`
	}
	if json.Unmarshal([]byte(caeChallenge), &want) != nil || json.Unmarshal([]byte(claims), &got) != nil {
		return false
	}
	for k := range want.AccessToken {
		if _, ok := got.AccessToken[k]; !ok {
			return false
		}
	}
	return true
}

// declaresCP1 reports whether a token request's claims parameter declares the client
// capability cp1 ({"access_token":{"xms_cc":{"values":["cp1"]}}}): only such clients get CAE
// claims challenges (spec §2); the others see a revoked token as an expired one.
func declaresCP1(claims string) bool {
	var c struct {
		AccessToken struct {
			XMSCC struct {
				Values []string `json:"values"`
			} `json:"xms_cc"`
		} `json:"access_token"`
	}
	if json.Unmarshal([]byte(claims), &c) != nil {
		return false
	}
	// Capability names are case-insensitive: MSAL and the docs send "cp1", azidentity "CP1".
	return slices.ContainsFunc(c.AccessToken.XMSCC.Values, func(v string) bool { return strings.EqualFold(v, "cp1") })
}

// claimsChallenge writes Graph's CAE claims challenge.
func claimsChallenge(w http.ResponseWriter) {
	w.Header().Set("WWW-Authenticate", bearerChallenge+`, error="insufficient_claims", claims="`+caeClaims+`"`)
	graphError(w, http.StatusUnauthorized, "InvalidAuthenticationToken", "Continuous access evaluation resulted in challenge with result: InteractionRequired and code: TokenIssuedBeforeRevocationTimestamp")
}

// claimsPendingLocked reports whether CAE still challenges t: t declares cp1, its app or user
// was challenged, and t was not requested with the claims. A token with the claims ends the
// challenge.
func (s *Server) claimsPendingLocked(t *accessToken) bool {
	p := principal{t.client, t.user}
	if !s.challenged[p] || !declaresCP1(t.claims) {
		return false
	}
	if !hasChallengeClaims(t.claims) {
		return true
	}
	delete(s.challenged, p)
	return false
}

func unauthorized(w http.ResponseWriter, msg string) {
	w.Header().Set("WWW-Authenticate", bearerChallenge)
	graphError(w, http.StatusUnauthorized, "InvalidAuthenticationToken", msg)
}

// authGraph checks the bearer token of a Graph request. It returns the token's user ("" for an
// app-only token) or writes the 401 Graph would.
func (s *Server) authGraph(w http.ResponseWriter, r *http.Request) (tok *accessToken, ok bool) {
	h := r.Header.Get("Authorization")
	raw, _ := strings.CutPrefix(h, "Bearer ")
	raw = strings.TrimSpace(raw)
	s.mu.Lock()
	s.initLocked()
	t := s.tokens[raw]
	status := http.StatusUnauthorized
	dropped := false
	defer func() {
		s.graphReqs = append(s.graphReqs, Request{Method: r.Method, Path: r.URL.Path, Auth: raw, Status: status})
		s.mu.Unlock()
		if dropped {
			panic(http.ErrAbortHandler) // the client sees a reset connection
		}
	}()
	switch {
	case raw == "":
		unauthorized(w, "Access token is empty.")
	case t == nil:
		unauthorized(w, "CompactToken parsing failed with error code: 80049217")
	case t.revoked && s.CAE && declaresCP1(t.claims):
		if s.challenged == nil {
			s.challenged = map[principal]bool{}
		}
		s.challenged[principal{t.client, t.user}] = true
		claimsChallenge(w)
	case t.revoked || !time.Now().Before(t.expires):
		unauthorized(w, "Access token has expired or is not yet valid.")
	case s.CAE && s.claimsPendingLocked(t):
		claimsChallenge(w)
	default:
		if len(s.faults) > 0 {
			f := s.faults[0]
			s.faults = s.faults[1:]
			if f.drop {
				status, dropped = 0, true
				return nil, false
			}
			status = f.status
			if f.retryAfter != "" {
				w.Header().Set("Retry-After", f.retryAfter)
			}
			msg := "The request has been throttled"
			if f.status != http.StatusTooManyRequests {
				msg = "The service is temporarily unavailable."
			}
			graphError(w, f.status, f.code, msg)
			return nil, false
		}
		status = http.StatusOK
		return t, true
	}
	return nil, false
}

func baseURL(r *http.Request) string {
	scheme := "http"
	if r.TLS != nil {
		scheme = "https"
	}
	return scheme + "://" + r.Host
}

func (s *Server) serveGraph(w http.ResponseWriter, r *http.Request) {
	tok, ok := s.authGraph(w, r)
	if !ok {
		return
	}
	rest := strings.TrimPrefix(r.URL.Path, "/v1.0/")
	seg := strings.Split(rest, "/")
	user := ""
	switch {
	case seg[0] == "me":
		if tok.user == "" {
			graphError(w, http.StatusBadRequest, "BadRequest", "/me request is only valid with delegated authentication flow.")
			return
		}
		user, seg = tok.user, seg[1:]
	case seg[0] == "users" && len(seg) > 1:
		user, seg = seg[1], seg[2:]
	}
	m := r.Method
	n := len(seg)
	at := func(i int, v string) bool { return n > i && seg[i] == v }
	switch {
	case user != "" && n == 0 && m == http.MethodGet:
		writeJSON(w, http.StatusOK, map[string]any{"id": user, "displayName": user, "mail": user, "userPrincipalName": user})
	case user != "" && n == 1 && at(0, "chats") && m == http.MethodGet:
		s.listChats(w, r, user)
	case user == "" && n == 1 && at(0, "chats") && m == http.MethodPost:
		s.createChat(w, r, tok)
	case user == "" && at(0, "chats") && n == 3 && at(2, "messages") && m == http.MethodPost:
		s.postChat(w, r, tok, seg[1], "", "", "")
	case user == "" && at(0, "chats") && n == 3 && at(2, "messages") && m == http.MethodGet:
		s.listChat(w, r, seg[1])
	case user == "" && at(0, "chats") && n == 4 && at(2, "messages") && m == http.MethodGet:
		s.getChat(w, seg[1], seg[3])
	case user == "" && at(0, "teams") && at(2, "channels") && n == 5 && at(4, "messages") && m == http.MethodPost:
		s.postChat(w, r, tok, "", seg[1], seg[3], "")
	case user == "" && at(0, "teams") && at(2, "channels") && n == 5 && at(4, "messages") && m == http.MethodGet:
		s.listChat(w, r, seg[1]+"/"+seg[3])
	case user == "" && at(0, "teams") && at(2, "channels") && n == 7 && at(6, "replies") && m == http.MethodPost:
		s.postChat(w, r, tok, "", seg[1], seg[3], seg[5])
	case user == "" && at(0, "teams") && at(2, "channels") && n == 6 && at(4, "messages") && m == http.MethodGet:
		s.getChat(w, seg[1]+"/"+seg[3], seg[5])
	case user == "" && at(0, "teams") && at(2, "channels") && n == 8 && at(6, "replies") && m == http.MethodGet:
		s.getChat(w, seg[1]+"/"+seg[3], seg[7])
	case user == "" && at(0, "subscriptions"):
		s.serveSubscriptions(w, r, tok, seg[1:])
	case user != "" && n == 1 && at(0, "sendMail") && m == http.MethodPost:
		s.sendMail(w, r, user)
	case user != "" && n == 1 && at(0, "messages") && m == http.MethodPost:
		s.createDraft(w, r, user)
	case user != "" && n == 2 && at(0, "messages") && m == http.MethodGet:
		s.getMail(w, user, seg[1])
	case user != "" && n == 3 && at(0, "messages") && at(2, "send") && m == http.MethodPost:
		s.sendDraft(w, user, seg[1])
	case user != "" && n == 3 && at(0, "messages") && at(2, "attachments") && m == http.MethodPost:
		s.addAttachment(w, r, user, seg[1])
	case user != "" && n == 4 && at(0, "messages") && at(2, "attachments") && at(3, "createUploadSession") && m == http.MethodPost:
		s.createMailUpload(w, r, user, seg[1])
	case user != "" && at(0, "mailFolders") && n >= 3 && strings.EqualFold(strings.Trim(seg[1], "()'"), "inbox") && at(2, "messages") && m == http.MethodGet:
		s.listMail(w, r, user, n == 4 && seg[3] == "delta")
	case user != "" && at(0, "drive"):
		s.serveDrive(w, r, tok, user, strings.Join(seg[1:], "/"))
	default:
		graphError(w, http.StatusNotFound, "UnknownError", fmt.Sprintf("no such endpoint: %s %s", m, r.URL.Path))
	}
}

type chatBody struct {
	Body struct {
		ContentType string `json:"contentType"`
		Content     string `json:"content"`
	} `json:"body"`
	Mentions []struct {
		ID          int    `json:"id"`
		MentionText string `json:"mentionText"`
		Mentioned   struct {
			User struct {
				ID string `json:"id"`
			} `json:"user"`
		} `json:"mentioned"`
	} `json:"mentions"`
	Attachments []struct {
		ID          string `json:"id"`
		ContentType string `json:"contentType"`
		ContentURL  string `json:"contentUrl"`
		Name        string `json:"name"`
	} `json:"attachments"`
}

func (s *Server) postChat(w http.ResponseWriter, r *http.Request, tok *accessToken, chat, team, channel, parent string) {
	if tok.user == "" {
		graphError(w, http.StatusUnauthorized, "Unauthorized", "Message POST is allowed in application-only context only for import purposes. Refer to https://learn.microsoft.com/microsoftteams/platform/graph-api/import-messages/import-external-messages-to-teams for more details.")
		return
	}
	raw, ok := readBody(w, r, 4<<20)
	if !ok {
		return
	}
	var b chatBody
	if err := json.Unmarshal(raw, &b); err != nil || b.Body.Content == "" {
		graphError(w, http.StatusBadRequest, "BadRequest", "Invalid request body: a chatMessage with body.content is required.")
		return
	}
	ct := strings.ToLower(b.Body.ContentType)
	if ct == "" {
		ct = "text"
	}
	if ct != "text" && ct != "html" {
		graphError(w, http.StatusBadRequest, "BadRequest", "Invalid contentType "+b.Body.ContentType)
		return
	}
	for _, mn := range b.Mentions {
		if ct != "html" || !strings.Contains(b.Body.Content, fmt.Sprintf(`<at id="%d">`, mn.ID)) || mn.Mentioned.User.ID == "" {
			graphError(w, http.StatusBadRequest, "BadRequest", fmt.Sprintf("Mention id %d has no matching <at> tag in an html body, or no user.", mn.ID))
			return
		}
	}
	sent := Sent{ChatID: chat, TeamID: team, ChannelID: channel, ReplyTo: parent, From: tok.user, Raw: raw,
		ContentType: ct, Content: b.Body.Content}
	key := chat
	switch {
	case parent != "":
		sent.Kind, key = "reply", team+"/"+channel
	case chat != "":
		sent.Kind = "chat"
	default:
		sent.Kind, key = "channel", team+"/"+channel
	}
	s.mu.Lock()
	for _, a := range b.Attachments {
		if a.ContentType != "reference" {
			continue
		}
		if !strings.Contains(b.Body.Content, fmt.Sprintf(`<attachment id="%s"></attachment>`, a.ID)) || !s.fileByURLLocked(a.ID, a.ContentURL) {
			s.mu.Unlock()
			graphError(w, http.StatusBadRequest, "BadRequest", "Reference attachment "+a.ID+" must match a driveItem (eTag GUID, webUrl) and an <attachment> tag in the body.")
			return
		}
		sent.Attachments = append(sent.Attachments, SentAttachment{ID: a.ID, Name: a.Name, ContentType: a.ContentType, ContentURL: a.ContentURL})
	}
	if parent != "" && s.findChatLocked(key, parent) == nil {
		s.mu.Unlock()
		graphError(w, http.StatusNotFound, "NotFound", "Parent message "+parent+" not found.")
		return
	}
	msg := s.addChatLocked(key, chat, team, channel, parent, tok.user, "Bot User", ct, b.Body.Content, false)
	sent.ID = msg.ID
	s.sent = append(s.sent, sent)
	ds := s.notifyChatLocked(msg)
	s.mu.Unlock()
	s.deliverAsync(ds)
	writeJSON(w, http.StatusCreated, chatJSON(msg))
}

func (s *Server) fileByURLLocked(id, contentURL string) bool {
	for _, f := range s.files {
		if strings.Contains(f.ETag, strings.ToUpper(id)) && f.WebURL == contentURL {
			return true
		}
	}
	return false
}

func (s *Server) addChatLocked(key, chat, team, channel, parent, from, fromName, ct, content string, system bool) *ChatMessage {
	s.initLocked()
	// Message ids are epoch milliseconds, as Teams uses; kept unique and increasing.
	id := time.Now().UnixMilli()
	for _, list := range s.chats {
		for _, m := range list {
			if v, _ := strconv.ParseInt(m.ID, 10, 64); v >= id {
				id = v + 1
			}
		}
	}
	msg := &ChatMessage{ID: strconv.FormatInt(id, 10), ChatID: chat, TeamID: team, ChannelID: channel, ReplyTo: parent,
		FromID: from, FromName: fromName, ContentType: ct, Content: content, Created: time.Now().UTC(), System: system}
	s.chats[key] = append(s.chats[key], msg)
	return msg
}

func (s *Server) findChatLocked(key, id string) *ChatMessage {
	for _, m := range s.chats[key] {
		if m.ID == id {
			return m
		}
	}
	return nil
}

// createChat answers POST /chats for a oneOnOne chat: the chat id is derived from the two
// members, so asking again gives the same chat, as Graph does.
func (s *Server) createChat(w http.ResponseWriter, r *http.Request, tok *accessToken) {
	raw, ok := readBody(w, r, 1<<20)
	if !ok {
		return
	}
	var b struct {
		ChatType string `json:"chatType"`
		Members  []struct {
			User string `json:"user@odata.bind"`
		} `json:"members"`
	}
	if err := json.Unmarshal(raw, &b); err != nil || b.ChatType != "oneOnOne" || len(b.Members) != 2 {
		graphError(w, http.StatusBadRequest, "BadRequest", "A oneOnOne chat needs chatType and exactly two members.")
		return
	}
	var ids []string
	for _, m := range b.Members {
		u := m.User[strings.LastIndex(m.User, "/")+1:]
		u = strings.TrimSuffix(strings.TrimPrefix(u, "users('"), "')")
		if u == "" {
			graphError(w, http.StatusBadRequest, "BadRequest", "member without user@odata.bind")
			return
		}
		ids = append(ids, u)
	}
	sort.Strings(ids)
	id := "19:" + ids[0] + "_" + ids[1] + "@unq.gbl.spaces"
	s.mu.Lock()
	s.initLocked()
	if _, ok := s.chats[id]; !ok {
		s.chats[id] = nil // listed by GET /me/chats from now on
	}
	s.mu.Unlock()
	writeJSON(w, http.StatusCreated, map[string]any{"id": id, "chatType": "oneOnOne"})
}

// pageParams reads the paging query of a list request: $top (default 20, at most 50) and
// $skiptoken (the emulator's tokens are offsets). A $top above 50 or a $skiptoken that is
// not an offset is answered with 400 and ok false.
func pageParams(w http.ResponseWriter, r *http.Request) (top, skip int, ok bool) {
	q := r.URL.Query()
	top, _ = strconv.Atoi(q.Get("$top"))
	if top <= 0 {
		top = 20
	}
	if top > 50 {
		graphError(w, http.StatusBadRequest, "BadRequest", "$top must be at most 50.")
		return 0, 0, false
	}
	if st := q.Get("$skiptoken"); st != "" {
		var err error
		if skip, err = strconv.Atoi(st); err != nil || skip < 0 {
			graphError(w, http.StatusBadRequest, "BadRequest", "Invalid $skiptoken: follow @odata.nextLink as given.")
			return 0, 0, false
		}
	}
	return top, skip, true
}

// page is the response of one page of a list of total items: out, and an @odata.nextLink
// to the next page if there is one.
func page(r *http.Request, out []any, top, skip, total int) map[string]any {
	resp := map[string]any{"value": out}
	if skip+top < total {
		v := url.Values{}
		v.Set("$top", strconv.Itoa(top))
		v.Set("$skiptoken", strconv.Itoa(skip+top))
		resp["@odata.nextLink"] = baseURL(r) + r.URL.Path + "?" + v.Encode()
	}
	return resp
}

// listChats answers GET /me/chats (and /users/{id}/chats): the chats the user is in, as
// pages of $top (default 20, at most 50) linked by @odata.nextLink. A oneOnOne chat
// ("19:a_b@unq.gbl.spaces") has its two users as members; the emulator counts every user as
// a member of every other chat (those AddChatMessage created).
func (s *Server) listChats(w http.ResponseWriter, r *http.Request, user string) {
	top, skip, ok := pageParams(w, r)
	if !ok {
		return
	}
	type chat struct {
		id      string
		created time.Time
	}
	s.mu.Lock()
	s.initLocked()
	var list []chat
	for id, msgs := range s.chats {
		if strings.Contains(id, "/") { // a channel
			continue
		}
		if strings.HasSuffix(id, "@unq.gbl.spaces") {
			a, b, _ := strings.Cut(strings.TrimSuffix(strings.TrimPrefix(id, "19:"), "@unq.gbl.spaces"), "_")
			if user != a && user != b {
				continue
			}
		}
		c := chat{id: id}
		if len(msgs) > 0 {
			c.created = msgs[0].Created
		}
		list = append(list, c)
	}
	s.mu.Unlock()
	sort.Slice(list, func(i, j int) bool { return list[i].id < list[j].id })
	out := []any{}
	for i := skip; i < len(list) && i < skip+top; i++ {
		c := list[i]
		ct := "group"
		if strings.HasSuffix(c.id, "@unq.gbl.spaces") {
			ct = "oneOnOne"
		}
		out = append(out, map[string]any{"id": c.id, "chatType": ct, "topic": nil,
			"createdDateTime": c.created.Format(time.RFC3339Nano), "lastUpdatedDateTime": c.created.Format(time.RFC3339Nano)})
	}
	writeJSON(w, http.StatusOK, page(r, out, top, skip, len(list)))
}

// AddChatMessage posts a message into a 1:1 or group chat as user fromID (empty: a system
// message with from: null) and notifies subscriptions. It waits until notifications were
// delivered and returns the message.
func (s *Server) AddChatMessage(chatID, fromID, fromName, text string) *ChatMessage {
	s.mu.Lock()
	msg := s.addChatLocked(chatID, chatID, "", "", "", fromID, fromName, "text", text, fromID == "")
	ds := s.notifyChatLocked(msg)
	s.mu.Unlock()
	s.deliverAll(ds)
	return msg
}

// AddChannelMessage posts a message into a channel as user fromID (a reply if replyTo is not
// empty), notifies subscriptions, and waits for the deliveries.
func (s *Server) AddChannelMessage(team, channel, replyTo, fromID, fromName, text string) *ChatMessage {
	s.mu.Lock()
	msg := s.addChatLocked(team+"/"+channel, "", team, channel, replyTo, fromID, fromName, "text", text, fromID == "")
	ds := s.notifyChatLocked(msg)
	s.mu.Unlock()
	s.deliverAll(ds)
	return msg
}

func chatJSON(m *ChatMessage) map[string]any {
	v := map[string]any{
		"id": m.ID, "messageType": "message", "createdDateTime": m.Created.Format(time.RFC3339Nano),
		"lastModifiedDateTime": m.Created.Format(time.RFC3339Nano),
		"body":                 map[string]string{"contentType": m.ContentType, "content": m.Content},
		"attachments":          []any{}, "mentions": []any{},
	}
	if m.ReplyTo != "" {
		v["replyToId"] = m.ReplyTo
	}
	if m.ChatID != "" {
		v["chatId"] = m.ChatID
	} else {
		v["channelIdentity"] = map[string]string{"teamId": m.TeamID, "channelId": m.ChannelID}
	}
	if m.System {
		v["messageType"] = "unknownFutureValue"
		v["from"] = nil
	} else {
		v["from"] = map[string]any{"user": map[string]string{"id": m.FromID, "displayName": m.FromName, "userIdentityType": "aadUser"}}
	}
	return v
}

func (s *Server) listChat(w http.ResponseWriter, r *http.Request, key string) {
	top, skip, ok := pageParams(w, r)
	if !ok {
		return
	}
	s.mu.Lock()
	s.initLocked()
	var list []*ChatMessage
	for _, m := range s.chats[key] {
		if m.ReplyTo == "" {
			list = append(list, m)
		}
	}
	s.mu.Unlock()
	sort.SliceStable(list, func(i, j int) bool { return list[i].ID > list[j].ID }) // newest first
	out := []any{}
	for i := skip; i < len(list) && i < skip+top; i++ {
		out = append(out, chatJSON(list[i]))
	}
	writeJSON(w, http.StatusOK, page(r, out, top, skip, len(list)))
}

func (s *Server) getChat(w http.ResponseWriter, key, id string) {
	s.mu.Lock()
	s.initLocked()
	m := s.findChatLocked(key, id)
	var v map[string]any
	if m != nil {
		v = chatJSON(m)
	}
	s.mu.Unlock()
	if m == nil {
		graphError(w, http.StatusNotFound, "NotFound", "Message "+id+" not found.")
		return
	}
	writeJSON(w, http.StatusOK, v)
}

// Messages returns the messages of a chat (or "team/channel"), oldest first.
func (s *Server) Messages(key string) []ChatMessage {
	s.mu.Lock()
	defer s.mu.Unlock()
	var out []ChatMessage
	for _, m := range s.chats[key] {
		out = append(out, *m)
	}
	return out
}

// ---- mail ----

type mailJSON struct {
	Subject string `json:"subject"`
	Body    struct {
		ContentType string `json:"contentType"`
		Content     string `json:"content"`
	} `json:"body"`
	ToRecipients []struct {
		EmailAddress struct {
			Address string `json:"address"`
		} `json:"emailAddress"`
	} `json:"toRecipients"`
	Attachments []struct {
		Type         string `json:"@odata.type"`
		Name         string `json:"name"`
		ContentType  string `json:"contentType"`
		ContentBytes []byte `json:"contentBytes"`
	} `json:"attachments"`
}

func (s *Server) decodeMail(w http.ResponseWriter, raw []byte) (*MailMessage, bool) {
	var m mailJSON
	if err := json.Unmarshal(raw, &m); err != nil {
		graphError(w, http.StatusBadRequest, "ErrorInvalidRequest", "Cannot read the request body: "+err.Error())
		return nil, false
	}
	ct := m.Body.ContentType
	if ct != "" && !strings.EqualFold(ct, "text") && !strings.EqualFold(ct, "html") {
		graphError(w, http.StatusBadRequest, "ErrorInvalidRequest", "Invalid body contentType.")
		return nil, false
	}
	mm := &MailMessage{Subject: m.Subject, ContentType: ct, Content: m.Body.Content}
	for _, t := range m.ToRecipients {
		mm.To = append(mm.To, t.EmailAddress.Address)
	}
	total := 0
	for _, a := range m.Attachments {
		if a.Type != "#microsoft.graph.fileAttachment" {
			graphError(w, http.StatusBadRequest, "ErrorInvalidRequest", "Unsupported attachment type "+a.Type)
			return nil, false
		}
		total += len(a.ContentBytes)
		mm.Attachments = append(mm.Attachments, SentAttachment{Name: a.Name, ContentType: a.ContentType, Data: a.ContentBytes})
	}
	if total > 3<<20 {
		graphError(w, http.StatusRequestEntityTooLarge, "ErrorRequestEntityTooLarge", "The attachments exceed 3 MB; use an upload session.")
		return nil, false
	}
	return mm, true
}

func (s *Server) sendMail(w http.ResponseWriter, r *http.Request, user string) {
	raw, ok := readBody(w, r, 8<<20)
	if !ok {
		return
	}
	var env struct {
		Message json.RawMessage `json:"message"`
	}
	if err := json.Unmarshal(raw, &env); err != nil || len(env.Message) == 0 {
		graphError(w, http.StatusBadRequest, "ErrorInvalidRequest", "The message parameter is required.")
		return
	}
	mm, ok := s.decodeMail(w, env.Message)
	if !ok {
		return
	}
	if len(mm.To) == 0 {
		graphError(w, http.StatusBadRequest, "ErrorInvalidRecipients", "At least one recipient is not valid., Recipient is missing.")
		return
	}
	mm.From = user
	s.recordMail(mm, env.Message)
	w.WriteHeader(http.StatusAccepted)
}

func (s *Server) recordMail(mm *MailMessage, raw []byte) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.sent = append(s.sent, Sent{Kind: "mail", From: mm.From, Raw: raw, ContentType: mm.ContentType, Content: mm.Content,
		Subject: mm.Subject, To: mm.To, Attachments: mm.Attachments})
}

func (s *Server) createDraft(w http.ResponseWriter, r *http.Request, user string) {
	raw, ok := readBody(w, r, 8<<20)
	if !ok {
		return
	}
	mm, ok := s.decodeMail(w, raw)
	if !ok {
		return
	}
	mm.From = user
	s.mu.Lock()
	s.initLocked()
	mm.ID = "draft-" + randomString(8)
	s.drafts[user+"/"+mm.ID] = mm
	s.mu.Unlock()
	writeJSON(w, http.StatusCreated, map[string]any{"id": mm.ID, "isDraft": true, "subject": mm.Subject})
}

func (s *Server) draft(w http.ResponseWriter, user, id string) *MailMessage {
	s.initLocked()
	d := s.drafts[user+"/"+id]
	if d == nil {
		graphError(w, http.StatusNotFound, "ErrorItemNotFound", "The specified object was not found in the store.")
	}
	return d
}

func (s *Server) addAttachment(w http.ResponseWriter, r *http.Request, user, id string) {
	raw, ok := readBody(w, r, 8<<20)
	if !ok {
		return
	}
	var a struct {
		Name         string `json:"name"`
		ContentType  string `json:"contentType"`
		ContentBytes []byte `json:"contentBytes"`
	}
	if err := json.Unmarshal(raw, &a); err != nil {
		graphError(w, http.StatusBadRequest, "ErrorInvalidRequest", err.Error())
		return
	}
	if len(a.ContentBytes) > 3<<20 {
		graphError(w, http.StatusRequestEntityTooLarge, "ErrorRequestEntityTooLarge", "The attachment exceeds 3 MB; use an upload session.")
		return
	}
	s.mu.Lock()
	d := s.draft(w, user, id)
	if d != nil {
		d.Attachments = append(d.Attachments, SentAttachment{Name: a.Name, ContentType: a.ContentType, Data: a.ContentBytes})
	}
	s.mu.Unlock()
	if d != nil {
		writeJSON(w, http.StatusCreated, map[string]any{"id": randomString(6), "name": a.Name})
	}
}

func (s *Server) sendDraft(w http.ResponseWriter, user, id string) {
	s.mu.Lock()
	d := s.draft(w, user, id)
	if d != nil {
		delete(s.drafts, user+"/"+id)
	}
	s.mu.Unlock()
	if d == nil {
		return
	}
	if len(d.To) == 0 {
		graphError(w, http.StatusBadRequest, "ErrorInvalidRecipients", "At least one recipient is not valid., Recipient is missing.")
		return
	}
	raw, _ := json.Marshal(map[string]any{"subject": d.Subject, "draft": d.ID})
	s.recordMail(d, raw)
	w.WriteHeader(http.StatusAccepted)
}

// DeliverMail puts a message from sender into user's inbox, notifies subscriptions and waits
// for the deliveries. It returns the message id.
func (s *Server) DeliverMail(user, from, subject, text string) string {
	s.mu.Lock()
	s.initLocked()
	s.seq++
	mm := &MailMessage{ID: fmt.Sprintf("AAMk%06d", s.seq), From: from, Subject: subject, ContentType: "text", Content: text,
		To: []string{user}, Received: time.Now().UTC(), seq: s.seq, modSeq: s.seq}
	s.mail[user] = append(s.mail[user], mm)
	ds := s.notifyMailLocked(user, mm)
	s.mu.Unlock()
	s.deliverAll(ds)
	return mm.ID
}

// MarkMailRead marks a message in user's inbox read (an update: Graph's delta reports the
// message again, as it does for any change, unless asked for changeType=created). It
// reports whether the message exists.
func (s *Server) MarkMailRead(user, id string) bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.initLocked()
	for _, m := range s.mail[user] {
		if m.ID == id && !m.deleted {
			s.seq++
			m.IsRead, m.modSeq = true, s.seq
			return true
		}
	}
	return false
}

// DeleteMail deletes a message from user's inbox: GET answers 404 and delta reports it as
// {"id", "@removed":{"reason":"deleted"}}. It reports whether the message existed.
func (s *Server) DeleteMail(user, id string) bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.initLocked()
	for _, m := range s.mail[user] {
		if m.ID == id && !m.deleted {
			s.seq++
			m.deleted, m.modSeq = true, s.seq
			return true
		}
	}
	return false
}

func mailToJSON(m *MailMessage) map[string]any {
	return map[string]any{
		"id": m.ID, "subject": m.Subject, "receivedDateTime": m.Received.Format(time.RFC3339),
		"body":         map[string]string{"contentType": m.ContentType, "content": m.Content},
		"from":         map[string]any{"emailAddress": map[string]string{"address": m.From, "name": m.From}},
		"sender":       map[string]any{"emailAddress": map[string]string{"address": m.From, "name": m.From}},
		"toRecipients": []any{map[string]any{"emailAddress": map[string]string{"address": strings.Join(m.To, ",")}}},
		"isDraft":      false,
		"isRead":       m.IsRead,
	}
}

func (s *Server) getMail(w http.ResponseWriter, user, id string) {
	s.mu.Lock()
	s.initLocked()
	var v map[string]any
	for _, m := range s.mail[user] {
		if m.ID == id && !m.deleted {
			v = mailToJSON(m)
		}
	}
	s.mu.Unlock()
	if v == nil {
		graphError(w, http.StatusNotFound, "ErrorItemNotFound", "The specified object was not found in the store.")
		return
	}
	writeJSON(w, http.StatusOK, v)
}

// listMail lists user's inbox, or answers a delta query. Delta behaves as Graph's
// message delta (learn.microsoft.com/graph/api/message-delta, /graph/delta-query-messages):
// the first round (no $deltatoken) returns every message in the folder; later rounds return
// what changed since the token: created and updated messages as items, deleted ones as
// {"id", "@removed":{"reason":"deleted"}}. The changeType option (created, updated or
// deleted), given on the first request, is kept in the deltaLink and limits later rounds to
// that kind of change.
func (s *Server) listMail(w http.ResponseWriter, r *http.Request, user string, delta bool) {
	q := r.URL.Query()
	after := -1
	changeType := q.Get("changeType")
	if delta {
		after = 0
		if t := q.Get("$deltatoken"); t != "" {
			n, ct, _ := strings.Cut(t, ".")
			v, err := strconv.Atoi(n)
			if err != nil || v < 0 {
				graphError(w, http.StatusBadRequest, "SyncStateNotFound", "The sync state generation is not found.")
				return
			}
			after = v
			if ct != "" {
				changeType = ct
			}
		}
		switch changeType {
		case "", "created", "updated", "deleted":
		default:
			graphError(w, http.StatusBadRequest, "ErrorInvalidParameter", "The value of changeType is not valid.")
			return
		}
	}
	initial := delta && q.Get("$deltatoken") == ""
	s.mu.Lock()
	s.initLocked()
	out := []any{}
	last := after
	box := s.mail[user]
	if delta {
		for _, m := range box {
			switch {
			case initial:
				if !m.deleted {
					out = append(out, mailToJSON(m))
				}
			case m.seq > after: // created since the token
				if !m.deleted && (changeType == "" || changeType == "created") {
					out = append(out, mailToJSON(m))
				}
			case m.modSeq > after && m.deleted:
				if changeType == "" || changeType == "deleted" {
					out = append(out, map[string]any{"@odata.type": "#microsoft.graph.message", "id": m.ID,
						"@removed": map[string]any{"reason": "deleted"}})
				}
			case m.modSeq > after: // updated since the token
				if changeType == "" || changeType == "updated" {
					out = append(out, mailToJSON(m))
				}
			}
		}
		last = s.seq
	} else {
		for i := len(box) - 1; i >= 0; i-- { // newest first
			if !box[i].deleted {
				out = append(out, mailToJSON(box[i]))
			}
		}
	}
	s.mu.Unlock()
	resp := map[string]any{"value": out}
	if delta {
		tok := strconv.Itoa(last)
		if changeType != "" {
			tok += "." + changeType
		}
		resp["@odata.deltaLink"] = baseURL(r) + r.URL.Path + "?$deltatoken=" + tok
	}
	writeJSON(w, http.StatusOK, resp)
}

package graphtest

import (
	"bytes"
	"cmp"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"strings"
	"sync"
	"time"
)

// TenantID is the tenant id the emulator puts in notifications.
const TenantID = "00000000-0000-0000-0000-0000000000aa"

func (s *Server) httpClient() *http.Client {
	if s.Client != nil {
		return s.Client
	}
	return http.DefaultClient
}

func isTeams(resource string) bool {
	r := strings.ToLower(resource)
	return strings.HasPrefix(r, "chats") || strings.HasPrefix(r, "teams") || strings.Contains(r, "/chats")
}

func (s *Server) serveSubscriptions(w http.ResponseWriter, r *http.Request, tok *accessToken, seg []string) {
	switch {
	case len(seg) == 0 && r.Method == http.MethodPost:
		s.createSubscription(w, r, tok)
	case len(seg) == 0 && r.Method == http.MethodGet:
		out := []any{}
		for _, sub := range s.Subscriptions() {
			out = append(out, subJSON(&sub))
		}
		writeJSON(w, http.StatusOK, map[string]any{"value": out})
	case len(seg) == 1 && r.Method == http.MethodPatch:
		raw, ok := readBody(w, r, 1<<20)
		if !ok {
			return
		}
		var body struct {
			Expiration time.Time `json:"expirationDateTime"`
		}
		if err := json.Unmarshal(raw, &body); err != nil {
			graphError(w, http.StatusBadRequest, "InvalidRequest", "expirationDateTime is required.")
			return
		}
		s.mu.Lock()
		sub := s.subs[seg[0]]
		var errMsg string
		if sub != nil {
			exp, msg := clampExpiration(sub.Resource, body.Expiration, sub.LifecycleURL != "")
			if errMsg = msg; msg == "" {
				sub.Expiration = exp
			}
		}
		var v map[string]any
		if sub != nil {
			v = subJSON(sub)
		}
		s.mu.Unlock()
		switch {
		case sub == nil:
			graphError(w, http.StatusNotFound, "ResourceNotFound", "The object was not found.")
		case errMsg != "":
			graphError(w, http.StatusBadRequest, "InvalidRequest", errMsg)
		default:
			writeJSON(w, http.StatusOK, v)
		}
	case len(seg) == 1 && r.Method == http.MethodDelete:
		s.mu.Lock()
		_, ok := s.subs[seg[0]]
		delete(s.subs, seg[0])
		s.mu.Unlock()
		if !ok {
			graphError(w, http.StatusNotFound, "ResourceNotFound", "The object was not found.")
			return
		}
		w.WriteHeader(http.StatusNoContent)
	case len(seg) == 2 && seg[1] == "reauthorize" && r.Method == http.MethodPost:
		s.mu.Lock()
		_, ok := s.subs[seg[0]]
		s.mu.Unlock()
		if !ok {
			graphError(w, http.StatusNotFound, "ResourceNotFound", "The object was not found.")
			return
		}
		w.WriteHeader(http.StatusNoContent)
	default:
		graphError(w, http.StatusNotFound, "UnknownError", "no such endpoint")
	}
}

// clampExpiration applies the lifetime rules of spec §6. It returns an error message if the
// expiration cannot be accepted.
func clampExpiration(resource string, exp time.Time, lifecycle bool) (time.Time, string) {
	now := time.Now()
	if !exp.After(now) {
		return exp, "Subscription expiration can only be in the future."
	}
	max := 10080 * time.Minute
	if isTeams(resource) {
		max = 4320 * time.Minute
		if exp.Sub(now) > time.Hour && !lifecycle {
			return exp, "lifecycleNotificationUrl is a required property for subscription creation on this resource when the expirationDateTime value is set to greater than 1 hour."
		}
	}
	if exp.Sub(now) > max {
		return exp, fmt.Sprintf("Subscription expiration can only be %d minutes in the future.", int(max/time.Minute))
	}
	if exp.Sub(now) < 45*time.Minute {
		exp = now.Add(45 * time.Minute)
	}
	return exp.UTC(), ""
}

// subJSON is a subscription as Graph answers it to POST and PATCH /subscriptions: the
// examples of "Create subscription" and "Update subscription"
// (learn.microsoft.com/graph/api/subscription-post-subscriptions) carry the clientState
// given, latestSupportedTlsVersion and notificationContentType.
func subJSON(sub *Subscription) map[string]any {
	var cs any
	if sub.ClientState != "" {
		cs = sub.ClientState
	}
	v := map[string]any{"@odata.context": "https://graph.microsoft.com/v1.0/$metadata#subscriptions/$entity",
		"id": sub.ID, "resource": sub.Resource, "changeType": sub.ChangeType,
		"notificationUrl": sub.NotificationURL, "expirationDateTime": sub.Expiration.Format(time.RFC3339Nano),
		"clientState": cs, "applicationId": sub.App, "creatorId": sub.Creator,
		"latestSupportedTlsVersion": cmp.Or(sub.LatestSupportedTLSVersion, "v1_2"), "notificationContentType": "application/json"}
	if sub.LifecycleURL != "" {
		v["lifecycleNotificationUrl"] = sub.LifecycleURL
	}
	return v
}

func (s *Server) createSubscription(w http.ResponseWriter, r *http.Request, tok *accessToken) {
	raw, ok := readBody(w, r, 1<<20)
	if !ok {
		return
	}
	var b struct {
		ChangeType      string    `json:"changeType"`
		NotificationURL string    `json:"notificationUrl"`
		LifecycleURL    string    `json:"lifecycleNotificationUrl"`
		Resource        string    `json:"resource"`
		Expiration      time.Time `json:"expirationDateTime"`
		ClientState     string    `json:"clientState"`
		TLS             string    `json:"latestSupportedTlsVersion"`
	}
	if err := json.Unmarshal(raw, &b); err != nil || b.Resource == "" || b.NotificationURL == "" || b.ChangeType == "" {
		graphError(w, http.StatusBadRequest, "InvalidRequest", "changeType, notificationUrl, resource and expirationDateTime are required.")
		return
	}
	switch b.TLS {
	case "":
		b.TLS = "v1_2" // the default (resources/subscription.md)
	case "v1_0", "v1_1", "v1_2", "v1_3":
	default:
		graphError(w, http.StatusBadRequest, "InvalidRequest", "latestSupportedTlsVersion must be one of v1_0, v1_1, v1_2, v1_3.")
		return
	}
	if len(b.ClientState) > 128 {
		graphError(w, http.StatusBadRequest, "InvalidRequest", "clientState must be at most 128 characters.")
		return
	}
	exp, msg := clampExpiration(b.Resource, b.Expiration, b.LifecycleURL != "")
	if msg != "" {
		graphError(w, http.StatusBadRequest, "InvalidRequest", msg)
		return
	}
	if strings.HasPrefix(strings.ToLower(b.Resource), "me/") && tok.user == "" {
		graphError(w, http.StatusBadRequest, "BadRequest", "/me request is only valid with delegated authentication flow.")
		return
	}
	for _, u := range []string{b.NotificationURL, b.LifecycleURL} {
		if u == "" {
			continue
		}
		if err := s.validate(r.Context(), u); err != nil {
			graphError(w, http.StatusBadRequest, "InvalidRequest", "Subscription validation request failed. "+err.Error())
			return
		}
	}
	s.mu.Lock()
	sub := &Subscription{ID: newGUID(), Resource: b.Resource, ChangeType: b.ChangeType, NotificationURL: b.NotificationURL,
		LifecycleURL: b.LifecycleURL, ClientState: b.ClientState, Expiration: exp, Creator: tok.user, App: tok.client, LatestSupportedTLSVersion: b.TLS}
	s.subs[sub.ID] = sub
	v := subJSON(sub)
	s.mu.Unlock()
	writeJSON(w, http.StatusCreated, v)
}

// validate runs the validation handshake against u: POST ?validationToken=…, expecting 200,
// text/plain and the decoded token as the body within 10 seconds.
func (s *Server) validate(ctx context.Context, u string) error {
	token := "Validation: Testing client application reachability for subscription Request-Id: " + newGUID()
	pu, err := url.Parse(u)
	if err != nil {
		return fmt.Errorf("bad notification URL: %v", err)
	}
	q := pu.Query()
	q.Set("validationToken", token)
	pu.RawQuery = q.Encode()
	ctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), 10*time.Second)
	defer cancel()
	req, _ := http.NewRequestWithContext(ctx, http.MethodPost, pu.String(), nil)
	req.Header.Set("Content-Type", "text/plain; charset=utf-8")
	resp, err := s.httpClient().Do(req)
	if err != nil {
		return fmt.Errorf("Response status code does not indicate success: %v", err)
	}
	defer resp.Body.Close()
	body, _ := io.ReadAll(io.LimitReader(resp.Body, 4096))
	switch {
	case resp.StatusCode != http.StatusOK:
		return fmt.Errorf("Response status code does not indicate success: %d", resp.StatusCode)
	case !strings.HasPrefix(resp.Header.Get("Content-Type"), "text/plain"):
		return fmt.Errorf("Validation response must have Content-Type text/plain, got %q", resp.Header.Get("Content-Type"))
	case string(body) != token:
		return fmt.Errorf("Validation token mismatch")
	}
	return nil
}

// Subscriptions returns the active subscriptions.
func (s *Server) Subscriptions() []Subscription {
	s.mu.Lock()
	defer s.mu.Unlock()
	var out []Subscription
	for _, sub := range s.subs {
		out = append(out, *sub)
	}
	return out
}

// Deliveries returns how many notification POSTs were made (validation requests excluded).
func (s *Server) Deliveries() int {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.deliveries
}

func (s *Server) notification(sub *Subscription, resource, odataType, id string) map[string]any {
	return map[string]any{
		"id": newGUID(), "subscriptionId": sub.ID, "subscriptionExpirationDateTime": sub.Expiration.Format(time.RFC3339Nano),
		"clientState": sub.ClientState, "changeType": "created", "resource": resource, "tenantId": TenantID,
		"resourceData": map[string]any{"@odata.type": odataType, "@odata.id": resource, "id": id},
	}
}

func (s *Server) activeSubsLocked(match func(*Subscription) bool) []*Subscription {
	var out []*Subscription
	now := time.Now()
	for _, sub := range s.subs {
		if now.Before(sub.Expiration) && strings.Contains(sub.ChangeType, "created") && match(sub) {
			out = append(out, sub)
		}
	}
	return out
}

func (s *Server) notifyChatLocked(m *ChatMessage) []delivery {
	var resource string
	if m.ChatID != "" {
		resource = fmt.Sprintf("chats('%s')/messages('%s')", m.ChatID, m.ID)
	} else if m.ReplyTo != "" {
		resource = fmt.Sprintf("teams('%s')/channels('%s')/messages('%s')/replies('%s')", m.TeamID, m.ChannelID, m.ReplyTo, m.ID)
	} else {
		resource = fmt.Sprintf("teams('%s')/channels('%s')/messages('%s')", m.TeamID, m.ChannelID, m.ID)
	}
	subs := s.activeSubsLocked(func(sub *Subscription) bool {
		r := strings.ToLower(sub.Resource)
		switch {
		case m.ChatID != "":
			return r == "chats/getallmessages" || strings.HasSuffix(r, "/chats/getallmessages") ||
				r == strings.ToLower("chats/"+m.ChatID+"/messages")
		default:
			return r == "teams/getallmessages" || r == strings.ToLower("teams/"+m.TeamID+"/channels/"+m.ChannelID+"/messages")
		}
	})
	return s.batch(subs, resource, "#Microsoft.Graph.chatMessage", m.ID)
}

func (s *Server) notifyMailLocked(user string, m *MailMessage) []delivery {
	subs := s.activeSubsLocked(func(sub *Subscription) bool {
		r := strings.ToLower(sub.Resource)
		owner := ""
		switch {
		case strings.HasPrefix(r, "me/"):
			owner = strings.ToLower(sub.Creator)
		case strings.HasPrefix(r, "users/"):
			owner, _, _ = strings.Cut(strings.TrimPrefix(r, "users/"), "/")
		default:
			return false
		}
		return owner == strings.ToLower(user) && strings.HasSuffix(r, "messages")
	})
	return s.batch(subs, fmt.Sprintf("Users/%s/Messages/%s", user, m.ID), "#Microsoft.Graph.Message", m.ID)
}

// batch builds one POST per notification URL, batching the subscriptions that share it.
func (s *Server) batch(subs []*Subscription, resource, odataType, id string) []delivery {
	by := map[string][]any{}
	var order []string
	for _, sub := range subs {
		if _, ok := by[sub.NotificationURL]; !ok {
			order = append(order, sub.NotificationURL)
		}
		by[sub.NotificationURL] = append(by[sub.NotificationURL], s.notification(sub, resource, odataType, id))
	}
	var out []delivery
	for _, u := range order {
		body, _ := json.Marshal(map[string]any{"value": by[u]})
		out = append(out, delivery{url: u, body: body})
	}
	return out
}

// deliverAsync delivers in the background (requests made by a client under test must not
// wait for the client's own webhook); Flush waits for them.
func (s *Server) deliverAsync(ds []delivery) {
	if len(ds) == 0 {
		return
	}
	s.mu.Lock()
	s.busy++
	s.mu.Unlock()
	go func() {
		defer s.done()
		s.deliverAll(ds)
	}()
}

// done ends one unit of background work counted in busy.
func (s *Server) done() {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.busy--
	if s.busy == 0 && s.idle != nil {
		s.idle.Broadcast()
	}
}

// waitIdle waits until no background delivery or scheduled retry is left.
func (s *Server) waitIdle() {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.idle == nil {
		s.idle = sync.NewCond(&s.mu)
	}
	for s.busy > 0 {
		s.idle.Wait()
	}
}

// Flush waits until background notification deliveries have finished, and with
// RedeliverBase set, until their scheduled retries were acknowledged or given up.
func (s *Server) Flush() { s.waitIdle() }

// Close stops automatic redelivery (scheduled retries are dropped) and waits for the
// deliveries in flight. The server still answers requests afterwards; failed deliveries then
// wait for Redeliver as with RedeliverBase zero.
func (s *Server) Close() {
	s.mu.Lock()
	if !s.closed {
		s.closed = true
		if s.stop != nil {
			close(s.stop)
		}
	}
	s.mu.Unlock()
	s.waitIdle()
}

// DeliveryAttempts returns every notification POST made so far, retries included, in the
// order they ended (validation requests and lifecycle notifications excluded).
func (s *Server) DeliveryAttempts() []DeliveryAttempt {
	s.mu.Lock()
	defer s.mu.Unlock()
	out := make([]DeliveryAttempt, len(s.attempts))
	for i, a := range s.attempts {
		a.Body = bytes.Clone(a.Body)
		out[i] = a
	}
	return out
}

func (s *Server) deliverAll(ds []delivery) int {
	ok := 0
	for _, d := range ds {
		if s.post(d) {
			ok++
		}
	}
	return ok
}

// post makes the first attempt of a new delivery.
func (s *Server) post(d delivery) bool {
	s.mu.Lock()
	s.deliverySeq++
	d.id, d.attempts = s.deliverySeq, 0
	s.mu.Unlock()
	return s.attempt(d)
}

// attempt POSTs d once, with Graph's timeout (3 s unless DeliveryTimeout says otherwise),
// and records it. Unacknowledged, d is kept for Redeliver or, with RedeliverBase set,
// retried later.
func (s *Server) attempt(d delivery) bool {
	timeout := s.DeliveryTimeout
	if timeout <= 0 {
		timeout = 3 * time.Second
	}
	start := time.Now()
	d.attempts++
	if d.attempts == 1 {
		d.first = start
	}
	s.mu.Lock()
	s.deliveries++
	dd := d
	s.last = &dd
	s.mu.Unlock()
	ctx, cancel := context.WithTimeout(context.Background(), timeout)
	defer cancel()
	req, _ := http.NewRequestWithContext(ctx, http.MethodPost, d.url, bytes.NewReader(d.body))
	req.Header.Set("Content-Type", "application/json; charset=utf-8")
	a := DeliveryAttempt{Delivery: d.id, Attempt: d.attempts, URL: d.url, Body: d.body, Start: start}
	resp, err := s.httpClient().Do(req)
	late := err == nil && ctx.Err() != nil // answered, but too late (a transport that ignores the deadline)
	if err == nil {
		io.Copy(io.Discard, io.LimitReader(resp.Body, 1<<16))
		resp.Body.Close()
	}
	a.Elapsed = time.Since(start)
	switch {
	case err != nil:
		a.Err = err.Error()
	case late: // checked before the body was read: reading it is not part of the answer time
		a.Err = fmt.Sprintf("answered %d after the %v timeout", resp.StatusCode, timeout)
	default:
		a.Status = resp.StatusCode
	}
	good := a.Status/100 == 2
	s.mu.Lock()
	var stop chan struct{}
	if !good {
		switch {
		case s.RedeliverBase <= 0 || s.closed:
			s.pending = append(s.pending, d)
		default:
			if a.Retry = s.retryWait(d, time.Now()); a.Retry > 0 {
				if s.stop == nil {
					s.stop = make(chan struct{})
				}
				stop = s.stop
				s.busy++ // under mu, with closed false: Close waits for it
			} else {
				a.GaveUp = true
			}
		}
	}
	s.attempts = append(s.attempts, a)
	s.mu.Unlock()
	if stop != nil {
		go s.redeliverAfter(d, a.Retry, stop)
	}
	return good
}

// redeliverWindow is how long Graph retries an unacknowledged notification (spec §6).
const redeliverWindow = 4 * time.Hour

// retryWait is the wait before the next automatic retry of d, whose latest attempt ended
// at now, or 0 if d is given up.
func (s *Server) retryWait(d delivery, now time.Time) time.Duration {
	retries := d.attempts - 1 // made so far
	if s.RedeliverMax > 0 && retries >= s.RedeliverMax {
		return 0
	}
	wait := s.RedeliverBase
	for range retries {
		if wait > redeliverWindow {
			break
		}
		wait *= 2
	}
	if now.Add(wait).Sub(d.first) > redeliverWindow {
		return 0
	}
	return wait
}

// redeliverAfter posts d again after wait, unless Close is called first.
func (s *Server) redeliverAfter(d delivery, wait time.Duration, stop <-chan struct{}) {
	defer s.done()
	t := time.NewTimer(wait)
	defer t.Stop()
	select {
	case <-t.C:
		s.attempt(d)
	case <-stop:
	}
}

// Redeliver retries the deliveries that failed (non-2xx or no answer) and were not retried
// automatically, as Graph does for up to 4 hours, and returns how many now succeeded.
func (s *Server) Redeliver() int {
	s.mu.Lock()
	ds := s.pending
	s.pending = nil
	s.mu.Unlock()
	ok := 0
	for _, d := range ds {
		if s.attempt(d) {
			ok++
		}
	}
	return ok
}

// DeliverAgain posts the last notification again, byte for byte, as Graph sometimes does.
// It reports whether the endpoint acknowledged it.
func (s *Server) DeliverAgain() bool {
	s.mu.Lock()
	d := s.last
	s.mu.Unlock()
	if d == nil {
		return false
	}
	return s.post(*d)
}

// Lifecycle sends a lifecycle notification (reauthorizationRequired, subscriptionRemoved or
// missed) for subscription id to its lifecycleNotificationUrl (or its notificationUrl if it
// has none) and returns the status code answered. subscriptionRemoved also deletes the
// subscription, as the service does.
func (s *Server) Lifecycle(id, event string) (int, error) {
	s.mu.Lock()
	sub := s.subs[id]
	if sub == nil {
		s.mu.Unlock()
		return 0, fmt.Errorf("graphtest: no subscription %s", id)
	}
	u := sub.LifecycleURL
	if u == "" {
		u = sub.NotificationURL
	}
	body, _ := json.Marshal(map[string]any{"value": []any{map[string]any{
		"subscriptionId": sub.ID, "subscriptionExpirationDateTime": sub.Expiration.Format(time.RFC3339Nano),
		"tenantId": TenantID, "clientState": sub.ClientState, "lifecycleEvent": event,
	}}})
	if event == "subscriptionRemoved" {
		delete(s.subs, id)
	}
	s.mu.Unlock()
	req, _ := http.NewRequest(http.MethodPost, u, bytes.NewReader(body))
	req.Header.Set("Content-Type", "application/json; charset=utf-8")
	resp, err := s.httpClient().Do(req)
	if err != nil {
		return 0, err
	}
	resp.Body.Close()
	return resp.StatusCode, nil
}

// Post sends body as a notification POST to u, as Graph would, and returns the status code:
// for tests of forged or malformed notifications.
func (s *Server) Post(u string, body []byte) (int, error) {
	req, _ := http.NewRequest(http.MethodPost, u, bytes.NewReader(body))
	req.Header.Set("Content-Type", "application/json; charset=utf-8")
	resp, err := s.httpClient().Do(req)
	if err != nil {
		return 0, err
	}
	resp.Body.Close()
	return resp.StatusCode, nil
}

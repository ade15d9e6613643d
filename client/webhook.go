package client

import (
	"context"
	"crypto/hmac"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"strings"
)

// SignatureHeader is the header of an event POSTed to a bot's deliver.webhook_url that
// carries its signature: "sha256=" and the hex HMAC-SHA256 of the body under the bot's
// deliver.webhook_secret.
const SignatureHeader = "X-Chatwire-Signature"

// Sign returns the X-Chatwire-Signature value of body under secret, as the host sends it.
func Sign(secret string, body []byte) string {
	mac := hmac.New(sha256.New, []byte(secret))
	mac.Write(body)
	return "sha256=" + hex.EncodeToString(mac.Sum(nil))
}

// VerifySignature checks header, an X-Chatwire-Signature value, against body and secret, in
// constant time. It returns nil if the signature is right, else an error wrapping
// [ErrSignature] that says what is wrong (and never holds the secret or the expected
// signature).
func VerifySignature(secret string, body []byte, header string) error {
	if header == "" {
		return fmt.Errorf("%w: no %s header", ErrSignature, SignatureHeader)
	}
	hexSig, ok := strings.CutPrefix(header, "sha256=")
	if !ok {
		return fmt.Errorf("%w: want sha256=<hex>", ErrSignature)
	}
	got, err := hex.DecodeString(hexSig)
	if err != nil || len(got) != sha256.Size {
		return fmt.Errorf("%w: want sha256= and 64 hex digits", ErrSignature)
	}
	mac := hmac.New(sha256.New, []byte(secret))
	mac.Write(body)
	if !hmac.Equal(got, mac.Sum(nil)) {
		return fmt.Errorf("%w: it does not match the body (is the secret deliver.webhook_secret?)", ErrSignature)
	}
	return nil
}

// maxWebhookBody bounds the body WebhookHandler reads.
const maxWebhookBody = 8 << 20

// WebhookHandler returns an http.Handler for a bot's deliver.webhook_url: it takes POSTs,
// verifies their X-Chatwire-Signature under secret, decodes the event (LogID from
// X-Chatwire-Event-Id) and calls handle with the request's context. It answers 204 when
// handle returns nil, and 500 when it returns an error, so the host delivers the event
// again (later events of the same chat wait for it); 401 for a bad signature, 400 for a body
// that is not an event, 405 for other methods, 413 over 8 MiB. handle may be called
// concurrently, for events of different chats.
func WebhookHandler(secret string, handle func(ctx context.Context, ev Event) error) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.Method != http.MethodPost {
			w.Header().Set("Allow", http.MethodPost)
			http.Error(w, "POST only", http.StatusMethodNotAllowed)
			return
		}
		body, err := io.ReadAll(http.MaxBytesReader(w, r.Body, maxWebhookBody))
		if err != nil {
			if tooBig := (*http.MaxBytesError)(nil); errors.As(err, &tooBig) {
				http.Error(w, "body too large", http.StatusRequestEntityTooLarge)
				return
			}
			http.Error(w, "reading the body failed", http.StatusBadRequest)
			return
		}
		if err := VerifySignature(secret, body, r.Header.Get(SignatureHeader)); err != nil {
			http.Error(w, err.Error(), http.StatusUnauthorized)
			return
		}
		ev := Event{LogID: r.Header.Get("X-Chatwire-Event-Id")}
		if err := json.Unmarshal(body, &ev.Event); err != nil {
			http.Error(w, "the body is not event JSON: "+err.Error(), http.StatusBadRequest)
			return
		}
		if err := handle(r.Context(), ev); err != nil {
			http.Error(w, "handling the event failed; deliver it again", http.StatusInternalServerError)
			return
		}
		w.WriteHeader(http.StatusNoContent)
	})
}

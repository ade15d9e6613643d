package check

import (
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"strings"

	"github.com/seed-a64d9e1f/chatwire/client"
)

// APIError turns an error response of the host into an error with its kind and message.
func APIError(resp *http.Response) error {
	if err := ClientError(client.CheckResponse(resp)); err != nil {
		return err
	}
	return fmt.Errorf("host answered %s", resp.Status)
}

// ClientError words an error of the client for the command line: the host's message and kind,
// the platform code explained, the retry-after; a request that got no answer asks whether
// the host runs.
func ClientError(err error) error {
	if err == nil {
		return nil
	}
	var ae *client.Error
	if !errors.As(err, &ae) {
		return fmt.Errorf("is the host running? %w", err)
	}
	var eb struct {
		Error struct {
			Kind string `json:"kind"`
		} `json:"error"`
	}
	if json.Unmarshal(ae.Body, &eb) != nil || eb.Error.Kind == "" {
		return fmt.Errorf("host answered %d %s: %s", ae.StatusCode, http.StatusText(ae.StatusCode), strings.TrimSpace(string(ae.Body)))
	}
	msg := fmt.Sprintf("%s (%s)", ae.Message, ae.Kind)
	if ae.PlatformCode != "" {
		msg += ", platform code " + ae.PlatformCode
		if ex := Explain(ae.PlatformCode); ex != "" {
			msg += ": " + ex
		}
	}
	if ae.RetryAfter > 0 {
		msg += fmt.Sprintf(", retry after %.0fs", ae.RetryAfter.Seconds())
	}
	return errors.New(msg)
}

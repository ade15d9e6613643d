// Package sse reads a host's Server-Sent Events stream: the demo's echo bot and the tests use it.
package sse

import (
	"bufio"
	"context"
	"errors"
	"net/http"
	"strings"

	"github.com/seed-a64d9e1f/chatwire/internal/check"
)

// Read reads a Server-Sent Events stream, calling fn for each event, until ctx is done
// (nil) or the stream or fn fails.
func Read(ctx context.Context, url, key, lastID string, fn func(id, kind string, data []byte) error) error {
	return ReadWithHook(ctx, url, key, lastID, nil, fn)
}

// ReadWithHook is Read calling connected (if not nil) once the stream is open.
func ReadWithHook(ctx context.Context, url, key, lastID string, connected func(), fn func(id, kind string, data []byte) error) error {
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, url, nil)
	if err != nil {
		return err
	}
	if key != "" {
		req.Header.Set("Authorization", "Bearer "+key)
	}
	if lastID != "" {
		req.Header.Set("Last-Event-ID", lastID)
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		if ctx.Err() != nil {
			return nil
		}
		return err
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		return check.APIError(resp)
	}
	if connected != nil {
		connected()
	}
	sc := bufio.NewScanner(resp.Body)
	sc.Buffer(make([]byte, 64<<10), 16<<20)
	var id, kind string
	var data []byte
	for sc.Scan() {
		line := sc.Text()
		switch {
		case line == "":
			if data != nil {
				if err := fn(id, kind, data); err != nil {
					return err
				}
			}
			id, kind, data = "", "", nil
		case strings.HasPrefix(line, ":"):
		case strings.HasPrefix(line, "id: "):
			id = line[4:]
		case strings.HasPrefix(line, "event: "):
			kind = line[7:]
		case strings.HasPrefix(line, "data: "):
			data = append(data, line[6:]...)
		}
	}
	if ctx.Err() != nil {
		return nil
	}
	if err := sc.Err(); err != nil {
		return err
	}
	return errors.New("event stream ended")
}

package graph

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"net/url"
	"strconv"
	"strings"
	"time"

	"github.com/seed-a64d9e1f/chatwire/adapter"
	"github.com/seed-a64d9e1f/chatwire/internal/backoff"
)

// Upload limits (spec §7).
const (
	// SimpleUploadMax is the largest file sent with one PUT …:/content; larger files use an
	// upload session.
	SimpleUploadMax = 4 << 20
	// FragmentUnit is the size every upload-session fragment but the last is a multiple of.
	FragmentUnit = 320 << 10
	// DefaultFragmentSize is the fragment size used for upload sessions (16 × 320 KiB = 5 MiB).
	DefaultFragmentSize = 16 * FragmentUnit
	// maxInMemoryUpload bounds how much of a non-seekable stream is buffered for resumes.
	maxInMemoryUpload = 256 << 20
)

// DriveItem is the part of a OneDrive driveItem the adapter uses.
type DriveItem struct {
	ID     string `json:"id"`
	Name   string `json:"name"`
	Size   int64  `json:"size"`
	ETag   string `json:"eTag"`
	WebURL string `json:"webUrl"`
}

// GUID returns the GUID inside the item's eTag ("\"{GUID},1\""), which Teams uses as the
// reference attachment id.
func (d *DriveItem) GUID() string {
	s := strings.Trim(d.ETag, `"`)
	s = strings.TrimPrefix(s, "{")
	if i := strings.IndexAny(s, "},"); i >= 0 {
		s = s[:i]
	}
	return strings.ToLower(s)
}

// Progress is called after each accepted fragment with the bytes the service has and the
// total. It must return quickly.
type Progress func(sent, total int64)

// UploadOptions tune [Client.UploadFile]. The zero value is ready to use.
type UploadOptions struct {
	// FragmentSize is the upload-session fragment size, rounded down to a multiple of 320 KiB.
	// Zero means DefaultFragmentSize.
	FragmentSize int
	// Progress, if not nil, is told about every accepted fragment.
	Progress Progress
	// MaxRetries bounds consecutive failed fragment attempts (5xx, dropped connections) and
	// session restarts. Zero means 8.
	MaxRetries int
	// Conflict is the @microsoft.graph.conflictBehavior: "rename" (default), "replace", "fail".
	Conflict string
}

// UploadFile uploads size bytes from r to OneDrive at itemPath, relative to /v1.0 and ending
// before ":/content", e.g. "/me/drive/root:/Chatwire/report.pdf". Files up to
// SimpleUploadMax go in one PUT; larger ones through an upload session: ordered fragments of
// a multiple of 320 KiB, sent WITHOUT an Authorization header, resumed from the session's
// nextExpectedRanges after a dropped connection or a 416, restarted after a 404 (session
// gone), with exponential backoff on 5xx only. If r is not an io.ReaderAt the content is
// buffered in memory (at most 256 MiB) so fragments can be sent again.
func (c *Client) UploadFile(ctx context.Context, itemPath string, r io.Reader, size int64, opts UploadOptions) (*DriveItem, error) {
	ra, ok := r.(io.ReaderAt)
	if !ok {
		if size > maxInMemoryUpload {
			return nil, fmt.Errorf("graph: upload %s: %d bytes from a non-seekable stream (limit %d)", itemPath, size, maxInMemoryUpload)
		}
		buf := make([]byte, size)
		if n, err := io.ReadFull(r, buf); err != nil {
			if err == io.EOF || err == io.ErrUnexpectedEOF {
				return nil, shortContent(int64(n), size, err)
			}
			return nil, fmt.Errorf("graph: upload %s: reading content: %w", itemPath, err)
		}
		ra = bytes.NewReader(buf)
	}
	if size <= SimpleUploadMax {
		buf := make([]byte, size)
		if err := readFull(ra, buf, 0, size); err != nil {
			return nil, err
		}
		resp, err := c.send(ctx, http.MethodPut, escapePath(itemPath)+":/content", buf, "application/octet-stream")
		if err != nil {
			return nil, err
		}
		defer resp.Body.Close()
		var item DriveItem
		if err := json.NewDecoder(io.LimitReader(resp.Body, 1<<20)).Decode(&item); err != nil {
			return nil, fmt.Errorf("graph: upload %s: decoding driveItem: %w", itemPath, err)
		}
		if opts.Progress != nil {
			opts.Progress(size, size)
		}
		return &item, nil
	}
	return c.uploadSession(ctx, itemPath, ra, size, opts)
}

// readFull reads exactly len(p) bytes at off (io.ReadFull semantics for an io.ReaderAt): a
// reader that ends early is an invalid request, never a zero-padded upload.
func readFull(ra io.ReaderAt, p []byte, off, size int64) error {
	n, err := ra.ReadAt(p, off)
	if n == len(p) {
		return nil
	}
	if err == nil || err == io.EOF {
		err = io.ErrUnexpectedEOF
	}
	if err == io.ErrUnexpectedEOF {
		return shortContent(off+int64(n), size, err)
	}
	return fmt.Errorf("graph: upload: reading content at %d: %w", off+int64(n), err)
}

// shortContent is the error for content that ends before its declared size.
func shortContent(got, size int64, err error) error {
	return &adapter.Error{Kind: adapter.KindInvalidRequest, Platform: adapter.PlatformGraph, Code: "contentTooShort",
		Message: fmt.Sprintf("upload: the content ended after %d bytes but its declared size is %d", got, size), Err: err}
}

// escapePath escapes the item path part of a drive path, leaving its structure alone.
func escapePath(p string) string {
	head, rest, ok := strings.Cut(p, "root:/")
	if !ok {
		return p
	}
	parts := strings.Split(rest, "/")
	for i, s := range parts {
		parts[i] = url.PathEscape(s)
	}
	return head + "root:/" + strings.Join(parts, "/")
}

type sessionStatus struct {
	UploadURL          string   `json:"uploadUrl"`
	NextExpectedRanges []string `json:"nextExpectedRanges"`
}

// nextOffset returns the start of the first expected range, or -1 if none is given.
func (s *sessionStatus) nextOffset() int64 {
	if len(s.NextExpectedRanges) == 0 {
		return -1
	}
	a, _, _ := strings.Cut(s.NextExpectedRanges[0], "-")
	n, err := strconv.ParseInt(a, 10, 64)
	if err != nil || n < 0 {
		return -1
	}
	return n
}

func (c *Client) createSession(ctx context.Context, itemPath string, size int64, conflict string) (string, error) {
	if conflict == "" {
		conflict = "rename"
	}
	name := itemPath[strings.LastIndex(itemPath, "/")+1:]
	body := map[string]any{"item": map[string]any{"@microsoft.graph.conflictBehavior": conflict, "name": name, "fileSize": size}}
	var st sessionStatus
	if err := c.Do(ctx, http.MethodPost, escapePath(itemPath)+":/createUploadSession", body, &st); err != nil {
		return "", err
	}
	if st.UploadURL == "" {
		return "", fmt.Errorf("graph: createUploadSession for %s returned no uploadUrl", itemPath)
	}
	return st.UploadURL, nil
}

func (c *Client) uploadSession(ctx context.Context, itemPath string, ra io.ReaderAt, size int64, opts UploadOptions) (*DriveItem, error) {
	uploadURL, err := c.createSession(ctx, itemPath, size, opts.Conflict)
	if err != nil {
		return nil, err
	}
	var item DriveItem
	s := &session{
		restart: func() (string, error) { return c.createSession(ctx, itemPath, size, opts.Conflict) },
		// The final fragment's answer was lost and the session is gone: the file may be
		// complete. Look it up rather than upload it a second time.
		completed: func() bool {
			var got DriveItem
			if err := c.Do(ctx, http.MethodGet, escapePath(itemPath), nil, &got); err != nil || got.Size != size {
				return false
			}
			item = got
			return true
		},
	}
	err = c.putSession(ctx, uploadURL, ra, size, opts, driveSession, s, &item)
	if err != nil {
		return nil, err
	}
	return &item, nil
}

// session holds the hooks of an upload session that can be recreated. A nil *session cannot.
type session struct {
	restart   func() (string, error) // creates a new session, returning its upload URL
	completed func() bool            // reports whether the upload finished after all
}

// sessionKind tells the two upload-session protocols apart: they answer a range differently.
type sessionKind int

const (
	// driveSession is a OneDrive upload session: a non-final range answers 202 Accepted with
	// nextExpectedRanges, the final one 201 Created or 200 OK with the driveItem; fragments
	// are multiples of 320 KiB ("driveItem: createUploadSession",
	// https://learn.microsoft.com/graph/api/driveitem-createuploadsession).
	driveSession sessionKind = iota
	// outlookSession is an Outlook attachment upload session: a non-final range answers
	// 200 OK with nextExpectedRanges (one offset, no "-end"), only the final range answers
	// 201 Created, with the attachment's URL in Location ("Attach large files to Outlook
	// messages or events", https://learn.microsoft.com/graph/outlook-large-attachments).
	// So 200 is NOT done there.
	outlookSession
)

// putSession sends the content to an upload URL, following the session rules. s (may be
// nil) restarts after a 404; out receives the final JSON answer (may be empty for Outlook).
func (c *Client) putSession(ctx context.Context, uploadURL string, ra io.ReaderAt, size int64, opts UploadOptions,
	kind sessionKind, s *session, out any) error {
	unitAligned := kind == driveSession
	var restart func() (string, error)
	if s != nil {
		restart = s.restart
	}
	frag := int64(opts.FragmentSize)
	if frag <= 0 {
		frag = DefaultFragmentSize
	}
	if unitAligned {
		frag -= frag % FragmentUnit
		if frag < FragmentUnit {
			frag = FragmentUnit
		}
	}
	maxRetries := opts.MaxRetries
	if maxRetries <= 0 {
		maxRetries = 8
	}
	buf := make([]byte, frag)
	var offset int64
	failures, restarts, statusChecks := 0, 0, 0
	fail := func(err error) error {
		failures++
		if failures > maxRetries {
			return err
		}
		return nil
	}
	done := func() error {
		if opts.Progress != nil {
			opts.Progress(size, size)
		}
		return nil
	}
	// gone handles a 404 from the session (expired or already completed): if the fragment
	// just sent was the last, the file may be complete (its answer was lost), so look it up;
	// otherwise start over with a new session (spec §7). It reports whether the upload is done.
	gone := func(err error, final bool) (bool, error) {
		if !isNotFound(err) {
			return false, err
		}
		if final && s != nil && s.completed() {
			return true, done()
		}
		if restarts >= 2 || restart == nil {
			return false, err
		}
		restarts++
		c.log.LogAttrs(ctx, slog.LevelWarn, "graph upload session gone: starting over", slog.String("platform", "graph"))
		u, rerr := restart()
		if rerr != nil {
			return false, rerr
		}
		uploadURL, offset = u, 0
		return false, nil
	}
	for {
		if offset >= size {
			// The session says it has every byte, yet no fragment got the final answer: the
			// upload may have completed; anything else is a broken session.
			if offset == size && s != nil && s.completed() {
				return done()
			}
			return &APIError{StatusCode: http.StatusBadGateway, Code: "uploadIncomplete",
				Message: fmt.Sprintf("upload: the session reports all %d bytes received but the upload did not complete", size)}
		}
		end := min(offset+frag, size) - 1
		chunk := buf[:end-offset+1]
		if err := readFull(ra, chunk, offset, size); err != nil {
			return err
		}
		resp, err := c.putFragment(ctx, uploadURL, chunk, offset, end, size)
		if err != nil {
			if ctx.Err() != nil {
				return ctx.Err()
			}
			// Dropped connection: the bytes may or may not have arrived. Back off, then ask.
			if e := fail(err); e != nil {
				return &APIError{StatusCode: http.StatusBadGateway, Code: "connectionError", Message: "upload: " + err.Error()}
			}
			if err := c.sleep(ctx, c.backoff(failures)); err != nil {
				return err
			}
			if offset, err = c.sessionOffset(ctx, uploadURL, offset, size); err != nil {
				if ok, err := gone(err, end == size-1); ok || err != nil {
					return err
				}
			}
			continue
		}
		raw, _ := io.ReadAll(io.LimitReader(resp.Body, maxErrorBody))
		resp.Body.Close()
		switch {
		case completes(kind, resp.StatusCode, raw):
			if out != nil && len(bytes.TrimSpace(raw)) > 0 {
				if err := json.Unmarshal(raw, out); err != nil {
					return fmt.Errorf("graph: upload: decoding the final answer: %w", err)
				}
			}
			return done()
		case resp.StatusCode == http.StatusAccepted || resp.StatusCode == http.StatusOK || resp.StatusCode == http.StatusCreated:
			// A range accepted, more expected: continue where the session says.
			failures = 0
			var st sessionStatus
			json.Unmarshal(raw, &st)
			next := st.nextOffset()
			if next < 0 || next > size {
				next = end + 1
			}
			offset = next
			if opts.Progress != nil && offset < size {
				opts.Progress(offset, size)
			}
		case resp.StatusCode == http.StatusRequestedRangeNotSatisfiable:
			// The service already has (part of) this range: ask it what it expects.
			statusChecks++
			if statusChecks > maxRetries*4 {
				return parseAPIError(resp, raw, time.Now())
			}
			if offset, err = c.sessionOffset(ctx, uploadURL, end+1, size); err != nil {
				if ok, err := gone(err, end == size-1); ok || err != nil {
					return err
				}
			}
		case resp.StatusCode == http.StatusNotFound:
			if ok, err := gone(parseAPIError(resp, raw, time.Now()), false); ok || err != nil {
				return err
			}
		case resp.StatusCode >= 500:
			apiErr := parseAPIError(resp, raw, time.Now())
			if e := fail(apiErr); e != nil {
				return e
			}
			d := c.backoff(failures)
			if apiErr.RetryAfter > d {
				d = apiErr.RetryAfter
			}
			if err := c.sleep(ctx, d); err != nil {
				return err
			}
		default:
			// Other 4xx: not retried with backoff (spec §7: limit attempts, no backoff).
			return parseAPIError(resp, raw, time.Now())
		}
	}
}

// completes reports whether an answer to a range is the upload's completion signal. Outlook:
// only 201 Created (its 200 OK means "range taken, send the next"). OneDrive: 200 OK or 201
// Created (202 Accepted means "send the next"); a 200/201 that still lists
// nextExpectedRanges is progress, not completion, whichever service sent it.
func completes(kind sessionKind, status int, raw []byte) bool {
	switch kind {
	case outlookSession:
		if status != http.StatusCreated {
			return false
		}
	default:
		if status != http.StatusOK && status != http.StatusCreated {
			return false
		}
	}
	var st sessionStatus
	if json.Unmarshal(raw, &st) == nil && len(st.NextExpectedRanges) > 0 {
		return false
	}
	return true
}

func isNotFound(err error) bool {
	e, ok := errorsAs[*APIError](err)
	return ok && e.StatusCode == http.StatusNotFound
}

// putFragment PUTs one fragment to the upload URL. It never sends Authorization: the URL
// itself is the credential (real ones carry tempauth=), and Graph may answer 401 to a bearer
// token there. Errors never include the URL's path or query.
func (c *Client) putFragment(ctx context.Context, uploadURL string, chunk []byte, start, end, total int64) (*http.Response, error) {
	req, err := http.NewRequestWithContext(ctx, http.MethodPut, uploadURL, bytes.NewReader(chunk))
	if err != nil {
		return nil, uploadURLError(err)
	}
	req.ContentLength = int64(len(chunk))
	req.Header.Set("Content-Range", fmt.Sprintf("bytes %d-%d/%d", start, end, total))
	req.Header.Del("Authorization")
	resp, err := c.hc.Do(req)
	if err != nil {
		return nil, uploadURLError(err)
	}
	return resp, nil
}

// sessionOffset asks an upload session where to continue (GET uploadUrl). fallback is used
// when the answer lists no range. An offset past size is a broken answer, returned as an
// error (it would otherwise index past the content). Errors never include the URL's path or
// query.
func (c *Client) sessionOffset(ctx context.Context, uploadURL string, fallback, size int64) (int64, error) {
	for attempt := 1; ; attempt++ {
		req, err := http.NewRequestWithContext(ctx, http.MethodGet, uploadURL, nil)
		if err != nil {
			return 0, uploadURLError(err)
		}
		resp, err := c.hc.Do(req)
		if err == nil {
			raw, _ := io.ReadAll(io.LimitReader(resp.Body, maxErrorBody))
			resp.Body.Close()
			if resp.StatusCode == http.StatusOK {
				var st sessionStatus
				json.Unmarshal(raw, &st)
				n := st.nextOffset()
				if n < 0 {
					n = fallback
				}
				if n > size {
					return 0, &APIError{StatusCode: http.StatusBadGateway, Code: "invalidUploadStatus",
						Message: fmt.Sprintf("upload: the session expects bytes from %d but the file has only %d", n, size)}
				}
				return n, nil
			}
			apiErr := parseAPIError(resp, raw, time.Now())
			if resp.StatusCode < 500 {
				return 0, apiErr
			}
			err = apiErr
		} else {
			err = &APIError{StatusCode: http.StatusBadGateway, Code: "connectionError", Message: "upload status: " + uploadURLError(err).Error()}
		}
		if ctx.Err() != nil {
			return 0, ctx.Err()
		}
		if attempt > 8 {
			return 0, err
		}
		if err := c.sleep(ctx, c.backoff(attempt)); err != nil {
			return 0, err
		}
	}
}

// uploadURLError is err with any upload URL in it cut to its scheme and host: the URL is
// the credential, in its query (SharePoint's tempauth=) or in its path (OneDrive personal).
func uploadURLError(err error) error {
	var ue *url.Error
	if errors.As(err, &ue) {
		return fmt.Errorf("%s %s: %w", ue.Op, uploadURLHost(ue.URL), ue.Err)
	}
	return err
}

// uploadURLHost returns scheme://host of an upload URL, or "(upload url)".
func uploadURLHost(raw string) string {
	u, err := url.Parse(raw)
	if err != nil || u.Host == "" {
		return "(upload url)"
	}
	return u.Scheme + "://" + u.Host
}

// sleep is [backoff.Sleep]: nil after waiting d, else why not (ctx ended, or its deadline
// comes first).
func (c *Client) sleep(ctx context.Context, d time.Duration) error { return backoff.Sleep(ctx, d) }

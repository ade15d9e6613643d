package graph

import (
	"bytes"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"math/rand/v2"
	"net/http"
	"strings"
	"sync"
	"testing"
	"testing/synctest"

	"github.com/seed-a64d9e1f/chatwire/adapter"
	"github.com/seed-a64d9e1f/chatwire/adapter/graph/graphtest"
)

// randomBytes returns n pseudo-random bytes: a random 64 KiB block repeated, each copy
// stamped with its index so misplaced fragments are caught (cheap under -race).
func randomBytes(n int) []byte {
	block := make([]byte, 64<<10)
	rand.NewChaCha8([32]byte{1, 2, 3}).Read(block)
	b := make([]byte, n)
	for i := 0; i < n; i += len(block) {
		copy(b[i:], block)
		binary.BigEndian.PutUint32(b[i:min(i+4, n)], uint32(i/len(block)))
	}
	return b
}

// Test25MiBUploadSurvivesFaults uploads 25 MiB through a session while the upload URL answers
// 503 twice, drops a connection before and another after accepting a fragment, and rejects
// any Authorization header (strict mode).
func Test25MiBUploadSurvivesFaults(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		e := newEnv(t)
		_, c := e.delegated(t, nil)
		data := randomBytes(25 << 20)
		var calls int
		var last int64
		progress := func(sent, total int64) {
			calls++
			if sent < last || total != int64(len(data)) {
				t.Errorf("progress(%d, %d) after %d; want monotonic progress of %d", sent, total, last, len(data))
			}
			last = sent
			switch calls {
			case 1:
				e.srv.InjectUploadFault(2, 503)
			case 2:
				e.srv.DropUploadConnections(1)
			case 3:
				e.srv.DropUploadResponses(1)
			}
		}
		item, err := c.UploadFile(t.Context(), "/me/drive/root:/Chatwire/big.bin", bytes.NewReader(data), int64(len(data)),
			UploadOptions{Progress: progress})
		if err != nil {
			t.Fatalf("UploadFile() error = %v", err)
		}
		f := e.srv.Files()[botUser+":Chatwire/big.bin"]
		if !bytes.Equal(f.Data, data) || item.Size != int64(len(data)) || item.ID != f.ID {
			t.Errorf("uploaded %d bytes (equal %v), item %+v; want the exact 25 MiB", len(f.Data), bytes.Equal(f.Data, data), item)
		}
		if last != int64(len(data)) {
			t.Errorf("last progress = %d; want %d", last, len(data))
		}
		if item.GUID() == "" || !bytes.Contains([]byte(f.ETag), []byte(bytes.ToUpper([]byte(item.GUID())))) {
			t.Errorf("GUID() = %q from eTag %q", item.GUID(), f.ETag)
		}
	})
}

func TestUploadRestartsAfter404(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		e := newEnv(t)
		_, c := e.delegated(t, nil)
		data := randomBytes(12 << 20)
		expired := false
		item, err := c.UploadFile(t.Context(), "/me/drive/root:/r.bin", bytes.NewReader(data), int64(len(data)), UploadOptions{
			Progress: func(sent, total int64) {
				if !expired && sent > 0 {
					expired = true
					e.srv.ExpireUploadSessions()
				}
			}})
		if err != nil {
			t.Fatalf("UploadFile() error = %v", err)
		}
		if f := e.srv.Files()[botUser+":r.bin"]; !bytes.Equal(f.Data, data) || item.Size != int64(len(data)) {
			t.Errorf("uploaded %d bytes; want %d identical", len(f.Data), len(data))
		}
		if n := e.srv.UploadSessions(); n != 0 {
			t.Errorf("open sessions = %d; want 0", n)
		}
	})
}

func TestUploadGivesUpOnPersistent5xx(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		e := newEnv(t)
		_, c := e.delegated(t, nil)
		e.srv.InjectUploadFault(100, 500)
		data := randomBytes(5 << 20)
		_, err := c.UploadFile(t.Context(), "/me/drive/root:/x.bin", bytes.NewReader(data), int64(len(data)), UploadOptions{MaxRetries: 3})
		if !errors.Is(toAdapterError(err, ""), adapter.ErrUnavailable) {
			t.Errorf("error = %v; want unavailable after bounded retries", err)
		}
	})
}

func TestSimpleUpload(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		e := newEnv(t)
		_, c := e.delegated(t, nil)
		data := randomBytes(graphtest.MaxSimpleUpload)
		// A non-seekable reader is fine too.
		item, err := c.UploadFile(t.Context(), "/me/drive/root:/Chatwire/a b.pdf", struct{ *bytes.Buffer }{bytes.NewBuffer(data)}, int64(len(data)), UploadOptions{})
		if err != nil {
			t.Fatal(err)
		}
		if f := e.srv.Files()[botUser+":Chatwire/a b.pdf"]; !bytes.Equal(f.Data, data) || item.Name != "a b.pdf" {
			t.Errorf("simple upload stored %d bytes as %q", len(f.Data), item.Name)
		}
		if e.srv.UploadSessions() != 0 {
			t.Errorf("a 4 MiB file used an upload session")
		}
	})
}

func TestMailLargeAttachment(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		e := newEnv(t)
		_, c := e.delegated(t, nil)
		big := randomBytes(5 << 20)
		m := &Mail{Subject: "report", Body: ChatBody{ContentType: "Text", Content: "see attached"}}
		var r Recipient
		r.EmailAddress.Address = "a@example.com"
		m.ToRecipients = []Recipient{r}
		m.Attachments = []MailAttachment{{ODataType: "#microsoft.graph.fileAttachment", Name: "small.txt", ContentBytes: []byte("hi")}}
		if err := c.SendMail(t.Context(), "me", m, []LargeAttachment{{Name: "big.bin", ContentType: "application/octet-stream", Data: big}}, nil); err != nil {
			t.Fatalf("SendMail() error = %v", err)
		}
		sent := e.srv.Sent()
		if len(sent) != 1 || sent[0].Kind != "mail" || len(sent[0].Attachments) != 2 || !bytes.Equal(sent[0].Attachments[1].Data, big) {
			t.Fatalf("Sent() = %+v; want one mail with both attachments", len(sent))
		}
	})
}

// TestUploadLostFinalAnswer drops the answer to the final fragment: the file is complete and
// the session gone, so the client must find the item rather than upload it again.
func TestUploadLostFinalAnswer(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		e := newEnv(t)
		_, c := e.delegated(t, nil)
		data := randomBytes(6 << 20)
		injected := false
		item, err := c.UploadFile(t.Context(), "/me/drive/root:/f.bin", bytes.NewReader(data), int64(len(data)), UploadOptions{
			Progress: func(sent, total int64) {
				if !injected {
					injected = true
					e.srv.DropUploadResponses(1)
				}
			}})
		if err != nil {
			t.Fatalf("UploadFile() error = %v", err)
		}
		creates := 0
		for _, r := range e.srv.Requests() {
			if strings.HasSuffix(r.Path, "createUploadSession") {
				creates++
			}
		}
		if f := e.srv.Files()[botUser+":f.bin"]; !bytes.Equal(f.Data, data) || item.ID != f.ID || creates != 1 {
			t.Errorf("item %+v, sessions created %d; want the stored item from one session", item, creates)
		}
	})
}

// statusRewriter answers GETs of upload URLs with a fixed nextExpectedRanges once armed, and
// passes everything else to the emulator.
type statusRewriter struct {
	srv *graphtest.Server
	mu  sync.Mutex
	// next, if not "", is answered to the next status GET.
	next string
	// expireOnGet expires the upload sessions before the next status GET is served.
	expireOnGet bool
}

func (h *statusRewriter) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	if strings.HasPrefix(r.URL.Path, "/upload/") && r.Method == http.MethodGet {
		h.mu.Lock()
		next, expire := h.next, h.expireOnGet
		h.next, h.expireOnGet = "", false
		h.mu.Unlock()
		if expire {
			h.srv.ExpireUploadSessions()
		}
		if next != "" {
			w.Header().Set("Content-Type", "application/json")
			fmt.Fprintf(w, `{"expirationDateTime":"2030-01-01T00:00:00Z","nextExpectedRanges":[%q]}`, next)
			return
		}
	}
	h.srv.ServeHTTP(w, r)
}

func (h *statusRewriter) arm(next string, expire bool) {
	h.mu.Lock()
	defer h.mu.Unlock()
	h.next, h.expireOnGet = next, expire
}

// rewritingClient returns a Client whose requests go through a statusRewriter.
func rewritingClient(t *testing.T, e *env) (*Client, *statusRewriter) {
	m, _ := e.delegated(t, nil)
	h := &statusRewriter{srv: e.srv}
	return NewClient(m, nil, ClientOptions{GraphBase: base, HTTPClient: &http.Client{Transport: graphtest.HandlerTransport(h)},
		Logger: e.logger()}), h
}

func countCreates(e *env) int {
	n := 0
	for _, r := range e.srv.Requests() {
		if strings.HasSuffix(r.Path, "createUploadSession") {
			n++
		}
	}
	return n
}

// TestUploadBadSessionStatus: a status answer expecting bytes past the end of the file is a
// clear error, not a panic; one expecting exactly the end means "done" only if the item is
// really there.
func TestUploadBadSessionStatus(t *testing.T) {
	const size = 12 << 20 // three fragments: the second or the last answer is dropped
	tests := []struct {
		name     string
		next     string
		final    bool // drop the final fragment's answer (else the first one's)
		wantErr  string
		wantKind adapter.Kind
	}{
		{"past the end", fmt.Sprintf("%d-", size+1), false, "expects bytes from", adapter.KindUnavailable},
		{"far past the end", "9223372036854775807-", false, "expects bytes from", adapter.KindUnavailable},
		{"at the end, not complete", fmt.Sprintf("%d-", size), false, "did not complete", adapter.KindUnavailable},
		{"at the end, complete", fmt.Sprintf("%d-", size), true, "", ""},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			synctest.Test(t, func(t *testing.T) {
				e := newEnv(t)
				c, h := rewritingClient(t, e)
				data := randomBytes(size)
				armed := false
				item, err := c.UploadFile(t.Context(), "/me/drive/root:/s.bin", bytes.NewReader(data), size, UploadOptions{
					Progress: func(sent, total int64) {
						if armed || (tc.final && sent < total-DefaultFragmentSize) {
							return
						}
						armed = true
						e.srv.DropUploadResponses(1)
						h.arm(tc.next, false)
					}})
				if tc.wantErr == "" {
					if err != nil || item == nil || item.Size != size || countCreates(e) != 1 {
						t.Fatalf("UploadFile() = %+v, %v, %d sessions; want the stored item from one session", item, err, countCreates(e))
					}
					if f := e.srv.Files()[botUser+":s.bin"]; !bytes.Equal(f.Data, data) {
						t.Errorf("stored %d bytes; want the exact content", len(f.Data))
					}
					return
				}
				if err == nil || !strings.Contains(err.Error(), tc.wantErr) || adapter.KindOf(toAdapterError(err, "")) != tc.wantKind {
					t.Fatalf("UploadFile() error = %v; want %q (%s)", err, tc.wantErr, tc.wantKind)
				}
			})
		})
	}
}

// TestUploadShortContent: content that ends before its declared size is an invalid request,
// never a zero-padded file (simple upload and session, ReaderAt and plain reader).
func TestUploadShortContent(t *testing.T) {
	for _, size := range []int{1 << 20, 6 << 20} {
		t.Run(fmt.Sprint(size), func(t *testing.T) {
			synctest.Test(t, func(t *testing.T) {
				e := newEnv(t)
				_, c := e.delegated(t, nil)
				data := randomBytes(size)
				short := data[:size-1000]
				for name, r := range map[string]io.Reader{
					"ReaderAt":     bytes.NewReader(short),
					"plain reader": struct{ io.Reader }{bytes.NewReader(short)},
				} {
					_, err := c.UploadFile(t.Context(), "/me/drive/root:/short.bin", r, int64(size), UploadOptions{})
					if !errors.Is(err, adapter.ErrInvalidRequest) || !strings.Contains(err.Error(), "declared size") {
						t.Errorf("%s: UploadFile(short content) error = %v; want invalid_request about the declared size", name, err)
					}
				}
				if f, ok := e.srv.Files()[botUser+":short.bin"]; ok {
					t.Errorf("a short body was stored as %d bytes", len(f.Data))
				}
			})
		})
	}
	// Through the adapter: a Body shorter than its Size.
	synctest.Test(t, func(t *testing.T) {
		ae := newAdapter(t, func(o *Options) { o.NotificationURL = "" })
		_, err := ae.a.Upload(t.Context(), adapter.Attachment{Name: "x.bin", Body: bytes.NewReader(make([]byte, 10)), Size: 20})
		if !errors.Is(err, adapter.ErrInvalidRequest) {
			t.Errorf("Upload(short Body) error = %v; want invalid_request", err)
		}
	})
}

// TestUpload416ResumesFromStatus: a fragment's bytes are accepted but its answer is a 503, so
// the client sends the range again, gets 416 and continues from the session's status.
func TestUpload416ResumesFromStatus(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		e := newEnv(t)
		_, c := e.delegated(t, nil)
		data := randomBytes(12 << 20)
		injected := false
		_, err := c.UploadFile(t.Context(), "/me/drive/root:/r416.bin", bytes.NewReader(data), int64(len(data)), UploadOptions{
			Progress: func(sent, total int64) {
				if !injected {
					injected = true
					e.srv.FailUploadResponses(1, 503)
				}
			}})
		if err != nil {
			t.Fatalf("UploadFile() error = %v", err)
		}
		if f := e.srv.Files()[botUser+":r416.bin"]; !bytes.Equal(f.Data, data) {
			t.Errorf("stored %d bytes; want the exact %d", len(f.Data), len(data))
		}
		var seq []string
		for _, r := range e.srv.UploadRequests() {
			seq = append(seq, fmt.Sprintf("%s %d", r.Method, r.Status))
		}
		if got := strings.Join(seq, ","); !strings.Contains(got, "PUT 202,PUT 503,PUT 416,GET 200,PUT 201") {
			t.Errorf("upload requests = %s; want a resent range answered 416, then a status GET and the last fragment", got)
		}
		if countCreates(e) != 1 {
			t.Errorf("sessions created = %d; want 1", countCreates(e))
		}
	})
}

// TestUpload404After416Restarts: the session is gone when the client asks for its status
// after a 416; the upload starts over in a new session (spec §7: on 404 start over).
func TestUpload404After416Restarts(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		e := newEnv(t)
		c, h := rewritingClient(t, e)
		data := randomBytes(12 << 20)
		injected := false
		_, err := c.UploadFile(t.Context(), "/me/drive/root:/r404.bin", bytes.NewReader(data), int64(len(data)), UploadOptions{
			Progress: func(sent, total int64) {
				if !injected {
					injected = true
					e.srv.FailUploadResponses(1, 503)
					h.arm("", true)
				}
			}})
		if err != nil {
			t.Fatalf("UploadFile() error = %v; want a restarted session", err)
		}
		if f := e.srv.Files()[botUser+":r404.bin"]; !bytes.Equal(f.Data, data) {
			t.Errorf("stored %d bytes; want the exact %d", len(f.Data), len(data))
		}
		var seq []string
		for _, r := range e.srv.UploadRequests() {
			seq = append(seq, fmt.Sprintf("%s %d", r.Method, r.Status))
		}
		if got := strings.Join(seq, ","); !strings.Contains(got, "PUT 416,GET 404") || countCreates(e) != 2 {
			t.Errorf("upload requests = %s, sessions %d; want 416, a 404 status and a second session", got, countCreates(e))
		}
	})
}

// TestMailAttachment9MiBArrivesWhole sends a 9 MiB attachment through an Outlook attachment
// upload session, which answers every non-final range 200 OK (with nextExpectedRanges) and
// only the final one 201 Created: the mail the emulator received carries every byte.
func TestMailAttachment9MiBArrivesWhole(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		e := newEnv(t)
		_, c := e.delegated(t, nil)
		big := randomBytes(9 << 20)
		m := &Mail{Subject: "report", Body: ChatBody{ContentType: "Text", Content: "see attached"}}
		var r Recipient
		r.EmailAddress.Address = "a@example.com"
		m.ToRecipients = []Recipient{r}
		var last int64
		if err := c.SendMail(t.Context(), "me", m, []LargeAttachment{{Name: "big.bin", ContentType: "application/octet-stream", Data: big}},
			func(sent, total int64) { last = sent }); err != nil {
			t.Fatalf("SendMail() error = %v", err)
		}
		sent := e.srv.Sent()
		if len(sent) != 1 || len(sent[0].Attachments) != 1 {
			t.Fatalf("Sent() = %d mails; want one mail with one attachment", len(sent))
		}
		if got := sent[0].Attachments[0].Data; !bytes.Equal(got, big) {
			t.Fatalf("attachment = %d bytes (equal %v); want the exact %d bytes", len(got), bytes.Equal(got, big), len(big))
		}
		if last != int64(len(big)) {
			t.Errorf("last progress = %d; want %d", last, len(big))
		}
		reqs := e.srv.UploadRequests()
		if len(reqs) < 3 {
			t.Fatalf("upload requests = %+v; want at least three ranges for 9 MiB", reqs)
		}
		for i, q := range reqs {
			want := http.StatusOK
			if i == len(reqs)-1 {
				want = http.StatusCreated
			}
			if q.Status != want {
				t.Errorf("range %d (%s) answered %d; want %d (Outlook: 200 until the final 201)", i, q.Range, q.Status, want)
			}
		}
	})
}

// TestDriveUploadSessionStatuses checks OneDrive's side of the same protocol: non-final
// ranges answer 202 Accepted, the final one 201 with the driveItem.
func TestDriveUploadSessionStatuses(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		e := newEnv(t)
		_, c := e.delegated(t, nil)
		data := randomBytes(11 << 20)
		item, err := c.UploadFile(t.Context(), "/me/drive/root:/d.bin", bytes.NewReader(data), int64(len(data)), UploadOptions{})
		if err != nil {
			t.Fatalf("UploadFile() error = %v", err)
		}
		if f := e.srv.Files()[botUser+":d.bin"]; !bytes.Equal(f.Data, data) || item.Size != int64(len(data)) {
			t.Fatalf("uploaded %d bytes; want %d identical", len(f.Data), len(data))
		}
		reqs := e.srv.UploadRequests()
		for i, q := range reqs {
			want := http.StatusAccepted
			if i == len(reqs)-1 {
				want = http.StatusCreated
			}
			if q.Status != want {
				t.Errorf("range %d (%s) answered %d; want %d", i, q.Range, q.Status, want)
			}
		}
	})
}

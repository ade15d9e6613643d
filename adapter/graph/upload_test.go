package graph

import (
	"bytes"
	"encoding/binary"
	"errors"
	"math/rand/v2"
	"strings"
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

package graphtest

import (
	"encoding/json"
	"fmt"
	"net/http"
	"path"
	"strconv"
	"strings"
	"time"
)

// FragmentMultiple is the size every upload-session fragment but the last must be a multiple of.
const FragmentMultiple = 320 << 10

// MaxSimpleUpload is the largest body the simple upload (PUT …:/content) accepts here.
const MaxSimpleUpload = 4 << 20

type uploadSession struct {
	id, kind, user, path, draft string // kind "drive" or "mail"
	tempauth                    string // the query credential of the upload URL
	name, contentType           string
	total                       int64 // -1 until known
	data                        []byte
	expires                     time.Time
}

// Files returns the OneDrive files uploaded so far, keyed by "user:path".
func (s *Server) Files() map[string]File {
	s.mu.Lock()
	defer s.mu.Unlock()
	out := map[string]File{}
	for k, f := range s.files {
		out[k] = *f
	}
	return out
}

// UploadURLs returns every upload URL handed out so far, in order. Each carries a unique
// tempauth= credential in its query, as real ones do.
func (s *Server) UploadURLs() []string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return append([]string(nil), s.uploadURLs...)
}

// UploadRequest is one request an upload URL received.
type UploadRequest struct {
	Method string
	// Range is the Content-Range of a PUT ("bytes 0-327679/1048576"), "" otherwise.
	Range string
	// Status is the status answered; 0 for a dropped connection.
	Status int
}

// UploadRequests returns the requests upload URLs received so far, in order.
func (s *Server) UploadRequests() []UploadRequest {
	s.mu.Lock()
	defer s.mu.Unlock()
	return append([]UploadRequest(nil), s.uploadReqs...)
}

// ExpireUploadSessions ends every open upload session: the next request to its URL gets 404.
func (s *Server) ExpireUploadSessions() {
	s.mu.Lock()
	defer s.mu.Unlock()
	for _, u := range s.sessions {
		u.expires = time.Now().Add(-time.Second)
	}
}

// UploadSessions returns how many upload sessions were created.
func (s *Server) UploadSessions() int {
	s.mu.Lock()
	defer s.mu.Unlock()
	n := 0
	for range s.sessions {
		n++
	}
	return n
}

func (s *Server) sessionLife() time.Duration {
	if s.UploadSessionLifetime > 0 {
		return s.UploadSessionLifetime
	}
	return 15 * time.Minute
}

func (s *Server) serveDrive(w http.ResponseWriter, r *http.Request, tok *accessToken, user, rest string) {
	// rest: root:/{path}:/content | root:/{path}:/createUploadSession | items/{id}
	if strings.HasPrefix(rest, "items/") && r.Method == http.MethodGet {
		id := strings.TrimPrefix(rest, "items/")
		s.mu.Lock()
		var v map[string]any
		for _, f := range s.files {
			if f.ID == id {
				v = itemJSON(f)
			}
		}
		s.mu.Unlock()
		if v == nil {
			graphError(w, http.StatusNotFound, "itemNotFound", "The resource could not be found.")
			return
		}
		writeJSON(w, http.StatusOK, v)
		return
	}
	p, op, ok := strings.Cut(strings.TrimPrefix(rest, "root:/"), ":/")
	if !ok && r.Method == http.MethodGet && strings.HasPrefix(rest, "root:/") {
		s.mu.Lock()
		f := s.files[user+":"+strings.TrimSuffix(p, ":")]
		var v map[string]any
		if f != nil {
			v = itemJSON(f)
		}
		s.mu.Unlock()
		if v == nil {
			graphError(w, http.StatusNotFound, "itemNotFound", "The resource could not be found.")
			return
		}
		writeJSON(w, http.StatusOK, v)
		return
	}
	if !ok || !strings.HasPrefix(rest, "root:/") || p == "" {
		graphError(w, http.StatusBadRequest, "invalidRequest", "Invalid drive path.")
		return
	}
	switch {
	case op == "content" && r.Method == http.MethodPut:
		if r.ContentLength > MaxSimpleUpload {
			graphError(w, http.StatusRequestEntityTooLarge, "requestTooLarge", "Simple upload supports files up to 4 MB; use an upload session.")
			return
		}
		data, ok := readBody(w, r, MaxSimpleUpload)
		if !ok {
			return
		}
		s.mu.Lock()
		f := s.storeFileLocked(baseURL(r), user, p, data)
		v := itemJSON(f)
		s.mu.Unlock()
		writeJSON(w, http.StatusCreated, v)
	case op == "createUploadSession" && r.Method == http.MethodPost:
		raw, ok := readBody(w, r, 1<<20)
		if !ok {
			return
		}
		var b struct {
			Item struct {
				FileSize int64 `json:"fileSize"`
			} `json:"item"`
		}
		if len(raw) > 0 {
			json.Unmarshal(raw, &b)
		}
		s.openSession(w, r, &uploadSession{kind: "drive", user: user, path: p, name: path.Base(p), total: orUnknown(b.Item.FileSize)})
	default:
		graphError(w, http.StatusBadRequest, "invalidRequest", "Unsupported drive operation "+op)
	}
}

func orUnknown(n int64) int64 {
	if n <= 0 {
		return -1
	}
	return n
}

func (s *Server) createMailUpload(w http.ResponseWriter, r *http.Request, user, draft string) {
	raw, ok := readBody(w, r, 1<<20)
	if !ok {
		return
	}
	var b struct {
		AttachmentItem struct {
			AttachmentType string `json:"attachmentType"`
			Name           string `json:"name"`
			Size           int64  `json:"size"`
			ContentType    string `json:"contentType"`
		} `json:"AttachmentItem"`
	}
	if err := json.Unmarshal(raw, &b); err != nil || b.AttachmentItem.Size <= 0 || b.AttachmentItem.Name == "" {
		graphError(w, http.StatusBadRequest, "ErrorInvalidRequest", "AttachmentItem with name and size is required.")
		return
	}
	if b.AttachmentItem.Size > 150<<20 {
		graphError(w, http.StatusRequestEntityTooLarge, "ErrorAttachmentSizeLimitExceeded", "The attachment exceeds 150 MB.")
		return
	}
	s.mu.Lock()
	d := s.draft(w, user, draft)
	s.mu.Unlock()
	if d == nil {
		return
	}
	s.openSession(w, r, &uploadSession{kind: "mail", user: user, draft: draft, name: b.AttachmentItem.Name,
		contentType: b.AttachmentItem.ContentType, total: b.AttachmentItem.Size})
}

func (s *Server) openSession(w http.ResponseWriter, r *http.Request, u *uploadSession) {
	s.mu.Lock()
	s.initLocked()
	u.id = randomString(16)
	u.tempauth = "tempauth-" + randomString(16)
	u.expires = time.Now().Add(s.sessionLife()).UTC()
	s.sessions[u.id] = u
	// Like SharePoint's, the URL carries its credential in the query (tempauth=).
	uploadURL := baseURL(r) + "/upload/" + u.id + "?guid=%27" + u.id + "%27&tempauth=" + u.tempauth
	s.uploadURLs = append(s.uploadURLs, uploadURL)
	v := s.progress(u)
	s.mu.Unlock()
	v["uploadUrl"] = uploadURL
	// OneDrive's createUploadSession answers 200 OK ("driveItem: createUploadSession",
	// learn.microsoft.com/graph/api/driveitem-createuploadsession); Outlook's attachment
	// createUploadSession answers 201 Created ("Attach large files to Outlook messages or
	// events", learn.microsoft.com/graph/outlook-large-attachments, step 1).
	status := http.StatusOK
	if u.kind == "mail" {
		status = http.StatusCreated
	}
	writeJSON(w, status, v)
}

func (s *Server) storeFileLocked(base, user, p string, data []byte) *File {
	s.initLocked()
	key := user + ":" + p
	f := s.files[key]
	if f == nil {
		g := strings.ToUpper(newGUID())
		f = &File{ID: "01" + strings.ReplaceAll(g, "-", "")[:24], Name: path.Base(p), Path: p, ETag: `"{` + g + `},1"`,
			WebURL: base + "/personal/" + user + "/Documents/" + p}
		s.files[key] = f
	} else {
		guid := strings.TrimSuffix(strings.TrimPrefix(f.ETag, `"{`), `},1"`)
		if i := strings.Index(guid, "},"); i >= 0 {
			guid = guid[:i]
		}
		f.ETag = `"{` + guid + `},2"`
	}
	f.Data = append([]byte(nil), data...)
	return f
}

func itemJSON(f *File) map[string]any {
	return map[string]any{"id": f.ID, "name": f.Name, "size": len(f.Data), "eTag": f.ETag, "webUrl": f.WebURL,
		"file": map[string]any{"mimeType": "application/octet-stream"}}
}

// progress is the upload session status. OneDrive lists open ranges ("26-"); Outlook lists
// one value, the offset to send next, with no "-end" (resources/uploadsession.md; the
// example in "Attach large files to Outlook messages or events" shows ["2000000"]).
func (s *Server) progress(u *uploadSession) map[string]any {
	next := fmt.Sprintf("%d-", len(u.data))
	if u.kind == "mail" {
		next = strconv.Itoa(len(u.data))
	}
	return map[string]any{"expirationDateTime": u.expires.Format(time.RFC3339Nano),
		"nextExpectedRanges": []string{next}}
}

func uploadError(w http.ResponseWriter, status int, code, inner, msg string) {
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(status)
	json.NewEncoder(w).Encode(map[string]any{"error": map[string]any{"code": code, "message": msg,
		"innerError": map[string]any{"code": inner}}})
}

func (s *Server) serveUpload(w http.ResponseWriter, r *http.Request) {
	id := strings.TrimPrefix(r.URL.Path, "/upload/")
	s.mu.Lock()
	s.initLocked()
	var f *fault
	if len(s.uploadFault) > 0 {
		f = &s.uploadFault[0]
		s.uploadFault = s.uploadFault[1:]
	}
	s.mu.Unlock()
	sw := &statusWriter{ResponseWriter: w}
	defer func() {
		s.mu.Lock()
		s.uploadReqs = append(s.uploadReqs, UploadRequest{Method: r.Method, Range: r.Header.Get("Content-Range"), Status: sw.status})
		s.mu.Unlock()
	}()
	if f != nil {
		switch {
		case f.drop:
			panic(http.ErrAbortHandler)
		case f.dropAfter:
			s.serveUploadInner(discard{http.Header{}}, r, id) // the bytes arrive, the answer is lost
			panic(http.ErrAbortHandler)
		case f.afterAccept:
			s.serveUploadInner(discard{http.Header{}}, r, id) // the bytes arrive, the answer is an error
		}
		uploadError(sw, f.status, f.code, "serviceUnavailable", "The service is temporarily unavailable.")
		return
	}
	s.serveUploadInner(sw, r, id)
}

// statusWriter remembers the status written.
type statusWriter struct {
	http.ResponseWriter
	status int
}

func (w *statusWriter) WriteHeader(code int) {
	if w.status == 0 {
		w.status = code
	}
	w.ResponseWriter.WriteHeader(code)
}

func (w *statusWriter) Write(b []byte) (int, error) {
	if w.status == 0 {
		w.status = http.StatusOK
	}
	return w.ResponseWriter.Write(b)
}

type discard struct{ h http.Header }

func (d discard) Header() http.Header         { return d.h }
func (d discard) Write(b []byte) (int, error) { return len(b), nil }
func (d discard) WriteHeader(int)             {}

func (s *Server) serveUploadInner(w http.ResponseWriter, r *http.Request, id string) {
	if s.StrictUpload && r.Header.Get("Authorization") != "" {
		uploadError(w, http.StatusUnauthorized, "unauthenticated", "invalidAuthentication", "An Authorization header must not be sent to an upload URL.")
		return
	}
	s.mu.Lock()
	u := s.sessions[id]
	if u != nil && !time.Now().Before(u.expires) {
		delete(s.sessions, id)
		u = nil
	}
	s.mu.Unlock()
	if u == nil {
		uploadError(w, http.StatusNotFound, "itemNotFound", "uploadSessionNotFound", "The upload session was not found.")
		return
	}
	if r.URL.Query().Get("tempauth") != u.tempauth {
		uploadError(w, http.StatusUnauthorized, "unauthenticated", "invalidAuthentication", "The upload URL's tempauth is not valid.")
		return
	}
	switch r.Method {
	case http.MethodGet:
		s.mu.Lock()
		v := s.progress(u)
		s.mu.Unlock()
		writeJSON(w, http.StatusOK, v)
		return
	case http.MethodDelete:
		s.mu.Lock()
		delete(s.sessions, id)
		s.mu.Unlock()
		w.WriteHeader(http.StatusNoContent)
		return
	case http.MethodPut:
	default:
		uploadError(w, http.StatusMethodNotAllowed, "invalidRequest", "invalidRequest", "method not allowed")
		return
	}
	start, end, total, ok := parseContentRange(r.Header.Get("Content-Range"))
	if !ok {
		uploadError(w, http.StatusBadRequest, "invalidRequest", "invalidRange", "A valid Content-Range header is required.")
		return
	}
	n := end - start + 1
	if n >= 60<<20 {
		uploadError(w, http.StatusRequestEntityTooLarge, "invalidRequest", "fragmentTooLarge", "Fragments must be less than 60 MiB.")
		return
	}
	data, okb := readBody(w, r, n)
	if !okb {
		return
	}
	if int64(len(data)) != n {
		uploadError(w, http.StatusBadRequest, "invalidRequest", "fragmentLengthMismatch", "Declared fragment length does not match the provided number of bytes.")
		return
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	have := int64(len(u.data))
	switch {
	case u.total >= 0 && total != u.total:
		uploadError(w, http.StatusBadRequest, "invalidRequest", "invalidRange", "The total size must be the same on every fragment.")
		return
	case start < have:
		uploadError(w, http.StatusRequestedRangeNotSatisfiable, "invalidRange", "fragmentOverlap", "Uploaded fragment overlaps with existing data.")
		return
	case start > have:
		uploadError(w, http.StatusBadRequest, "invalidRequest", "fragmentOutOfOrder", "Fragments must be uploaded in order.")
		return
	case end >= total:
		uploadError(w, http.StatusBadRequest, "invalidRequest", "invalidRange", "The fragment ends past the total size.")
		return
	case u.kind == "drive" && end != total-1 && n%FragmentMultiple != 0:
		uploadError(w, http.StatusBadRequest, "invalidRequest", "invalidRange", "Fragment size must be a multiple of 320 KiB.")
		return
	}
	u.total = total
	u.data = append(u.data, data...)
	if int64(len(u.data)) < total {
		// The two services differ on a non-final range. OneDrive answers 202 Accepted
		// ("driveItem: createUploadSession", learn.microsoft.com/graph/api/driveitem-createuploadsession);
		// Outlook answers 200 OK and only the final range gets 201 Created ("Attach large
		// files to Outlook messages or events", learn.microsoft.com/graph/outlook-large-attachments,
		// step 2). A client that takes Outlook's 200 for "done" sends a cut attachment.
		status := http.StatusAccepted
		if u.kind == "mail" {
			status = http.StatusOK
		}
		writeJSON(w, status, s.progress(u))
		return
	}
	delete(s.sessions, id)
	if u.kind == "mail" {
		d := s.drafts[u.user+"/"+u.draft]
		if d != nil {
			d.Attachments = append(d.Attachments, SentAttachment{Name: u.name, ContentType: u.contentType, Data: u.data})
		}
		w.Header().Set("Location", baseURL(r)+"/v1.0/users/"+u.user+"/messages/"+u.draft+"/attachments/"+randomString(6))
		w.WriteHeader(http.StatusCreated)
		return
	}
	f2 := s.storeFileLocked(baseURL(r), u.user, u.path, u.data)
	writeJSON(w, http.StatusCreated, itemJSON(f2))
}

func parseContentRange(v string) (start, end, total int64, ok bool) {
	v, found := strings.CutPrefix(v, "bytes ")
	if !found {
		return
	}
	rng, tot, found := strings.Cut(v, "/")
	if !found {
		return
	}
	a, b, found := strings.Cut(rng, "-")
	if !found {
		return
	}
	var err1, err2, err3 error
	start, err1 = strconv.ParseInt(a, 10, 64)
	end, err2 = strconv.ParseInt(b, 10, 64)
	total, err3 = strconv.ParseInt(tot, 10, 64)
	if err1 != nil || err2 != nil || err3 != nil || start < 0 || end < start || total <= 0 {
		return 0, 0, 0, false
	}
	return start, end, total, true
}

package aibottest

import (
	"crypto/md5"
	"encoding/base64"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"strconv"
	"time"
)

// Upload limits (specs/wecom-aibot.md §2.7).
const (
	MaxChunkBytes     = 512 << 10 // decoded
	MaxChunks         = 100
	UploadSessionTTL  = 30 * time.Minute
	UploadsPerMinute  = 30
	CodeInvalidMedia  = 40007 // invalid media_id ([U] code)
	CodeUploadSession = 40058
)

type upload struct {
	typ, filename, md5 string
	totalSize          int64
	totalChunks        int
	chunks             map[int][]byte
	at                 time.Time
}

// A Media is an uploaded file.
type Media struct {
	Type, Filename string
	Data           []byte
}

// handleUpload serves the three upload commands; s.mu is held.
func (s *Server) handleUpload(cmd string, body json.RawMessage, now time.Time) (int, json.RawMessage, string) {
	if s.uploads == nil {
		s.uploads = map[string]*upload{}
		s.mediaIDs = map[string]*Media{}
	}
	switch cmd {
	case "aibot_upload_media_init":
		var b struct {
			Type        string `json:"type"`
			Filename    string `json:"filename"`
			TotalSize   int64  `json:"total_size"`
			TotalChunks int    `json:"total_chunks"`
			MD5         string `json:"md5"`
		}
		if err := json.Unmarshal(body, &b); err != nil {
			return CodeBadParam, nil, "init body: " + err.Error()
		}
		switch b.Type {
		case "file", "image", "voice", "video":
		default:
			return CodeBadParam, nil, fmt.Sprintf("upload type %q", b.Type)
		}
		if b.TotalChunks < 1 || b.TotalChunks > MaxChunks || b.TotalSize < 1 || b.Filename == "" {
			return CodeBadParam, nil, fmt.Sprintf("upload of %d bytes in %d chunks named %q", b.TotalSize, b.TotalChunks, b.Filename)
		}
		i := 0
		for i < len(s.uploadTimes) && now.Sub(s.uploadTimes[i]) >= time.Minute {
			i++
		}
		s.uploadTimes = s.uploadTimes[i:]
		if len(s.uploadTimes) >= UploadsPerMinute {
			return CodeRateLimited, nil, "over 30 uploads a minute"
		}
		s.uploadTimes = append(s.uploadTimes, now)
		id := "UPLOAD_" + randHex(8)
		s.uploads[id] = &upload{typ: b.Type, filename: b.Filename, md5: b.MD5, totalSize: b.TotalSize, totalChunks: b.TotalChunks, chunks: map[int][]byte{}, at: now}
		out, _ := json.Marshal(map[string]string{"upload_id": id})
		return 0, out, ""
	case "aibot_upload_media_chunk":
		var b struct {
			UploadID   string `json:"upload_id"`
			ChunkIndex int    `json:"chunk_index"`
			Base64Data string `json:"base64_data"`
		}
		if err := json.Unmarshal(body, &b); err != nil {
			return CodeBadParam, nil, "chunk body: " + err.Error()
		}
		u := s.uploads[b.UploadID]
		if u == nil || now.Sub(u.at) > UploadSessionTTL {
			return CodeUploadSession, nil, "unknown or expired upload_id"
		}
		data, err := base64.StdEncoding.DecodeString(b.Base64Data)
		if err != nil || len(data) == 0 || len(data) > MaxChunkBytes {
			return CodeBadParam, nil, fmt.Sprintf("chunk of %d bytes (≤ %d, base64)", len(data), MaxChunkBytes)
		}
		if b.ChunkIndex < 0 || b.ChunkIndex >= u.totalChunks {
			return CodeBadParam, nil, fmt.Sprintf("chunk_index %d of %d (0-based)", b.ChunkIndex, u.totalChunks)
		}
		if _, dup := u.chunks[b.ChunkIndex]; !dup {
			u.chunks[b.ChunkIndex] = data
		}
		return 0, nil, ""
	case "aibot_upload_media_finish":
		var b struct {
			UploadID string `json:"upload_id"`
		}
		json.Unmarshal(body, &b)
		u := s.uploads[b.UploadID]
		if u == nil || now.Sub(u.at) > UploadSessionTTL {
			return CodeUploadSession, nil, "unknown or expired upload_id"
		}
		var all []byte
		for i := 0; i < u.totalChunks; i++ {
			c, ok := u.chunks[i]
			if !ok {
				return CodeBadParam, nil, fmt.Sprintf("chunk %d missing", i)
			}
			all = append(all, c...)
		}
		if int64(len(all)) != u.totalSize {
			return CodeBadParam, nil, fmt.Sprintf("%d bytes uploaded; total_size says %d", len(all), u.totalSize)
		}
		if sum := md5.Sum(all); u.md5 != "" && u.md5 != hex.EncodeToString(sum[:]) {
			return CodeBadParam, nil, "md5 mismatch"
		}
		delete(s.uploads, b.UploadID)
		id := "MEDIA_" + randHex(12)
		s.mediaIDs[id] = &Media{Type: u.typ, Filename: u.filename, Data: all}
		out, _ := json.Marshal(map[string]string{"type": u.typ, "media_id": id, "created_at": strconv.FormatInt(now.Unix(), 10)})
		return 0, out, ""
	}
	return CodeBadParam, nil, "unknown cmd " + cmd
}

// Uploaded returns the media uploaded under mediaID, or nil.
func (s *Server) Uploaded(mediaID string) *Media {
	s.init()
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.mediaIDs[mediaID]
}

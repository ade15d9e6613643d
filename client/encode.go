package client

import (
	"bytes"
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"
	"io"

	"github.com/seed-a64d9e1f/chatwire/adapter"
)

// encodeMessage returns msg's JSON as a request body and its exact length. Attachments with
// a Body are streamed through a pipe, base64-encoded on the fly; wait returns once that
// streaming has stopped (call it after the request is done: the transport closes the body).
func encodeMessage(msg Message) (body io.Reader, length int64, wait func(), err error) {
	streamed := false
	for i, a := range msg.Attachments {
		if a.Body != nil {
			if a.Size <= 0 {
				return nil, 0, nil, &adapter.Error{Kind: adapter.KindInvalidRequest,
					Message: fmt.Sprintf("client: attachments[%d] %q: Body without Size", i, a.Name)}
			}
			streamed = true
		}
	}
	if !streamed {
		data, err := json.Marshal(msg)
		if err != nil {
			return nil, 0, nil, fmt.Errorf("client: encoding the message: %w", err)
		}
		return bytes.NewReader(data), int64(len(data)), func() {}, nil
	}

	// {...message without attachments, "attachments":[{...}, {...meta, "data":"<base64>"}]}
	atts := msg.Attachments
	msg.Attachments = nil
	head, err := json.Marshal(msg)
	if err != nil {
		return nil, 0, nil, fmt.Errorf("client: encoding the message: %w", err)
	}
	parts := make([]part, 0, len(atts)+2)
	parts = append(parts, part{text: append(head[:len(head)-1:len(head)-1], `,"attachments":[`...)})
	length = int64(len(parts[0].text))
	for i, a := range atts {
		sep := ""
		if i > 0 {
			sep = ","
		}
		if a.Body == nil {
			data, err := json.Marshal(a)
			if err != nil {
				return nil, 0, nil, fmt.Errorf("client: encoding attachments[%d]: %w", i, err)
			}
			p := part{text: append([]byte(sep), data...)}
			parts = append(parts, p)
			length += int64(len(p.text))
			continue
		}
		body, size := a.Body, a.Size
		a.Body, a.Data = nil, nil
		meta, err := json.Marshal(a)
		if err != nil {
			return nil, 0, nil, fmt.Errorf("client: encoding attachments[%d]: %w", i, err)
		}
		text := append([]byte(sep), meta[:len(meta)-1]...) // without the closing brace
		if len(meta) > 2 {
			text = append(text, ',')
		}
		text = append(text, `"data":"`...)
		parts = append(parts, part{text: text, body: body, size: size, name: a.Name})
		length += int64(len(text)) + int64(base64.StdEncoding.EncodedLen(int(size))) + int64(len(`"}`))
	}
	parts = append(parts, part{text: []byte("]}")})
	length += 2

	pr, pw := io.Pipe()
	done := make(chan struct{})
	go func() {
		defer close(done)
		pw.CloseWithError(writeParts(pw, parts))
	}()
	wait = func() {
		pr.CloseWithError(errors.New("client: send finished")) // unblocks a writer the transport left
		<-done
	}
	return pr, length, wait, nil
}

// A part is a piece of a streamed message body.
type part struct {
	text []byte    // JSON text before the streamed data (or all of an attachment)
	body io.Reader // nil: text is the whole part
	size int64     // body's length
	name string    // the attachment's name, for errors
}

// writeParts writes the parts of a streamed message to w: each text, then its body
// base64-encoded and closed with `"}`. A body shorter or longer than its size is an error.
func writeParts(w io.Writer, parts []part) error {
	for _, p := range parts {
		if _, err := w.Write(p.text); err != nil {
			return err
		}
		if p.body == nil {
			continue
		}
		enc := base64.NewEncoder(base64.StdEncoding, w)
		n, err := io.CopyN(enc, p.body, p.size)
		if err != nil {
			if errors.Is(err, io.EOF) {
				return fmt.Errorf("client: attachment %q: Body ended after %d bytes; Size is %d", p.name, n, p.size)
			}
			return fmt.Errorf("client: attachment %q: %w", p.name, err)
		}
		if extra, _ := p.body.Read(make([]byte, 1)); extra > 0 {
			return fmt.Errorf("client: attachment %q: Body is longer than Size (%d)", p.name, p.size)
		}
		if err := enc.Close(); err != nil {
			return err
		}
		if _, err := io.WriteString(w, `"}`); err != nil {
			return err
		}
	}
	return nil
}

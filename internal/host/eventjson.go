package host

import (
	"encoding/base64"
	"encoding/json"
	"strconv"
	"unicode/utf8"

	"github.com/seed-a64d9e1f/chatwire/adapter"
)

// jsonEvent is an event's JSON as the event log stores it and SSE and delivery send it:
// byte for byte what encoding/json.Marshal makes of it (the API's event JSON), written
// without reflection. An event appendEvent cannot vouch for (a Raw that is not compact,
// HTML-safe JSON, a time outside RFC 3339) goes to json.Marshal, which also makes its
// errors. At 2,000 events/s json.Marshal was ~5% of the host's CPU (issue 18).
func jsonEvent(e adapter.Event) ([]byte, error) {
	if b, ok := appendEvent(make([]byte, 0, eventSize(&e)), &e); ok {
		return b, nil
	}
	return json.Marshal(e)
}

// eventSize estimates e's JSON length, so jsonEvent allocates once.
func eventSize(e *adapter.Event) int {
	n := 192 + len(e.ID) + len(e.Bot) + len(e.Platform) + len(e.Kind) + len(e.Chat.ID) + len(e.Chat.Type) +
		len(e.Sender.ID) + len(e.Sender.Name) + len(e.Text) + len(e.Text)/2 + len(e.Raw)
	for _, a := range e.Attachments {
		n += 128 + len(a.Type) + len(a.Name) + len(a.ContentType) + len(a.ID) + len(a.URL) + len(a.Title) +
			len(a.Description) + base64.StdEncoding.EncodedLen(len(a.Data))
	}
	return n
}

// appendEvent appends e's JSON as encoding/json writes it (field order, omitempty, HTML
// escaping, \ufffd for invalid UTF-8, base64 Data) to buf. It reports false, with buf in
// an undefined state, when it cannot write it so: then json.Marshal must.
func appendEvent(buf []byte, e *adapter.Event) ([]byte, bool) {
	buf = append(buf, `{"id":`...)
	buf = appendJSONString(buf, e.ID)
	buf = append(buf, `,"bot":`...)
	buf = appendJSONString(buf, e.Bot)
	buf = append(buf, `,"platform":`...)
	buf = appendJSONString(buf, e.Platform)
	buf = append(buf, `,"kind":`...)
	buf = appendJSONString(buf, e.Kind)
	buf = append(buf, `,"chat":{"id":`...)
	buf = appendJSONString(buf, e.Chat.ID)
	buf = append(buf, `,"type":`...)
	buf = appendJSONString(buf, e.Chat.Type)
	buf = append(buf, `},"sender":{"id":`...)
	buf = appendJSONString(buf, e.Sender.ID)
	buf = append(buf, `,"name":`...)
	buf = appendJSONString(buf, e.Sender.Name)
	buf = append(buf, `},"text":`...)
	buf = appendJSONString(buf, e.Text)
	if len(e.Attachments) > 0 {
		buf = append(buf, `,"attachments":[`...)
		for i := range e.Attachments {
			if i > 0 {
				buf = append(buf, ',')
			}
			buf = appendAttachment(buf, &e.Attachments[i])
		}
		buf = append(buf, ']')
	}
	buf = append(buf, `,"time":"`...)
	var err error
	if buf, err = e.Time.AppendText(buf); err != nil {
		return buf, false // a year outside [0,9999]: json.Marshal says so
	}
	buf = append(buf, '"')
	if len(e.Raw) > 0 {
		if !compactSafeJSON(e.Raw) {
			return buf, false // json.Marshal compacts and escapes it, or refuses it
		}
		buf = append(buf, `,"raw":`...)
		buf = append(buf, e.Raw...)
	}
	return append(buf, '}'), true
}

// appendAttachment appends a's JSON as encoding/json writes it: every field omitempty,
// Data in standard base64, Body never.
func appendAttachment(buf []byte, a *adapter.Attachment) []byte {
	buf = append(buf, '{')
	first := true
	field := func(name string) {
		if !first {
			buf = append(buf, ',')
		}
		first = false
		buf = append(buf, '"')
		buf = append(buf, name...)
		buf = append(buf, '"', ':')
	}
	str := func(name, v string) {
		if v != "" {
			field(name)
			buf = appendJSONString(buf, v)
		}
	}
	str("type", a.Type)
	str("name", a.Name)
	str("content_type", a.ContentType)
	if a.Size != 0 {
		field("size")
		buf = strconv.AppendInt(buf, a.Size, 10)
	}
	str("id", a.ID)
	str("url", a.URL)
	str("title", a.Title)
	str("description", a.Description)
	if len(a.Data) > 0 {
		field("data")
		buf = append(buf, '"')
		buf = base64.StdEncoding.AppendEncode(buf, a.Data)
		buf = append(buf, '"')
	}
	return append(buf, '}')
}

// appendJSONString appends s as a JSON string as encoding/json writes it with HTML
// escaping (its appendString): <, > and & as \u003c, \u003e, \u0026; control characters
// as \b, \f, \n, \r, \t or \u00XX; invalid UTF-8 as \ufffd; U+2028 and U+2029 escaped.
func appendJSONString(buf []byte, s string) []byte {
	const hex = "0123456789abcdef"
	buf = append(buf, '"')
	start := 0
	for i := 0; i < len(s); {
		if b := s[i]; b < utf8.RuneSelf {
			if b >= 0x20 && b != '"' && b != '\\' && b != '<' && b != '>' && b != '&' {
				i++
				continue
			}
			buf = append(buf, s[start:i]...)
			switch b {
			case '\\', '"':
				buf = append(buf, '\\', b)
			case '\b':
				buf = append(buf, '\\', 'b')
			case '\f':
				buf = append(buf, '\\', 'f')
			case '\n':
				buf = append(buf, '\\', 'n')
			case '\r':
				buf = append(buf, '\\', 'r')
			case '\t':
				buf = append(buf, '\\', 't')
			default:
				buf = append(buf, '\\', 'u', '0', '0', hex[b>>4], hex[b&0xF])
			}
			i++
			start = i
			continue
		}
		c, size := utf8.DecodeRuneInString(s[i:])
		if c == utf8.RuneError && size == 1 {
			buf = append(buf, s[start:i]...)
			buf = append(buf, `\ufffd`...)
			i++
			start = i
			continue
		}
		if c == '\u2028' || c == '\u2029' {
			buf = append(buf, s[start:i]...)
			buf = append(buf, '\\', 'u', '2', '0', '2', hex[c&0xF])
			i += size
			start = i
			continue
		}
		i += size
	}
	buf = append(buf, s[start:]...)
	return append(buf, '"')
}

// compactSafeJSON reports whether raw is one valid JSON value that encoding/json would
// copy unchanged into its output (it compacts a json.RawMessage and escapes it for HTML):
// no whitespace outside strings, no <, > or &, no U+2028 or U+2029. False says only that
// json.Marshal must decide: it may be valid JSON written otherwise.
func compactSafeJSON(raw []byte) bool {
	end, ok := scanValue(raw, 0, 0)
	return ok && end == len(raw)
}

// maxScanDepth bounds scanValue's nesting; deeper JSON goes to json.Marshal.
const maxScanDepth = 256

// scanValue scans the compact JSON value at raw[i:] and returns the index after it.
func scanValue(raw []byte, i, depth int) (int, bool) {
	if i >= len(raw) || depth > maxScanDepth {
		return i, false
	}
	switch c := raw[i]; {
	case c == '{':
		i++
		if i < len(raw) && raw[i] == '}' {
			return i + 1, true
		}
		for {
			if i >= len(raw) || raw[i] != '"' {
				return i, false
			}
			var ok bool
			if i, ok = scanString(raw, i); !ok {
				return i, false
			}
			if i >= len(raw) || raw[i] != ':' {
				return i, false
			}
			if i, ok = scanValue(raw, i+1, depth+1); !ok {
				return i, false
			}
			if i >= len(raw) {
				return i, false
			}
			switch raw[i] {
			case ',':
				i++
			case '}':
				return i + 1, true
			default:
				return i, false
			}
		}
	case c == '[':
		i++
		if i < len(raw) && raw[i] == ']' {
			return i + 1, true
		}
		for {
			var ok bool
			if i, ok = scanValue(raw, i, depth+1); !ok {
				return i, false
			}
			if i >= len(raw) {
				return i, false
			}
			switch raw[i] {
			case ',':
				i++
			case ']':
				return i + 1, true
			default:
				return i, false
			}
		}
	case c == '"':
		return scanString(raw, i)
	case c == '-' || ('0' <= c && c <= '9'):
		return scanNumber(raw, i)
	case c == 't':
		return scanLiteral(raw, i, "true")
	case c == 'f':
		return scanLiteral(raw, i, "false")
	case c == 'n':
		return scanLiteral(raw, i, "null")
	}
	return i, false
}

// scanString scans the JSON string at raw[i] (a '"') and returns the index after it. Bytes
// of 0x80 and above are copied by encoding/json as they are (it does not check UTF-8 in a
// RawMessage) except U+2028 and U+2029, which it escapes.
func scanString(raw []byte, i int) (int, bool) {
	for i++; i < len(raw); i++ {
		switch c := raw[i]; {
		case c == '"':
			return i + 1, true
		case c < 0x20 || c == '<' || c == '>' || c == '&':
			return i, false
		case c == '\\':
			i++
			if i >= len(raw) {
				return i, false
			}
			switch raw[i] {
			case '"', '\\', '/', 'b', 'f', 'n', 'r', 't':
			case 'u':
				if i+4 >= len(raw) {
					return i, false
				}
				for _, h := range raw[i+1 : i+5] {
					if !('0' <= h && h <= '9' || 'a' <= h && h <= 'f' || 'A' <= h && h <= 'F') {
						return i, false
					}
				}
				i += 4
			default:
				return i, false
			}
		case c == 0xE2 && i+2 < len(raw) && raw[i+1] == 0x80 && raw[i+2]&^1 == 0xA8:
			return i, false
		}
	}
	return i, false
}

// scanNumber scans the JSON number at raw[i:]: -?(0|[1-9][0-9]*)(\.[0-9]+)?([eE][+-]?[0-9]+)?
func scanNumber(raw []byte, i int) (int, bool) {
	digits := func(i int) (int, bool) {
		j := i
		for j < len(raw) && '0' <= raw[j] && raw[j] <= '9' {
			j++
		}
		return j, j > i
	}
	if raw[i] == '-' {
		i++
	}
	if i >= len(raw) {
		return i, false
	}
	if raw[i] == '0' {
		i++
	} else {
		var ok bool
		if i, ok = digits(i); !ok {
			return i, false
		}
	}
	if i < len(raw) && raw[i] == '.' {
		var ok bool
		if i, ok = digits(i + 1); !ok {
			return i, false
		}
	}
	if i < len(raw) && (raw[i] == 'e' || raw[i] == 'E') {
		i++
		if i < len(raw) && (raw[i] == '+' || raw[i] == '-') {
			i++
		}
		var ok bool
		if i, ok = digits(i); !ok {
			return i, false
		}
	}
	return i, true
}

func scanLiteral(raw []byte, i int, lit string) (int, bool) {
	if len(raw)-i < len(lit) || string(raw[i:i+len(lit)]) != lit {
		return i, false
	}
	return i + len(lit), true
}

package wecom

import (
	"bytes"
	"errors"
	"slices"
	"strconv"
	"unicode/utf8"
)

// errSlowPath means scanXML met something outside the plain subset it handles; parseXML
// then uses encoding/xml.
var errSlowPath = errors.New("wecom: xml needs the full parser")

// scanXML is parseXML's fast path for the XML WeCom sends: an optional <?xml?> declaration,
// elements without attributes, text with the five predefined and numeric character
// references, CDATA sections. On anything else — comments, attributes, DOCTYPE, carriage
// returns, control characters, invalid UTF-8, unusual names — it returns errSlowPath, so
// that every input it accepts gives exactly what encoding/xml gives (a fuzz test holds it
// to that).
func scanXML(data []byte) (map[string]any, error) {
	s := scanner{data: data}
	for _, decl := range xmlDecls {
		if len(data) >= len(decl) && bytes.EqualFold(data[:len(decl)], []byte(decl)) {
			s.pos = len(decl)
			break
		}
	}
	if s.pos == 0 && bytes.HasPrefix(data, []byte("<?")) {
		return nil, errSlowPath
	}
	s.skipSpace()
	name, selfClosing, err := s.startTag()
	if err != nil {
		return nil, err
	}
	var root map[string]any
	if !selfClosing {
		if _, _, err := s.content(name, &root, 1); err != nil {
			return nil, err
		}
	}
	if root == nil {
		root = map[string]any{}
	}
	s.skipSpace()
	if s.pos != len(s.data) {
		return nil, errSlowPath
	}
	return root, nil
}

// xmlDecls are the XML declarations scanXML accepts (compared case-insensitively).
var xmlDecls = []string{`<?xml version="1.0"?>`, `<?xml version="1.0" encoding="utf-8"?>`}

type scanner struct {
	data  []byte
	pos   int
	count int // elements seen
}

func (s *scanner) skipSpace() {
	for s.pos < len(s.data) {
		switch s.data[s.pos] {
		case ' ', '\t', '\n':
			s.pos++
		default:
			return
		}
	}
}

// startTag reads "<name>" or "<name/>".
func (s *scanner) startTag() (name string, selfClosing bool, err error) {
	if s.pos >= len(s.data) || s.data[s.pos] != '<' {
		return "", false, errSlowPath
	}
	s.pos++
	name, err = s.name()
	if err != nil {
		return "", false, err
	}
	if s.count++; s.count > maxXMLElements {
		return "", false, errors.New("wecom: message has too many elements")
	}
	switch {
	case s.pos < len(s.data) && s.data[s.pos] == '>':
		s.pos++
		return name, false, nil
	case s.pos+1 < len(s.data) && s.data[s.pos] == '/' && s.data[s.pos+1] == '>':
		s.pos += 2
		return name, true, nil
	}
	return "", false, errSlowPath
}

// name reads an element name of ASCII letters, digits and '_' (not starting with a digit).
func (s *scanner) name() (string, error) {
	start := s.pos
	for s.pos < len(s.data) {
		c := s.data[s.pos]
		if c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z' || c == '_' || s.pos > start && c >= '0' && c <= '9' {
			s.pos++
			continue
		}
		break
	}
	if s.pos == start {
		return "", errSlowPath
	}
	if n, ok := knownNames[string(s.data[start:s.pos])]; ok {
		return n, nil // no allocation for the names WeCom uses
	}
	return string(s.data[start:s.pos]), nil
}

// knownNames interns the element names of WeCom messages.
var knownNames = func() map[string]string {
	m := map[string]string{}
	for _, n := range []string{"xml", "ToUserName", "FromUserName", "CreateTime", "MsgType", "Content", "MsgId",
		"AgentID", "Encrypt", "PicUrl", "MediaId", "Format", "Recognition", "ThumbMediaId", "Location_X",
		"Location_Y", "Scale", "Label", "Title", "Description", "Url", "Event", "EventKey", "Latitude",
		"Longitude", "Precision", "Token", "OpenKfId", "item"} {
		m[n] = n
	}
	return m
}()

// content reads the content of element name up to and including its end tag, adding child
// elements to *m (made on the first child). It returns the element's text and whether it
// had children.
func (s *scanner) content(name string, m *map[string]any, depth int) (string, bool, error) {
	var text []byte
	var only []byte // the text while it is a single chunk, not yet copied
	chunks := 0
	add := func(b []byte) {
		chunks++
		switch chunks {
		case 1:
			only = b
		case 2:
			text = append(append(text, only...), b...)
		default:
			text = append(text, b...)
		}
	}
	kids := false
	for {
		if s.pos >= len(s.data) {
			return "", false, errSlowPath
		}
		c := s.data[s.pos]
		switch {
		case c == '<' && bytes.HasPrefix(s.data[s.pos:], []byte("<![CDATA[")):
			end := bytes.Index(s.data[s.pos+9:], []byte("]]>"))
			if end < 0 {
				return "", false, errSlowPath
			}
			chunk := s.data[s.pos+9 : s.pos+9+end]
			if !plainText(chunk) {
				return "", false, errSlowPath
			}
			add(chunk)
			s.pos += 9 + end + 3
		case c == '<' && s.pos+1 < len(s.data) && s.data[s.pos+1] == '/':
			s.pos += 2
			end, err := s.name()
			if err != nil || end != name || s.pos >= len(s.data) || s.data[s.pos] != '>' {
				return "", false, errSlowPath
			}
			s.pos++
			if chunks == 1 {
				return string(only), kids, nil
			}
			return string(text), kids, nil
		case c == '<':
			if s.pos+1 >= len(s.data) || !nameStart(s.data[s.pos+1]) {
				return "", false, errSlowPath // a directive, comment or PI: encoding/xml decides
			}
			if depth >= maxXMLDepth {
				return "", false, errors.New("wecom: message nests too deep")
			}
			child, selfClosing, err := s.startTag()
			if err != nil {
				return "", false, err
			}
			kids = true
			var v any = ""
			if !selfClosing {
				var sub map[string]any
				t, hasKids, err := s.content(child, &sub, depth+1)
				if err != nil {
					return "", false, err
				}
				v = t
				if hasKids {
					v = sub
				}
			}
			if *m == nil {
				*m = make(map[string]any, 8)
			}
			switch old := (*m)[child].(type) {
			case nil:
				(*m)[child] = v
			case []any:
				(*m)[child] = append(old, v)
			default:
				(*m)[child] = []any{old, v}
			}
		case c == '&':
			r, n := entity(s.data[s.pos:])
			if n == 0 {
				return "", false, errSlowPath
			}
			add(utf8.AppendRune(nil, r))
			s.pos += n
		default:
			end := s.pos
			for end < len(s.data) && s.data[end] != '<' && s.data[end] != '&' {
				end++
			}
			chunk := s.data[s.pos:end]
			if !plainText(chunk) || bytes.Contains(chunk, []byte("]]>")) {
				return "", false, errSlowPath
			}
			add(chunk)
			s.pos = end
		}
	}
}

// plainText reports whether b is valid UTF-8 without carriage returns or characters XML
// forbids, so encoding/xml would copy it unchanged.
func plainText(b []byte) bool {
	for i := 0; i < len(b); {
		c := b[i]
		if c < utf8.RuneSelf {
			if c < 0x20 && c != '\t' && c != '\n' {
				return false
			}
			i++
			continue
		}
		r, n := utf8.DecodeRune(b[i:])
		if r == utf8.RuneError && n == 1 || r == 0xFFFE || r == 0xFFFF || r >= 0xD800 && r <= 0xDFFF {
			return false
		}
		i += n
	}
	return true
}

// entity decodes a character reference at the start of b and returns the rune and the
// bytes used, or 0 bytes if it is not one scanXML handles.
func entity(b []byte) (rune, int) {
	end := bytes.IndexByte(b, ';')
	if end < 2 || end > 12 {
		return 0, 0
	}
	ref := string(b[1:end])
	switch ref {
	case "lt":
		return '<', end + 1
	case "gt":
		return '>', end + 1
	case "amp":
		return '&', end + 1
	case "apos":
		return '\'', end + 1
	case "quot":
		return '"', end + 1
	}
	if ref[0] != '#' || len(ref) < 2 {
		return 0, 0
	}
	var n uint64
	var err error
	if ref[1] == 'x' {
		if len(ref) < 3 || !isHex(ref[2:]) {
			return 0, 0
		}
		n, err = strconv.ParseUint(ref[2:], 16, 32)
	} else {
		if !isDigits(ref[1:]) {
			return 0, 0
		}
		n, err = strconv.ParseUint(ref[1:], 10, 32)
	}
	r := rune(n)
	if err != nil || !(r == 0x09 || r == 0x0A || r >= 0x20 && r <= 0xD7FF || r >= 0xE000 && r <= 0xFFFD || r >= 0x10000 && r <= 0x10FFFF) {
		return 0, 0
	}
	return r, end + 1
}

func nameStart(c byte) bool { return c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z' || c == '_' }

func isHex(s string) bool {
	return s != "" && !slices.ContainsFunc([]byte(s), func(c byte) bool {
		return !(c >= '0' && c <= '9' || c >= 'a' && c <= 'f' || c >= 'A' && c <= 'F')
	})
}

func isDigits(s string) bool {
	return s != "" && !slices.ContainsFunc([]byte(s), func(c byte) bool { return c < '0' || c > '9' })
}

// appendJSON appends v (a string, map[string]any or []any as parseXML makes them) as JSON,
// byte for byte as encoding/json would (sorted keys, HTML-safe escapes), without reflection.
func appendJSON(b []byte, v any) []byte {
	switch v := v.(type) {
	case string:
		return appendJSONString(b, v)
	case map[string]any:
		keys := make([]string, 0, len(v))
		for k := range v {
			keys = append(keys, k)
		}
		slices.Sort(keys)
		b = append(b, '{')
		for i, k := range keys {
			if i > 0 {
				b = append(b, ',')
			}
			b = appendJSONString(b, k)
			b = append(b, ':')
			b = appendJSON(b, v[k])
		}
		return append(b, '}')
	case []any:
		b = append(b, '[')
		for i, e := range v {
			if i > 0 {
				b = append(b, ',')
			}
			b = appendJSON(b, e)
		}
		return append(b, ']')
	}
	return append(b, "null"...)
}

const hexDigits = "0123456789abcdef"

// appendJSONString is encoding/json's string encoding with HTML escaping.
func appendJSONString(b []byte, s string) []byte {
	b = append(b, '"')
	start := 0
	for i := 0; i < len(s); {
		c := s[i]
		if c < utf8.RuneSelf {
			if c >= 0x20 && c != '"' && c != '\\' && c != '<' && c != '>' && c != '&' {
				i++
				continue
			}
			b = append(b, s[start:i]...)
			switch c {
			case '\\', '"':
				b = append(b, '\\', c)
			case '\b':
				b = append(b, '\\', 'b')
			case '\f':
				b = append(b, '\\', 'f')
			case '\n':
				b = append(b, '\\', 'n')
			case '\r':
				b = append(b, '\\', 'r')
			case '\t':
				b = append(b, '\\', 't')
			default:
				b = append(b, '\\', 'u', '0', '0', hexDigits[c>>4], hexDigits[c&0xF])
			}
			i++
			start = i
			continue
		}
		r, n := utf8.DecodeRuneInString(s[i:])
		if r == utf8.RuneError && n == 1 {
			b = append(b, s[start:i]...)
			b = append(b, `\ufffd`...)
			i += n
			start = i
			continue
		}
		if r == '\u2028' || r == '\u2029' {
			b = append(b, s[start:i]...)
			b = append(b, '\\', 'u', '2', '0', '2', hexDigits[r&0xF])
			i += n
			start = i
			continue
		}
		i += n
	}
	b = append(b, s[start:]...)
	return append(b, '"')
}

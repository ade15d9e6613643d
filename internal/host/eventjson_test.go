package host

import (
	"bytes"
	"encoding/json"
	"reflect"
	"testing"
	"time"

	"github.com/seed-a64d9e1f/chatwire/adapter"
)

// checkEventJSON asserts jsonEvent(e) is what encoding/json.Marshal makes of e, byte for
// byte, or fails where it fails; and reports whether appendEvent wrote it itself.
func checkEventJSON(t *testing.T, e adapter.Event) (fast bool) {
	t.Helper()
	want, wantErr := json.Marshal(e)
	got, err := jsonEvent(e)
	if (err != nil) != (wantErr != nil) {
		t.Fatalf("jsonEvent error = %v; json.Marshal's = %v (event %+v)", err, wantErr, e)
	}
	if !bytes.Equal(got, want) {
		t.Fatalf("jsonEvent =\n%s\njson.Marshal =\n%s", got, want)
	}
	_, fast = appendEvent(nil, &e)
	return fast
}

// TestJSONEventIsEncodingJSON pins the event JSON the log stores and clients read: the
// hand-written encoder writes exactly what encoding/json wrote before it, for the escapes
// and edge cases of every field; what it cannot vouch for goes to encoding/json.
func TestJSONEventIsEncodingJSON(t *testing.T) {
	wecom, _ := wecomEvent(t)
	if !checkEventJSON(t, wecom) {
		t.Error("a WeCom text event went to json.Marshal; want the fast path")
	}
	at := time.Date(2026, 12, 4, 23, 11, 24, 123456789, time.FixedZone("CST", 8*3600))
	base := adapter.Event{ID: "wecom:1", Bot: "hr", Platform: "wecom", Kind: adapter.EventMessage,
		Chat: adapter.Chat{ID: "alice", Type: adapter.ChatDirect}, Sender: adapter.Sender{ID: "alice", Name: "Alice"},
		Text: "hi", Time: at, Raw: json.RawMessage(`{"MsgType":"text","n":-1.5e+3,"a":[true,false,null,{}],"e":[]}`)}
	strs := []string{"", "plain", `quote " backslash \ slash /`, "<script>&amp;</script>", "ctl \x00\x01\x1f\x7f \b\f\n\r\t",
		"中文 “quoted” — dash", "bad utf8 \xff\xfe \xe4\xb8", "sep \u2028 \u2029 end", "emoji 😀", "\xed\xa0\x80 surrogate"}
	for _, s := range strs {
		e := base
		e.ID, e.Bot, e.Platform, e.Kind, e.Chat.ID, e.Chat.Type, e.Sender.ID, e.Sender.Name, e.Text = s, s, s, s, s, s, s, s, s
		if !checkEventJSON(t, e) {
			t.Errorf("text %q went to json.Marshal; want the fast path", s)
		}
	}
	times := []time.Time{{}, at, at.UTC(), time.Unix(0, 1), time.Date(10000, 1, 1, 0, 0, 0, 0, time.UTC),
		time.Date(-1, 1, 1, 0, 0, 0, 0, time.UTC), at.In(time.FixedZone("odd", -(23*3600 + 59*60)))}
	for _, tm := range times {
		e := base
		e.Time = tm
		checkEventJSON(t, e)
	}
	raws := []struct {
		raw  string
		fast bool
	}{
		{`{}`, true}, {`[]`, true}, {`"s"`, true}, {`0`, true}, {`-0.5E-7`, true}, {`null`, true},
		{`{"a":"\u003c\"\\\/\b\f\n\r\t\uABCD","中":"文 “x”"}`, true},
		{`{"a":"<b>"}`, false}, {`{"a":"x&y"}`, false}, {"{\"a\":\"\u2028\"}", false}, // escaped by json.Marshal
		{`{ "a" : 1 }`, false}, {" {}", false}, {"{}\n", false}, {"[1,\n2]", false}, // compacted by json.Marshal
		{"\"\xff\"", true}, // copied as it is by json.Marshal
		{`{"a":1,}`, false}, {`[1,]`, false}, {`{"a"}`, false}, {`01`, false}, {`1.`, false}, {`.5`, false},
		{`1e`, false}, {`-`, false}, {`tru`, false}, {`nul`, false}, {`"\x"`, false}, {`"\u12"`, false},
		{"\"a\x01\"", false}, {`"open`, false}, {`{}{}`, false}, {`[`, false}, {`{"a":[}`, false}, {`}`, false},
	}
	for _, r := range raws {
		e := base
		e.Raw = json.RawMessage(r.raw)
		if fast := checkEventJSON(t, e); fast != r.fast {
			t.Errorf("raw %q: fast path %v; want %v", r.raw, fast, r.fast)
		}
	}
	e := base
	e.Raw = nil
	checkEventJSON(t, e)
	e.Raw = json.RawMessage{}
	checkEventJSON(t, e)
	e.Attachments = []adapter.Attachment{{}, {Type: "image", Name: "a<b>.png", ContentType: "image/png", Size: 3, ID: "m1",
		URL: "https://x/y?a=1&b=2", Title: "t", Description: "d\n", Data: []byte{0, 1, 2, 250}, Body: bytes.NewReader(nil)},
		{Size: -1}, {Data: []byte{}}}
	checkEventJSON(t, e)
	e.Attachments = []adapter.Attachment{}
	checkEventJSON(t, e)
}

// FuzzJSONEvent: for any strings and raw payload, jsonEvent is json.Marshal's output.
func FuzzJSONEvent(f *testing.F) {
	f.Add("wecom:1", "你好\n<b>", []byte(`{"MsgType":"text","Content":"\u003c"}`), int64(1700000000), []byte("img"))
	f.Add("\xff", "\u2028", []byte(` [1, "a" ,{"b":null}] `), int64(-62135596801), []byte(nil))
	f.Add("", "", []byte(`{"a":"\u00"}`), int64(0), []byte{})
	f.Fuzz(func(t *testing.T, id, text string, raw []byte, unix int64, data []byte) {
		e := adapter.Event{ID: id, Bot: text, Kind: id, Chat: adapter.Chat{ID: text}, Sender: adapter.Sender{Name: id},
			Text: text, Time: time.Unix(unix, unix%1e9).UTC(), Raw: raw}
		if len(data) > 0 {
			e.Attachments = []adapter.Attachment{{Name: text, Size: unix, Data: data}}
		}
		checkEventJSON(t, e)
	})
}

// TestJSONEventCoversEveryField guards the hand-written encoder against drift: every exported
// field of adapter.Event and the types inside it (Chat, Sender, Attachment, …) is set to a
// value JSON writes, by reflection, and the fast path must write exactly what json.Marshal
// does. A field added to the event later and not to appendEvent fails here, instead of being
// dropped from every event clients receive.
func TestJSONEventCoversEveryField(t *testing.T) {
	var e adapter.Event
	fill(t, reflect.ValueOf(&e).Elem(), "Event")
	if !checkEventJSON(t, e) {
		t.Fatalf("a fully set event went to json.Marshal; want the fast path (event %+v)", e)
	}
}

// fill sets every exported field of v (a struct) to a non-zero value, recursively; a field
// JSON does not write (json:"-") is left alone.
func fill(t *testing.T, v reflect.Value, path string) {
	t.Helper()
	typ := v.Type()
	for i := range typ.NumField() {
		f := typ.Field(i)
		if !f.IsExported() || f.Tag.Get("json") == "-" {
			continue
		}
		fv, at := v.Field(i), path+"."+f.Name
		switch {
		case f.Type == reflect.TypeOf(time.Time{}):
			fv.Set(reflect.ValueOf(time.Date(2026, 12, 5, 1, 2, 3, 4, time.UTC)))
		case f.Type == reflect.TypeOf(json.RawMessage(nil)):
			fv.Set(reflect.ValueOf(json.RawMessage(`{"k":[1,"v"]}`)))
		case f.Type.Kind() == reflect.String:
			fv.SetString(f.Name + " <&>")
		case f.Type.Kind() == reflect.Bool:
			fv.SetBool(true)
		case f.Type.Kind() >= reflect.Int && f.Type.Kind() <= reflect.Int64:
			fv.SetInt(7)
		case f.Type.Kind() >= reflect.Uint && f.Type.Kind() <= reflect.Uint64:
			fv.SetUint(7)
		case f.Type.Kind() == reflect.Float64 || f.Type.Kind() == reflect.Float32:
			fv.SetFloat(1.5)
		case f.Type.Kind() == reflect.Slice && f.Type.Elem().Kind() == reflect.Uint8:
			fv.SetBytes([]byte{1, 2, 3})
		case f.Type.Kind() == reflect.Slice && f.Type.Elem().Kind() == reflect.Struct:
			s := reflect.MakeSlice(f.Type, 1, 1)
			fill(t, s.Index(0), at+"[0]")
			fv.Set(s)
		case f.Type.Kind() == reflect.Slice && f.Type.Elem().Kind() == reflect.String:
			fv.Set(reflect.ValueOf([]string{"a", "b"}).Convert(f.Type))
		case f.Type.Kind() == reflect.Struct:
			fill(t, fv, at)
		case f.Type.Kind() == reflect.Interface:
			// an io.Reader such as Attachment.Body: never serialized (json:"-" is checked above)
			t.Fatalf("%s: interface field %s without json:\"-\"; teach fill (and appendEvent) about it", at, f.Type)
		default:
			t.Fatalf("%s: field of kind %s; teach fill (and appendEvent) about it", at, f.Type.Kind())
		}
	}
}

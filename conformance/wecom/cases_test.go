package wecom_test

import (
	"encoding/xml"
	"fmt"
	"strconv"
	"strings"
	"testing"
)

// The plaintext callbacks of the conformance suite, written here from the shapes in
// ../../shared/specs/wecom.md §5.4 (developer.work.weixin.qq.com docs 90239/96467 "消息格式",
// 90240/90376 "事件格式", 90930 "接收消息与事件") — not produced by chatwire or wecomtest, so
// that neither can agree with itself.

const (
	caseCorp  = "ww5823bf96d3bd56c7"
	caseAgent = 1000002
	caseTime  = 1738984503
)

// cdata writes s as a CDATA section, splitting any "]]>" across two sections as WeCom's own
// libraries and every XML writer must ("]]" ends one section, ">" starts the next).
func cdata(s string) string {
	return "<![CDATA[" + strings.ReplaceAll(s, "]]>", "]]]]><![CDATA[>") + "]]>"
}

// el is <name>inner</name>.
func el(name, inner string) string { return "<" + name + ">" + inner + "</" + name + ">" }

// msg is a message from user of type typ with the standard header, then fields, then AgentID.
func msg(from, typ string, fields ...string) string {
	return "<xml>" + el("ToUserName", cdata(caseCorp)) + el("FromUserName", cdata(from)) +
		el("CreateTime", strconv.Itoa(caseTime)) + el("MsgType", cdata(typ)) + strings.Join(fields, "") +
		el("AgentID", strconv.Itoa(caseAgent)) + "</xml>"
}

// event is an event (MsgType event, no MsgId) named ev with fields.
func event(from, ev string, fields ...string) string {
	return msg(from, "event", append([]string{el("Event", cdata(ev))}, fields...)...)
}

func text(content string, msgID string) string {
	return msg("zhangsan", "text", el("Content", cdata(content)), el("MsgId", msgID))
}

// exactly returns a string of exactly n bytes of mixed Chinese, emoji and ASCII.
func exactly(n int) string {
	var b strings.Builder
	parts := []string{"企业微信", "😀", "abc", "<&>", "]]>", " "}
	for i := 0; ; i++ {
		p := parts[i%len(parts)]
		if b.Len()+len(p) > n {
			break
		}
		b.WriteString(p)
	}
	b.WriteString(strings.Repeat("x", n-b.Len()))
	return b.String()
}

type msgCase struct {
	name  string
	plain string
}

// callbackCases returns every message and event type of spec §5.4 plus the text edge
// cases: Chinese, emoji, exactly 2048 bytes, 16 KiB, XML specials (in CDATA and as
// entities), "]]>" split across CDATA sections, CRLF, MsgIds above 2^53, a plaintext that
// needs a whole block of padding.
func callbackCases(t *testing.T) []msgCase {
	cs := []msgCase{
		{"text", text("this is a test", "1234567890123456")},
		{"text/chinese", text("你好，世界！这是一条企业微信回调消息。", "7468881572160813124")},
		{"text/emoji", text("👍🏽 family 👨‍👩‍👧‍👦 flag 🇨🇳 ✅", "7468881572160813125")},
		{"text/2048-bytes", text(exactly(2048), "7468881572160813126")},
		{"text/16KiB", text(exactly(16<<10), "7468881572160813127")},
		{"text/xml-specials-in-cdata", text(`<b>bold</b> & "quotes" 'apos' </xml> <![CDATA[ &amp; &#20320;`, "7468881572160813128")},
		{"text/xml-specials-as-entities", msg("zhangsan", "text",
			el("Content", `&lt;a href=&quot;https://x.test/?a=1&amp;b=2&quot;&gt;link&lt;/a&gt; &apos;&#20320;&#x597D;&#128512;`),
			el("MsgId", "7468881572160813129"))},
		{"text/cdata-end-split", text("a]]>b ]]>]]> c]]", "7468881572160813130")},
		{"text/cdata-sections-mixed", msg("zhangsan", "text",
			el("Content", "<![CDATA[part one]]>&amp;<![CDATA[ part ]]]]><![CDATA[> two]]>"), el("MsgId", "7468881572160813131"))},
		{"text/crlf", text("line one\r\nline two\rline three\n\r\nend", "7468881572160813132")},
		{"text/msgid-2^53+1", text("precision", "9007199254740993")},
		{"text/msgid-max-int64", text("precision", "9223372036854775807")},
		{"image", msg("lisi", "image", el("PicUrl", cdata("https://wework.qpic.cn/wwpic/123456_abcdef/0")),
			el("MediaId", cdata("1G6nrLmr5EC3MMb_-zK1dDdzmd0p7cNliYu9V5w7o8K0")), el("MsgId", "7468881572160813140"))},
		{"voice", msg("lisi", "voice", el("MediaId", cdata("2-G6nrLmr5EC3MMb_-zK1dDdzmd0p7cNliYu9V5w7o8K0")),
			el("Format", cdata("amr")), el("MsgId", "7468881572160813141"))},
		{"video", msg("lisi", "video", el("MediaId", cdata("3-G6nrLmr5EC3MMb_-zK1dDdzmd0p7cNliYu9V5w7o8K0")),
			el("ThumbMediaId", cdata("4-thumb")), el("MsgId", "7468881572160813142"))},
		{"location", msg("lisi", "location", el("Location_X", "23.134521"), el("Location_Y", "113.358803"),
			el("Scale", "20"), el("Label", cdata("广州市海珠区新港中路397号")), el("MsgId", "7468881572160813143"))},
		{"link", msg("lisi", "link", el("Title", cdata("企业微信 & <WeCom>")), el("Description", cdata("官方文档")),
			el("Url", cdata("https://work.weixin.qq.com/?a=1&b=2")), el("PicUrl", cdata("https://wework.qpic.cn/p.png")),
			el("MsgId", "7468881572160813144"))},
		{"event/subscribe", event("wangwu", "subscribe")},
		{"event/unsubscribe", event("wangwu", "unsubscribe")},
		{"event/enter_agent", event("wangwu", "enter_agent", el("EventKey", cdata("")))},
		{"event/LOCATION", event("wangwu", "LOCATION", el("Latitude", "23.104105"), el("Longitude", "113.320107"),
			el("Precision", "65.000000"), el("AppType", cdata("wxwork")))},
		{"event/click", event("wangwu", "click", el("EventKey", cdata("menu_1]]>x")))},
		{"event/view", event("wangwu", "view", el("EventKey", cdata("https://example.test/?a=1&b=2")))},
		{"event/scancode_push", event("wangwu", "scancode_push", el("EventKey", cdata("scan")),
			el("ScanCodeInfo", el("ScanType", cdata("qrcode"))+el("ScanResult", cdata("1 & <2>"))))},
		{"event/scancode_waitmsg", event("wangwu", "scancode_waitmsg", el("EventKey", cdata("scan2")),
			el("ScanCodeInfo", el("ScanType", cdata("barcode"))+el("ScanResult", cdata("6901234567892"))))},
		{"event/pic_sysphoto", event("wangwu", "pic_sysphoto", el("EventKey", cdata("photo")),
			el("SendPicsInfo", el("Count", "2")+el("PicList",
				el("item", el("PicMd5Sum", cdata("1b5f7c23b5bf75682a53e7b6d163e185")))+
					el("item", el("PicMd5Sum", cdata("2b5f7c23b5bf75682a53e7b6d163e185"))))))},
		{"event/pic_photo_or_album", event("wangwu", "pic_photo_or_album", el("EventKey", cdata("album")),
			el("SendPicsInfo", el("Count", "1")+el("PicList", el("item", el("PicMd5Sum", cdata("5a75aaca956d97be686719218f275c6b"))))))},
		{"event/pic_weixin", event("wangwu", "pic_weixin", el("EventKey", cdata("wx")),
			el("SendPicsInfo", el("Count", "1")+el("PicList", el("item", el("PicMd5Sum", cdata("5a75aaca956d97be686719218f275c6c"))))))},
		{"event/location_select", event("wangwu", "location_select", el("EventKey", cdata("loc")),
			el("SendLocationInfo", el("Location_X", cdata("23"))+el("Location_Y", cdata("113"))+el("Scale", cdata("15"))+
				el("Label", cdata(" 广州市海珠区客村艺苑路 106号"))+el("Poiname", cdata(""))), el("AppType", cdata("wxwork")))},
		{"event/template_card_event", event("wangwu", "template_card_event", el("EventKey", cdata("key111")),
			el("TaskId", cdata("taskid111")), el("CardType", cdata("vote_interaction")), el("ResponseCode", cdata("ResponseCode")),
			el("SelectedItems", el("SelectedItem", el("QuestionKey", cdata("QuestionKey1"))+
				el("OptionIds", el("OptionId", cdata("OptionId1"))+el("OptionId", cdata("OptionId2"))))))},
		{"event/template_card_menu_event", event("wangwu", "template_card_menu_event", el("EventKey", cdata("menu")),
			el("TaskId", cdata("taskid112")), el("CardType", cdata("text_notice")), el("ResponseCode", cdata("rc")))},
		{"event/change_contact/create_user", event("sys", "change_contact", el("ChangeType", cdata("create_user")),
			el("UserID", cdata("zhangsan")), el("Name", cdata("张三")), el("Department", cdata("1,2,3")),
			el("MainDepartment", "1"), el("IsLeaderInDept", cdata("1,0,0")), el("Position", cdata("产品经理")),
			el("Mobile", "13800000000"), el("Gender", "1"), el("Email", cdata("zhangsan@gzdev.com")), el("Status", "1"),
			el("ExtAttr", el("Item", el("Name", cdata("爱好"))+el("Type", "0")+el("Text", el("Value", cdata("旅游"))))))},
		{"event/change_contact/update_user", event("sys", "change_contact", el("ChangeType", cdata("update_user")),
			el("UserID", cdata("lisi")), el("NewUserID", cdata("lisi2")), el("Name", cdata("李四")))},
		{"event/change_contact/delete_party", event("sys", "change_contact", el("ChangeType", cdata("delete_party")), el("Id", "2"))},
		{"event/batch_job_result", event("sys", "batch_job_result",
			el("BatchJob", el("JobId", cdata("S0MrnndvRG5fadSlLwiBqiDDbM143UqTmKP3152FZk4"))+el("JobType", cdata("sync_user"))+
				el("ErrCode", "0")+el("ErrMsg", cdata("ok"))))},
		{"event/open_approval_change", event("sys", "open_approval_change", el("EventKey", cdata("open_template_id")),
			el("ApprovalInfo", el("ThirdNo", cdata("201806010001"))+el("OpenSpName", cdata("付款"))+el("OpenSpStatus", "1")+
				el("ApplyTime", "1527837645")+el("ApplyUserName", cdata("xiaoming"))+el("ApplyUserId", cdata("1"))))},
		{"event/taskcard_click", event("wangwu", "taskcard_click", el("EventKey", cdata("key111")), el("TaskId", cdata("taskid111")))},
		{"event/kf_msg_or_event", "<xml>" + el("ToUserName", cdata(caseCorp)) + el("CreateTime", strconv.Itoa(caseTime)) +
			el("MsgType", cdata("event")) + el("Event", cdata("kf_msg_or_event")) + el("Token", cdata("ENCApHxnGDNAVNY4AaSJKj4Tb5mwsEMzxhFmHVGcra996NR")) +
			el("OpenKfId", cdata("wkxxxxxxx")) + "</xml>"},
		{"event/change_external_contact", event("sys", "change_external_contact", el("ChangeType", cdata("add_external_contact")),
			el("UserID", cdata("zhangsan")), el("ExternalUserID", cdata("woAJ2GCAAAXtWyujaWJHDDGi0mACAAAA")), el("State", cdata("teststate")),
			el("WelcomeCode", cdata("WELCOMECODE")))},
	}
	// A plaintext whose random|len|msg|receiveid is a multiple of 32 bytes: PKCS#7 adds a
	// whole block of 32 × 0x20.
	for n := 0; n < 32; n++ {
		p := text(strings.Repeat("p", n), "7468881572160813199")
		if (20+len(p)+len(caseCorp))%32 == 0 {
			cs = append(cs, msgCase{"text/full-padding-block", p})
			break
		}
	}
	for _, c := range cs {
		if _, err := oracleParse([]byte(c.plain)); err != nil {
			t.Fatalf("fixture %s is not XML: %v", c.name, err)
		}
	}
	if m, _ := oracleParse([]byte(text(exactly(2048), "1"))); len(m["Content"].(string)) != 2048 {
		t.Fatalf("2048-byte case has %d bytes of content", len(m["Content"].(string)))
	}
	return cs
}

// xnode is an element as encoding/xml reads it.
type xnode struct {
	XMLName xml.Name
	Text    string  `xml:",chardata"`
	Kids    []xnode `xml:",any"`
}

func (n xnode) value() any {
	if len(n.Kids) == 0 {
		return n.Text
	}
	m := map[string]any{}
	for _, k := range n.Kids {
		v := k.value()
		switch old := m[k.XMLName.Local].(type) {
		case nil:
			m[k.XMLName.Local] = v
		case []any:
			m[k.XMLName.Local] = append(old, v)
		default:
			m[k.XMLName.Local] = []any{old, v}
		}
	}
	return m
}

// oracleParse reads a plaintext message with encoding/xml (strict) into the shape
// chatwire's Event.Raw documents: the children of the root, a leaf as its text, a nested
// element as an object, repeated names as an array.
func oracleParse(plain []byte) (map[string]any, error) {
	var root xnode
	if err := xml.Unmarshal(plain, &root); err != nil {
		return nil, err
	}
	m, ok := root.value().(map[string]any)
	if !ok {
		return nil, fmt.Errorf("root element %s has no children", root.XMLName.Local)
	}
	return m, nil
}

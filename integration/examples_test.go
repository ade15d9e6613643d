package integration

import (
	"bytes"
	"context"
	"fmt"
	"net/http"
	"net/http/httptest"
	"os"
	"os/exec"
	"slices"
	"testing"
	"time"

	"github.com/seed-a64d9e1f/chatwire/adapter/wecom/wecomtest"
)

// TestPythonEchoBot runs examples/python-bot/echo_bot.py (standard library only) against a real
// host: it reads events over SSE and answers through the HTTP API. Stopped after two echoes,
// it misses nothing sent while it was away: started again, it gets exactly the rest.
func TestPythonEchoBot(t *testing.T) {
	python, err := exec.LookPath("python3")
	if err != nil {
		t.Fatalf("python3 is needed to test examples/python-bot: %v", err)
	}
	emu := &wecomtest.Server{LenientAgentID: true, MemberLimit: -1}
	emu.AddApp(corpID, corpSecret, agentID)
	api := httptest.NewServer(emu)
	defer api.Close()
	h := startHost(t, "host", singleHostConfig(api.URL, t.TempDir()), secretEnv()...)
	cb := wecomtest.Callback{Token: cbToken, EncodingAESKey: aesKey, CorpID: corpID, AgentID: agentID}

	push := func(i int) {
		t.Helper()
		msg := fmt.Appendf(nil, `<xml><ToUserName><![CDATA[%s]]></ToUserName><FromUserName><![CDATA[user%d]]></FromUserName>`+
			`<CreateTime>%d</CreateTime><MsgType><![CDATA[text]]></MsgType><Content><![CDATA[question %d]]></Content>`+
			`<MsgId>%d</MsgId><AgentID>%d</AgentID></xml>`, corpID, i, time.Now().Unix(), i, 8000000000000000+i, agentID)
		body, query, err := wecomtest.Encrypt(cb, msg, time.Now().Unix(), fmt.Sprintf("py%d", i))
		if err != nil {
			t.Fatal(err)
		}
		resp, err := http.Post("http://"+h.addr+"/webhook/hr?"+query.Encode(), "text/xml", bytes.NewReader(body))
		if err != nil {
			t.Fatal(err)
		}
		resp.Body.Close()
		if resp.StatusCode != 200 {
			t.Fatalf("callback %d: status %d", i, resp.StatusCode)
		}
	}
	runBot := func(echoes int) string {
		t.Helper()
		ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
		defer cancel()
		cmd := exec.CommandContext(ctx, python, "../examples/python-bot/echo_bot.py", "hr")
		cmd.Env = append(os.Environ(), "CHATWIRE_URL=http://"+h.addr, "CHATWIRE_API_KEY="+apiKey, fmt.Sprintf("ECHO_MAX=%d", echoes))
		out, err := cmd.CombinedOutput()
		if err != nil {
			t.Fatalf("echo_bot.py: %v\n%s", err, out)
		}
		return string(out)
	}
	echoed := func() []string {
		var got []string
		for _, s := range emu.Sent() {
			got = append(got, s.ToUser+": "+s.Content)
		}
		slices.Sort(got)
		return got
	}

	push(1)
	push(2)
	out := runBot(2)
	if want := []string{"user1: echo: question 1", "user2: echo: question 2"}; !slices.Equal(echoed(), want) {
		t.Fatalf("after the first run the emulator got %q; want %q\nbot output:\n%s", echoed(), want, out)
	}
	for i := 3; i <= 5; i++ { // while the bot is away
		push(i)
	}
	out = runBot(3)
	want := []string{"user1: echo: question 1", "user2: echo: question 2", "user3: echo: question 3",
		"user4: echo: question 4", "user5: echo: question 5"}
	if !slices.Equal(echoed(), want) {
		t.Fatalf("after the second run the emulator got %q; want %q\nbot output:\n%s", echoed(), want, out)
	}
	secretScan(t, "bot output and host log", []string{out, h.log.String()}, []string{corpSecret, cbToken, aesKey, apiKey})
}

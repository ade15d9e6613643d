package plugin

import (
	"encoding/json"
	"reflect"
	"strings"
	"testing"
)

func TestWeComConfigDecode(t *testing.T) {
	tests := []struct {
		name    string
		in      string
		want    WeComConfig
		wantErr string // substring; "" means no error
	}{
		{"all keys", `{"corp_id":"ww1","corp_secret":"s","agent_id":7,"token":"t","encoding_aes_key":"k","api_base":"http://x"}`,
			WeComConfig{CorpID: "ww1", CorpSecret: "s", AgentID: 7, Token: "t", EncodingAESKey: "k", APIBase: "http://x"}, ""},
		{"unknown key", `{"corp_id":"ww1","corp_secrt":"s"}`, WeComConfig{},
			`wecom config: unknown key "corp_secrt"; expected corp_id, corp_secret, agent_id, token, encoding_aes_key, api_base, duplicate_check`},
		{"two unknown keys", `{"corpid":"ww1","agentid":7}`, WeComConfig{}, `unknown keys "agentid", "corpid"; expected corp_id,`},
		{"key in another case", `{"Corp_ID":"ww1"}`, WeComConfig{}, `unknown key "Corp_ID"`},
		{"wrong type", `{"agent_id":"seven"}`, WeComConfig{}, "wecom config: json: cannot unmarshal"},
		{"not an object", `[1]`, WeComConfig{}, "wecom config: json: cannot unmarshal array"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			var got WeComConfig
			err := json.Unmarshal([]byte(tc.in), &got)
			if tc.wantErr == "" {
				if err != nil || got != tc.want {
					t.Errorf("Unmarshal(%s) = %+v, %v; want %+v", tc.in, got, err, tc.want)
				}
				return
			}
			if err == nil || !strings.Contains(err.Error(), tc.wantErr) {
				t.Errorf("Unmarshal(%s) error = %v; want one containing %q", tc.in, err, tc.wantErr)
			}
		})
	}
}

func TestGraphConfigDecode(t *testing.T) {
	var got GraphConfig
	in := `{"tenant_id":"t","client_id":"c","auth":"client_credentials","subscribe":["chats"],"poll_interval":"1m"}`
	if err := json.Unmarshal([]byte(in), &got); err != nil {
		t.Fatal(err)
	}
	want := GraphConfig{TenantID: "t", ClientID: "c", Auth: "client_credentials", Subscribe: []string{"chats"}, PollInterval: "1m"}
	if !reflect.DeepEqual(got, want) {
		t.Errorf("Unmarshal(%s) = %+v; want %+v", in, got, want)
	}
	err := json.Unmarshal([]byte(`{"tenant":"t"}`), &got)
	if err == nil || !strings.Contains(err.Error(), `graph config: unknown key "tenant"; expected tenant_id, client_id, client_secret, auth, user, notification_url, client_state, subscribe, login_base, graph_base, chats, poll_interval`) {
		t.Errorf("Unmarshal with key tenant: %v; want unknown key naming the expected ones", err)
	}
}

// TestBotConfigRoundTrip: WeComBot and GraphBot produce the JSON the typed configs decode.
func TestBotConfigRoundTrip(t *testing.T) {
	w := WeComConfig{CorpID: "ww1", CorpSecret: "s", AgentID: 7}
	bc := WeComBot("hr", w)
	var gotW WeComConfig
	if err := json.Unmarshal(bc.Config, &gotW); err != nil || gotW != w || bc.Name != "hr" || bc.Platform != "wecom" {
		t.Errorf("WeComBot round trip = %+v %+v, %v; want %+v", bc, gotW, err, w)
	}
	g := GraphConfig{TenantID: "t", ClientID: "c", Auth: "delegated", Chats: []string{"19:a"}}
	bc = GraphBot("teams", g)
	var gotG GraphConfig
	if err := json.Unmarshal(bc.Config, &gotG); err != nil || !reflect.DeepEqual(gotG, g) || bc.Platform != "graph" {
		t.Errorf("GraphBot round trip = %+v %+v, %v; want %+v", bc, gotG, err, g)
	}
}

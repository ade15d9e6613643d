package wecom_test

import (
	"errors"
	"strings"
	"testing"

	"github.com/seed-a64d9e1f/chatwire/adapter"
	"github.com/seed-a64d9e1f/chatwire/adapter/wecom"
	"github.com/seed-a64d9e1f/chatwire/adapter/wecom/wecomtest"
)

// TestAgent: Agent reads the configured app; an agent_id that is not the secret's app is an
// error carrying WeCom's code (301002) and a hint saying so.
func TestAgent(t *testing.T) {
	c, _ := setup(t, wecom.Options{})
	ag, err := c.Agent(t.Context())
	if err != nil || ag.ID != testAgent || ag.Closed {
		t.Errorf("Agent() = %+v, %v", ag, err)
	}

	srv := &wecomtest.Server{}
	srv.AddApp(testCorp, testSecret, testAgent)
	cfg := testConfig()
	cfg.AgentID = testAgent + 1
	wrong, err := wecom.New(cfg, wecom.Options{HTTPClient: srv.Client()})
	if err != nil {
		t.Fatal(err)
	}
	defer wrong.Close()
	_, err = wrong.Agent(t.Context())
	var ae *adapter.Error
	if !errors.As(err, &ae) || adapter.Code(err) != "301002" || !strings.Contains(err.Error(), "agent_id") {
		t.Errorf("Agent() with another app's agent_id = %v; want code 301002 and a hint naming agent_id", err)
	}
	if strings.Contains(err.Error(), testSecret) {
		t.Error("the error holds the secret")
	}
}

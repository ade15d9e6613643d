package wecom

import (
	"context"
	"net/http"
	"net/url"
	"strconv"
)

// EndpointAgentGet reads an app's settings.
const EndpointAgentGet = "agent/get"

// Agent is the app a Client sends as, as agent/get reports it.
type Agent struct {
	ID     int64
	Name   string
	Closed bool // the app is disabled in the admin console
}

// Agent reads the configured agent_id with agent/get. A corp may read only the app its
// token belongs to (doc 90227), so this proves that agent_id is the corp_secret's app:
// WeCom answers 301002 ("not allow operate another agent with this accesstoken") for
// another app's id and 40056 for a malformed one. gettoken alone never sees agent_id, so a
// wrong one otherwise shows only at the first send. The error is an *adapter.Error.
func (c *Client) Agent(ctx context.Context) (Agent, error) {
	var out struct {
		AgentID int64  `json:"agentid"`
		Name    string `json:"name"`
		Close   int    `json:"close"`
	}
	q := url.Values{"agentid": {strconv.FormatInt(c.cfg.AgentID, 10)}}
	if err := c.call(ctx, http.MethodGet, EndpointAgentGet, q, nil, &out); err != nil {
		return Agent{}, err
	}
	return Agent{ID: out.AgentID, Name: out.Name, Closed: out.Close != 0}, nil
}

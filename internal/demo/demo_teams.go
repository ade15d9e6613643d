package demo

import (
	"context"
	"fmt"
	"net/http/httptest"
	"net/url"
	"time"

	"github.com/seed-a64d9e1f/chatwire/adapter/teams/teamstest"
	"github.com/seed-a64d9e1f/chatwire/internal/platforms"
)

// demoTeams is the demo's emulated Microsoft Teams with one bot (Azure Bot Service, the Bot
// Connector) and a user who installed it.
type demoTeams struct {
	emu  *teamstest.Server
	srv  *httptest.Server
	conv teamstest.Conversation
	user teamstest.User
	cfg  *platforms.Teams
}

const demoTeamsApp, demoTeamsTenant = "00000000-0000-4000-8000-00000000d3e0", "demo-teams-tenant"

// newDemoTeams starts the emulator; tokens live lifetime.
func newDemoTeams(lifetime time.Duration) *demoTeams {
	d := &demoTeams{emu: &teamstest.Server{TokenLifetime: lifetime}}
	d.srv = httptest.NewServer(d.emu)
	d.emu.URL = d.srv.URL
	u, _ := url.Parse(d.srv.URL)
	d.cfg = &platforms.Teams{AppID: demoTeamsApp, AppPassword: randomText(32), TenantID: demoTeamsTenant,
		LoginBase: d.srv.URL, OpenIDMetadataURL: d.emu.MetadataURL(), ServiceHosts: []string{u.Host}}
	// The Azure Bot exists before the host starts (the host fetches its token at start); its
	// messaging endpoint is set by install, once the host listens.
	d.emu.AddBot(teamstest.Bot{AppID: demoTeamsApp, Password: d.cfg.AppPassword, TenantID: demoTeamsTenant, Name: "chatwire"})
	return d
}

// install points the Azure Bot's messaging endpoint at the host and installs the bot for Erin:
// Teams tells the bot, which learns the conversation.
func (d *demoTeams) install(ctx context.Context, endpoint string) error {
	d.emu.SetEndpoint(demoTeamsApp, endpoint)
	d.user = d.emu.NewUser("Erin", demoTeamsTenant)
	var err error
	d.conv, err = d.emu.InstallPersonal(ctx, demoTeamsApp, d.user)
	return err
}

// say delivers a signed message from Erin to the bot.
func (d *demoTeams) say(ctx context.Context, text string) error {
	dl, err := d.emu.Say(ctx, d.conv, d.user, text)
	if err != nil {
		return err
	}
	if st := dl.Final().Status; st != 200 {
		return fmt.Errorf("the host answered Teams %d", st)
	}
	return nil
}

// replies returns the bot's messages the connector accepted.
func (d *demoTeams) replies() []teamstest.Sent { return d.emu.Sent() }

// tokenFetches counts the connector tokens issued.
func (d *demoTeams) tokenFetches() int {
	n := 0
	for _, r := range d.emu.TokenRequests() {
		if r.Status == 200 {
			n++
		}
	}
	return n
}

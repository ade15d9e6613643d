package config

import (
	"fmt"
	"net/url"
	"os"
	"strings"

	"github.com/seed-a64d9e1f/chatwire/adapter/teams"
	"github.com/seed-a64d9e1f/chatwire/internal/platforms"
)

// teamsDefaults fills a Teams section's defaults (DESIGN "Turn 2": the public cloud).
func teamsDefaults(t *platforms.Teams) {
	if t == nil {
		return
	}
	if t.AppType == "" {
		t.AppType = teams.AppSingleTenant
	}
	if t.LoginBase == "" {
		t.LoginBase = teams.DefaultLoginBase
	}
	if t.OpenIDMetadataURL == "" {
		t.OpenIDMetadataURL = teams.DefaultMetadataURL
	}
	if t.ChannelIssuer == "" {
		t.ChannelIssuer = teams.DefaultIssuer
	}
}

// validateTeamsBot checks a bot of platform teams.
func (c *Config) validateTeamsBot(at string, b BotConfig, p func(string, string, ...any)) {
	if b.WeCom != nil {
		p(at+".wecom", "not allowed on a teams bot")
	}
	if b.Graph != nil {
		p(at+".graph", "not allowed on a teams bot")
	}
	t := b.Teams
	if t == nil {
		p(at+".teams", "required for platform teams")
		return
	}
	at += ".teams"
	if t.AppID == "" {
		p(at+".app_id", "required: the Azure Bot's Microsoft App ID")
	}
	switch t.AppType {
	case teams.AppSingleTenant, teams.AppUserAssignedMSI:
		if t.TenantID == "" {
			p(at+".tenant_id", "required for app_type %s: the Azure Bot's App Tenant ID", t.AppType)
		}
	case teams.AppMultiTenant:
	default:
		p(at+".app_type", "%s: want %s, %s or %s", c.show(at+".app_type", t.AppType), teams.AppSingleTenant, teams.AppMultiTenant, teams.AppUserAssignedMSI)
	}
	switch {
	case t.AppType == teams.AppUserAssignedMSI && t.AppPassword != "":
		p(at+".app_password", "not with app_type %s: a managed identity has no password", teams.AppUserAssignedMSI)
	case t.AppType != teams.AppUserAssignedMSI && t.AppPassword == "":
		p(at+".app_password", "required: the client secret's Value of the Azure Bot's app registration (or app_type %s)", teams.AppUserAssignedMSI)
	}
	c.checkBase(at+".login_base", t.LoginBase, p)
	c.checkBase(at+".openid_metadata_url", t.OpenIDMetadataURL, p)
	c.checkBase(at+".channel_issuer", t.ChannelIssuer, p)
	c.checkBase(at+".default_service_url", t.DefaultServiceURL, p)
	for i, h := range t.ServiceHosts {
		hp := fmt.Sprintf("%s.service_hosts[%d]", at, i)
		if h == "" || strings.ContainsAny(h, "/ ") {
			p(hp, "want a host name, *.suffix or host:port, got %s", c.show(hp, h))
		}
	}
	if t.DefaultServiceURL != "" && len(t.ServiceHosts) == 0 {
		if u, err := url.Parse(t.DefaultServiceURL); err == nil && !teamsHost(u.Hostname()) {
			p(at+".default_service_url", "%s is not a Teams connector host: add it to service_hosts to send the bot token there", c.show(at+".default_service_url", t.DefaultServiceURL))
		}
	}
}

// teamsHost reports whether host is one of Teams' own connector hosts.
func teamsHost(host string) bool {
	for _, h := range teams.DefaultServiceHosts {
		if h == host || strings.HasPrefix(h, "*.") && strings.HasSuffix(host, h[1:]) {
			return true
		}
	}
	return false
}

// pluginSection is the bot's platform section as sent to the plugin. A managed identity
// Teams bot gets the identity endpoint of the host's environment (App Service's
// IDENTITY_ENDPOINT and IDENTITY_HEADER), which the plugin does not see.
func (b BotConfig) PluginSection() any {
	switch {
	case b.Graph != nil:
		return b.Graph
	case b.Teams != nil:
		t := *b.Teams
		if t.AppType == teams.AppUserAssignedMSI {
			t.MSIEndpoint, t.MSIHeader = os.Getenv("IDENTITY_ENDPOINT"), os.Getenv("IDENTITY_HEADER")
		}
		return &t
	case b.WeComAIBot != nil:
		return b.WeComAIBot
	case b.WeComRobot != nil:
		return b.WeComRobot
	}
	return b.WeCom
}

package main

import (
	"crypto/rand"
	"encoding/base64"
	"encoding/hex"
	"fmt"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"time"

	"github.com/seed-a64d9e1f/chatwire/adapter/wecom/wecomtest"
)

// Targets.
const (
	targetChatwire = "chatwire"
	targetBaseline = "baseline"
)

// secrets of one run, random so nothing real is ever used.
type secrets struct {
	corpID, corpSecret, token, aesKey, apiKey string
	agentID                                   int64
}

func newSecrets() secrets {
	r := func(n int) string { b := make([]byte, n); rand.Read(b); return hex.EncodeToString(b) }
	k := make([]byte, 32)
	rand.Read(k)
	return secrets{corpID: "wwbench" + r(5), corpSecret: "sec-" + r(12), token: "tok" + r(8),
		aesKey: strings.TrimSuffix(base64.StdEncoding.EncodeToString(k), "="), apiKey: "key-" + r(12), agentID: 1000002}
}

func (s secrets) callback() wecomtest.Callback {
	return wecomtest.Callback{Token: s.token, EncodingAESKey: s.aesKey, CorpID: s.corpID, AgentID: s.agentID}
}

// emulator is wecomtest served on a loopback port in this process (its CPU is the load
// generator's, the same for both targets).
type emulator struct {
	*wecomtest.Server
	url string
	srv *http.Server
}

func startEmulator() (*emulator, error) {
	emu := &wecomtest.Server{LenientAgentID: true}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return nil, err
	}
	srv := &http.Server{Handler: emu}
	go srv.Serve(ln)
	return &emulator{Server: emu, url: "http://" + ln.Addr().String(), srv: srv}, nil
}

// running is a started target: its HTTP address and the processes whose CPU and memory
// are measured.
type running struct {
	name   string
	addr   string
	apiKey string
	main   *proc // the host or the baseline; nil for a target the caller runs itself
	redis  *proc
	raddr  string     // the Redis's address, for its command stats
	procs  []namedPID // measured: "host", "plugin", "redis" or "server", "redis"
}

func (r *running) pids() []namedPID { return r.procs }

type namedPID struct {
	name string
	pid  int
}

func (r *running) stop() {
	if r.main != nil {
		r.main.stop()
	}
	if r.redis != nil {
		r.redis.stop()
	}
}

// env is what starting a target needs.
type env struct {
	dir         string // logs, configs, profiles
	hostBin     string
	baselineBin string
	redisBin    string
	emu         *emulator
	sec         secrets
}

// hostConfig is a host config with one WeCom bot "hr" on the emulator and a Redis store.
func hostConfig(listen, redisAddr, apiBase string, s secrets) string {
	return fmt.Sprintf(`server:
  listen: %q
  api_keys: ["${CHATWIRE_API_KEY}"]
store:
  redis_url: "redis://%s/0"
  key_prefix: bench
bots:
%s`, listen, redisAddr, wecomBot("hr", s.corpID, s.agentID, apiBase))
}

// wecomBot is one bot entry of a host config; secrets come from the environment.
func wecomBot(name, corpID string, agentID int64, apiBase string) string {
	return fmt.Sprintf(`  - name: %s
    platform: wecom
    wecom:
      corp_id: %s
      corp_secret: "${WECOM_SECRET}"
      agent_id: %d
      token: "${WECOM_TOKEN}"
      encoding_aes_key: "${WECOM_AES_KEY}"
      api_base: %q
`, name, corpID, agentID, apiBase)
}

func (e *env) hostEnv() []string {
	return []string{"CHATWIRE_API_KEY=" + e.sec.apiKey, "WECOM_SECRET=" + e.sec.corpSecret,
		"WECOM_TOKEN=" + e.sec.token, "WECOM_AES_KEY=" + e.sec.aesKey}
}

// start starts a fresh Redis and target; cpuprofile, if set, is the host's profile path
// (…/host-<rate>.pprof) and the plugin's is the same with plugin- for host-.
func (e *env) start(target, label, cpuprofile string) (*running, error) {
	rds, raddr, err := startRedis(e.redisBin, e.dir)
	if err != nil {
		return nil, err
	}
	addr, err := freeAddr()
	if err != nil {
		rds.stop()
		return nil, err
	}
	r := &running{name: target, addr: addr, apiKey: e.sec.apiKey, redis: rds, raddr: raddr}
	switch target {
	case targetChatwire:
		cfg := filepath.Join(e.dir, label+".yaml")
		if err := os.WriteFile(cfg, []byte(hostConfig(addr, raddr, e.emu.url, e.sec)), 0o600); err != nil {
			rds.stop()
			return nil, err
		}
		args := []string{"run", "--config", cfg, "--log-format", "json"}
		if cpuprofile != "" {
			args = append(args, "--cpuprofile", cpuprofile, "--plugin-cpuprofile", strings.Replace(cpuprofile, "host-", "plugin-", 1))
		}
		r.main, err = startProc("adapter-host", filepath.Join(e.dir, label+".log"), e.hostEnv(), e.hostBin, args...)
	case targetBaseline:
		r.main, err = startProc("baseline", filepath.Join(e.dir, label+".log"),
			[]string{"BASELINE_CORP_SECRET=" + e.sec.corpSecret, "BASELINE_TOKEN=" + e.sec.token,
				"BASELINE_AES_KEY=" + e.sec.aesKey, "BASELINE_API_KEY=" + e.sec.apiKey},
			e.baselineBin, "--listen", addr, "--redis", raddr, "--bot", "hr", "--corp-id", e.sec.corpID,
			"--agent-id", fmt.Sprint(e.sec.agentID), "--api-base", e.emu.url)
	default:
		err = fmt.Errorf("unknown target %q: want chatwire or baseline", target)
	}
	if err != nil {
		rds.stop()
		return nil, err
	}
	if err := waitHTTP(r.main, "http://"+addr+"/readyz", 60*time.Second); err != nil {
		r.stop()
		return nil, err
	}
	if target == targetChatwire {
		kids := children(r.main.pid())
		if len(kids) != 1 {
			r.stop()
			return nil, fmt.Errorf("adapter-host has %d child processes, want its one plugin", len(kids))
		}
		r.procs = []namedPID{{"host", r.main.pid()}, {"plugin", kids[0]}, {"redis", rds.pid()}}
	} else {
		r.procs = []namedPID{{"server", r.main.pid()}, {"redis", rds.pid()}}
	}
	return r, nil
}

package host

import (
	"crypto/rand"
	"crypto/sha256"
	"encoding/base64"
	"encoding/json"
	"net/http"
	"net/http/httptest"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/seed-a64d9e1f/chatwire/adapter"
	"github.com/seed-a64d9e1f/chatwire/adapter/wecom/wecomtest"
	"github.com/seed-a64d9e1f/chatwire/internal/config"
	"github.com/seed-a64d9e1f/chatwire/internal/redistest"
)

// tokenEntry is the Redis hash where redisstore keeps the test bot's WeCom token (default
// key prefix "chatwire" + ":tok:", key "wecom/<corp>/<agent>" in a hash tag).
const tokenEntry = "chatwire:tok:{wecom/wwtest0000000001/1000002}"

// tokenRecorder serves emu and remembers every access_token gettoken handed out.
type tokenRecorder struct {
	emu *wecomtest.Server
	mu  sync.Mutex
	got []string
}

func (r *tokenRecorder) ServeHTTP(w http.ResponseWriter, req *http.Request) {
	if !strings.HasSuffix(req.URL.Path, "/gettoken") {
		r.emu.ServeHTTP(w, req)
		return
	}
	rec := httptest.NewRecorder()
	r.emu.ServeHTTP(rec, req)
	var body struct {
		AccessToken string `json:"access_token"`
	}
	if json.Unmarshal(rec.Body.Bytes(), &body) == nil && body.AccessToken != "" {
		r.mu.Lock()
		r.got = append(r.got, body.AccessToken)
		r.mu.Unlock()
	}
	for k, v := range rec.Header() {
		w.Header()[k] = v
	}
	w.WriteHeader(rec.Code)
	w.Write(rec.Body.Bytes())
}

func (r *tokenRecorder) tokens() []string {
	r.mu.Lock()
	defer r.mu.Unlock()
	return append([]string(nil), r.got...)
}

func newStoreKey(t *testing.T) string {
	k := make([]byte, 32)
	rand.Read(k)
	return base64.StdEncoding.EncodeToString(k)
}

func sendOK(t *testing.T, e *env, text string) {
	t.Helper()
	if status, _, body := e.do("POST", "/v1/bots/hr/messages", testAPIKey, `{"to":{"user":"alice"},"text":"`+text+`"}`); status != 200 {
		t.Fatalf("send %q = %d %s", text, status, body)
	}
}

// waitMetric polls e's /metrics until one of its lines is line (the whole line: "x 1"
// is not held by "x 10").
func waitMetric(t *testing.T, e *env, line string) {
	t.Helper()
	deadline := time.Now().Add(5 * time.Second)
	for {
		_, _, body := e.do("GET", "/metrics", "", nil)
		if slices.Contains(strings.Split(string(body), "\n"), line) {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("/metrics never held %s:\n%s", line, body)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// TestStoreEncrypted runs hosts with store.encryption_key on one real redis-server: the token
// entry in Redis holds neither the token nor the corp secret, a second host with the same key
// shares the token (one gettoken for both), and a host with another key refreshes by itself
// (counted in chatwire_store_local_refreshes_total) without overwriting the sealed entry.
func TestStoreEncrypted(t *testing.T) {
	rs := redistest.Start(t)
	admin := redis.NewClient(&redis.Options{Addr: rs.Addr()})
	defer admin.Close()
	emu := newEmulator()
	rec := &tokenRecorder{emu: emu}
	ws := httptest.NewServer(rec)
	defer ws.Close()
	key := newStoreKey(t)
	store := &config.StoreConfig{RedisURL: "redis://" + rs.Addr() + "/0", EncryptionKey: key}
	rawKey, err := base64.StdEncoding.DecodeString(key)
	if err != nil {
		t.Fatal(err)
	}
	sum := sha256.Sum256(append([]byte("chatwire/redisstore key id\x00"), rawKey...))
	keyID := string(sum[:8])
	a := setup(t, setupOpts{store: store, emu: emu, apiBase: ws.URL})

	sendOK(t, a, "sealed")
	toks := rec.tokens()
	if len(toks) != 1 {
		t.Fatalf("gettoken answered %d tokens; want 1", len(toks))
	}
	h, err := admin.HGetAll(t.Context(), tokenEntry).Result()
	if err != nil || h["gen"] == "" || h["tok"] == "" {
		t.Fatalf("HGETALL %s = %d fields, %v; want the sealed entry (gen, tok)", tokenEntry, len(h), err)
	}
	for field, v := range h {
		for _, secret := range []string{toks[0], testSecret} {
			if strings.Contains(v, secret) {
				t.Errorf("field %s of the Redis entry holds a secret in the clear", field)
			}
		}
		// sealed: 'e', the key id (first 8 bytes of SHA-256 of the id label and the key), a
		// 12-byte nonce, then AES-GCM ciphertext and its 16-byte tag (see redisstore's codec)
		if field == "tok" && (len(v) < 1+8+12+16 || v[0] != 'e' || v[1:9] != keyID) {
			t.Errorf("field tok is not sealed with the configured key: format %q, %d bytes", v[:min(1, len(v))], len(v))
		}
	}
	sendOK(t, a, "still working") // the sealed entry is read back

	b := setup(t, setupOpts{store: store, emu: emu, apiBase: ws.URL})
	sendOK(t, b, "shared")
	if n := emu.TokenRequests(); n != 1 {
		t.Errorf("WeCom answered %d gettoken calls for two hosts with the same key; want 1", n)
	}
	waitMetric(t, b, "chatwire_store_local_refreshes_total 0")

	// A host with another key cannot read the entry: it fetches its own token and leaves the
	// sealed entry alone.
	other := &config.StoreConfig{RedisURL: store.RedisURL, EncryptionKey: newStoreKey(t)}
	c := setup(t, setupOpts{store: other, emu: emu, apiBase: ws.URL})
	sendOK(t, c, "other key")
	if n := emu.TokenRequests(); n != 2 {
		t.Errorf("WeCom answered %d gettoken calls after a host with another key sent; want 2", n)
	}
	waitMetric(t, c, "chatwire_store_local_refreshes_total 1")
	if h2, _ := admin.HGetAll(t.Context(), tokenEntry).Result(); h2["tok"] != h["tok"] || h2["gen"] != h["gen"] {
		t.Errorf("the host with another key replaced the sealed entry")
	}
	sendOK(t, b, "shared still")
	if n := emu.TokenRequests(); n != 2 {
		t.Errorf("%d gettoken calls after host B sent again; want 2 (B still shares A's token)", n)
	}
	for _, e := range []*env{a, b, c} {
		if logs := e.logs.String(); strings.Contains(logs, key) || strings.Contains(logs, other.EncryptionKey) || strings.Contains(logs, toks[0]) {
			t.Errorf("host log holds an encryption key or the token")
		}
	}
}

// TestStoreSentinel runs a host with store.redis naming a Sentinel and its master: tokens,
// the event stream, deduplication and the delivery lease all live on the master the Sentinel
// names, and the same callback twice makes one event, delivered once.
func TestStoreSentinel(t *testing.T) {
	master := redistest.Start(t)
	sentinel := redistest.StartSentinel(t, master)
	admin := redis.NewClient(&redis.Options{Addr: master.Addr()})
	defer admin.Close()
	var mu sync.Mutex
	var delivered []string
	recv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		var ev adapter.Event
		json.NewDecoder(r.Body).Decode(&ev)
		mu.Lock()
		delivered = append(delivered, ev.Text)
		mu.Unlock()
	}))
	defer recv.Close()
	e := setup(t, setupOpts{deliverURL: recv.URL,
		store: &config.StoreConfig{Redis: &config.RedisConfig{Addrs: []string{sentinel.Addr()}, MasterName: redistest.MasterName}, EncryptionKey: newStoreKey(t)}})
	sendOK(t, e, "via sentinel")
	if n, err := admin.Exists(t.Context(), tokenEntry).Result(); err != nil || n != 1 {
		t.Errorf("token entry on the master: %d, %v; want it stored through the Sentinel", n, err)
	}
	storeDedupOnce(t, e, admin)
	waitDelivered(t, e, &mu, &delivered, "once")
	if n, _ := admin.Exists(t.Context(), "chatwire:deliver:{hr}").Result(); n != 1 {
		t.Errorf("delivery lease not on the master")
	}
}

// TestStoreCluster runs a host on a two-node Redis Cluster (store.redis with two addrs, no
// master_name; slots split between the nodes): tokens shared by two hosts, events queued
// and deduplicated, all through a ClusterClient.
func TestStoreCluster(t *testing.T) {
	nodes := []*redistest.Server{
		redistest.StartArgs(t, "--cluster-enabled", "yes", "--cluster-config-file", "nodes.conf"),
		redistest.StartArgs(t, "--cluster-enabled", "yes", "--cluster-config-file", "nodes.conf"),
	}
	ctx := t.Context()
	var raws []*redis.Client
	for i, n := range nodes {
		raw := redis.NewClient(&redis.Options{Addr: n.Addr()})
		defer raw.Close()
		raws = append(raws, raw)
		lo, hi := i*8192, i*8192+8191
		if err := raw.Do(ctx, "CLUSTER", "ADDSLOTSRANGE", lo, hi).Err(); err != nil {
			t.Fatalf("CLUSTER ADDSLOTSRANGE: %v", err)
		}
	}
	host, port, _ := strings.Cut(nodes[1].Addr(), ":")
	if err := raws[0].Do(ctx, "CLUSTER", "MEET", host, port).Err(); err != nil {
		t.Fatalf("CLUSTER MEET: %v", err)
	}
	for deadline := time.Now().Add(15 * time.Second); ; {
		ok := true
		for _, raw := range raws {
			info := raw.ClusterInfo(ctx).Val()
			ok = ok && strings.Contains(info, "cluster_state:ok") && strings.Contains(info, "cluster_known_nodes:2")
		}
		if ok {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("cluster not ok after 15s:\n%s", raws[0].ClusterInfo(ctx).Val())
		}
		time.Sleep(50 * time.Millisecond)
	}
	admin := redis.NewClusterClient(&redis.ClusterOptions{Addrs: []string{nodes[0].Addr(), nodes[1].Addr()}})
	defer admin.Close()

	emu := newEmulator()
	ws := httptest.NewServer(emu)
	defer ws.Close()
	store := &config.StoreConfig{Redis: &config.RedisConfig{Addrs: []string{nodes[0].Addr(), nodes[1].Addr()}}, EncryptionKey: newStoreKey(t)}
	a := setup(t, setupOpts{store: store, emu: emu, apiBase: ws.URL})
	b := setup(t, setupOpts{store: store, emu: emu, apiBase: ws.URL})
	sendOK(t, a, "cluster a")
	sendOK(t, b, "cluster b")
	if n := emu.TokenRequests(); n != 1 {
		t.Errorf("WeCom answered %d gettoken calls for two hosts on one Cluster; want 1", n)
	}
	if n, err := admin.Exists(ctx, tokenEntry).Result(); err != nil || n != 1 {
		t.Errorf("token entry in the Cluster: %d, %v", n, err)
	}
	storeDedupOnce(t, a, admin)
}

// storeDedupOnce pushes one callback to e twice: one event in the Redis stream, the second
// counted as a duplicate, the event read over SSE.
func storeDedupOnce(t *testing.T, e *env, admin redis.UniversalClient) {
	t.Helper()
	ch := e.subscribe("")
	_, msg := e.push("alice", "once")
	if p, err := e.emu.Push(t.Context(), e.cb, msg); err != nil || p.Status != 200 {
		t.Fatalf("second delivery of the same callback = %+v, %v", p, err)
	}
	waitMetric(t, e, `chatwire_events_total{bot="hr",outcome="duplicate"} 1`)
	if ev := next(t, ch); ev.ev.Text != "once" {
		t.Fatalf("event = %+v", ev)
	}
	if n, err := admin.XLen(t.Context(), "chatwire:events:{hr}").Result(); err != nil || n != 1 {
		t.Errorf("stream in Redis holds %d events (%v) after one callback delivered twice; want 1", n, err)
	}
}

// waitDelivered waits until got holds as many deliveries as want and e's bot hr has no
// unconsumed event left (so a duplicate delivery would already be in got), then compares.
func waitDelivered(t *testing.T, e *env, mu *sync.Mutex, got *[]string, want ...string) {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for {
		mu.Lock()
		n := len(*got)
		mu.Unlock()
		if n >= len(want) || time.Now().After(deadline) {
			break
		}
		time.Sleep(20 * time.Millisecond)
	}
	// the consumed mark is raised only after a delivery was answered
	for {
		if n, _ := e.h.srv.bots["hr"].events.Len(t.Context()); n.Unconsumed == 0 {
			break
		}
		if time.Now().After(deadline) {
			t.Errorf("events still unconsumed after %v", 10*time.Second)
			break
		}
		time.Sleep(20 * time.Millisecond)
	}
	mu.Lock()
	defer mu.Unlock()
	if strings.Join(*got, ",") != strings.Join(want, ",") {
		t.Errorf("delivered %v; want %v", *got, want)
	}
}

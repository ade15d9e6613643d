package wecom_test

import (
	"bytes"
	"encoding/json"
	"os/exec"
	"path/filepath"
	"testing"
)

// installHint is what a test failing for a missing oracle tells the reader to run.
const installHint = "run `make deps` (Debian: apt-get install nodejs npm; then cd conformance/node && npm ci)"

// nodeOp is one operation for node/wecom-crypto.js (see that file).
type nodeOp struct {
	Op        string `json:"op"`
	Key       string `json:"key,omitempty"`
	Message   string `json:"message,omitempty"`
	ID        string `json:"id,omitempty"`
	Random    string `json:"random,omitempty"`
	Encrypt   string `json:"encrypt,omitempty"`
	Token     string `json:"token,omitempty"`
	Timestamp string `json:"timestamp,omitempty"`
	Nonce     string `json:"nonce,omitempty"`
}

// nodeResult is the answer to one nodeOp.
type nodeResult struct {
	Encrypt   string `json:"encrypt"`
	Message   string `json:"message"`
	ID        string `json:"id"`
	Random    string `json:"random"`
	Signature string `json:"signature"`
	Error     string `json:"error"`
}

// wecomCrypto runs every op through the official @wecom/crypto package in one node process
// and returns the results in order. It fails the test if node or the package is missing.
func wecomCrypto(t *testing.T, ops []nodeOp) []nodeResult {
	t.Helper()
	node, err := exec.LookPath("node")
	if err != nil {
		t.Fatalf("node is not installed: %s", installHint)
	}
	script, err := filepath.Abs(filepath.Join("..", "node", "wecom-crypto.js"))
	if err != nil {
		t.Fatal(err)
	}
	in, err := json.Marshal(ops)
	if err != nil {
		t.Fatal(err)
	}
	cmd := exec.CommandContext(t.Context(), node, script)
	cmd.Stdin = bytes.NewReader(in)
	var stdout, stderr bytes.Buffer
	cmd.Stdout, cmd.Stderr = &stdout, &stderr
	if err := cmd.Run(); err != nil {
		t.Fatalf("node %s: %v: %s\n%s", filepath.Base(script), err, stderr.Bytes(), installHint)
	}
	var out []nodeResult
	if err := json.Unmarshal(stdout.Bytes(), &out); err != nil {
		t.Fatalf("node output: %v: %.200s", err, stdout.Bytes())
	}
	if len(out) != len(ops) {
		t.Fatalf("node answered %d results for %d operations", len(out), len(ops))
	}
	return out
}

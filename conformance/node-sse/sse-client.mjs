// A plain third-party Server-Sent Events client: the npm `eventsource` package (WHATWG
// EventSource), used as published. integration/sse_conformance_test.go runs it against a real
// adapter-host and reads what it saw from stdout, one JSON object per line:
//   {"type":"open"}
//   {"type":"event","event":"message","id":"<lastEventId>","data":"<the data: field>"}
//   {"type":"error","readyState":0|2,"message":"..."}
// It exits when stdin closes. Environment: SSE_URL, SSE_API_KEY (sent as a Bearer token).
import { EventSource } from 'eventsource';

const url = process.env.SSE_URL;
const key = process.env.SSE_API_KEY || '';
if (!url) {
  process.stderr.write('SSE_URL is not set\n');
  process.exit(2);
}
const out = (o) => process.stdout.write(JSON.stringify(o) + '\n');

const es = new EventSource(url, {
  // The documented way to add headers: the package calls this fetch for every (re)connection,
  // with its own headers (Accept, Last-Event-ID) in init.
  fetch: (input, init) =>
    fetch(input, { ...init, headers: { ...init.headers, ...(key ? { Authorization: 'Bearer ' + key } : {}) } }),
});
es.onopen = () => out({ type: 'open' });
es.onerror = (e) => out({ type: 'error', readyState: es.readyState, message: String(e.message ?? '') });
// The host's event kinds (`event:` field): "message" and "event".
for (const kind of ['message', 'event']) {
  es.addEventListener(kind, (e) => out({ type: 'event', event: e.type, id: e.lastEventId, data: e.data }));
}
process.stdin.on('end', () => {
  es.close();
  process.exit(0);
});
process.stdin.resume();

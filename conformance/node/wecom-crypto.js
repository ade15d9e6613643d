// wecom-crypto.js drives the official @wecom/crypto package (npm, used as published) for the
// Go conformance tests in ../wecom: it reads one JSON array of operations on stdin and writes
// one JSON array of results on stdout, in order. One process serves a whole test.
//
//   {"op":"encrypt","key":K,"message":M,"id":ID,"random":HEX?} -> {"encrypt":B64}
//   {"op":"decrypt","key":K,"encrypt":B64}                    -> {"message":M,"id":ID,"random":HEX}
//   {"op":"sign","token":T,"timestamp":TS,"nonce":N,"encrypt":B64} -> {"signature":HEX}
//
// A failing operation yields {"error":"..."}; only a missing package fails the process.
'use strict';

let wecom;
try {
  wecom = require('@wecom/crypto');
} catch (e) {
  process.stderr.write('@wecom/crypto is not installed: run `make deps` (or `cd conformance/node && npm ci`)\n');
  process.exit(3);
}

const chunks = [];
process.stdin.on('data', (c) => chunks.push(c));
process.stdin.on('end', () => {
  const ops = JSON.parse(Buffer.concat(chunks).toString('utf8'));
  const out = ops.map((o) => {
    try {
      switch (o.op) {
        case 'encrypt': {
          const random = o.random ? Buffer.from(o.random, 'hex') : undefined;
          return { encrypt: wecom.encrypt(o.key, o.message, o.id, random) };
        }
        case 'decrypt': {
          const r = wecom.decrypt(o.key, o.encrypt);
          return { message: r.message, id: r.id, random: r.random.toString('hex') };
        }
        case 'sign':
          return { signature: wecom.getSignature(o.token, o.timestamp, o.nonce, o.encrypt) };
        default:
          return { error: `unknown op ${o.op}` };
      }
    } catch (e) {
      return { error: String(e && e.message ? e.message : e) };
    }
  });
  process.stdout.write(JSON.stringify(out));
});

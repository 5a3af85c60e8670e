#!/usr/bin/env node
// Reference sign/verify with npm `pkarr@1.3.0` (the original JS implementation: dns-packet
// for DNS, libsodium for Ed25519). Driven by tests/pkarr/integration/test_interop_pkarr_js.py.
//
//   node pkarr_ref.mjs sign   --seed HEX --seq N [--packet HEX]
//        -> {"public_key", "z32", "seq", "v", "sig", "relay_bytes", "answers"}   (hex fields)
//        --packet: a DNS packet (hex) that dns-packet decodes; pkarr normalizes its answer
//        names and re-encodes it (uncompressed) before signing. Without it: one TXT record.
//   node pkarr_ref.mjs verify --pubkey HEX --relay-bytes HEX
//        -> {"ok": true, "seq", "v_len", "answers"} or {"ok": false, "error"} (exit 1)
// Touches no network.
import { SignedPacket, generateKeyPair, dns, z32 } from 'pkarr'

function arg (name, def) {
  const i = process.argv.indexOf('--' + name)
  return i < 0 ? def : process.argv[i + 1]
}

function describe (r) {
  const data = Buffer.isBuffer(r.data) ? r.data.toString('hex') : r.data
  return { name: r.name, type: r.type, ttl: r.ttl, data }
}

const cmd = process.argv[2]
setTimeout(() => { console.error('time limit'); process.exit(3) }, 30000).unref()

if (cmd === 'sign') {
  const kp = generateKeyPair(Buffer.from(arg('seed'), 'hex'))
  const seq = Number(arg('seq'))
  let packet
  if (arg('packet')) packet = dns.decode(Buffer.from(arg('packet'), 'hex'))
  else packet = { id: 0, type: 'response', flags: 0, answers: [{ name: '_lab', type: 'TXT', class: 'IN', ttl: 300, data: 'pkarr 1.3.0 reference' }] }
  const sp = SignedPacket.fromPacket(kp, packet, { timestamp: seq })
  const a = sp.bep44Args()
  console.log(JSON.stringify({
    public_key: Buffer.from(kp.publicKey).toString('hex'),
    z32: z32.encode(kp.publicKey),
    seq: a.seq,
    v: Buffer.from(a.v).toString('hex'),
    sig: Buffer.from(a.sig).toString('hex'),
    relay_bytes: Buffer.from(sp.bytes()).toString('hex'),
    answers: sp.packet().answers.map(describe)
  }))
  process.exit(0)
} else if (cmd === 'verify') {
  try {
    const sp = SignedPacket.fromBytes(Buffer.from(arg('pubkey'), 'hex'), Buffer.from(arg('relay-bytes'), 'hex'))
    console.log(JSON.stringify({ ok: true, seq: sp.timestamp(), v_len: sp.size(), answers: sp.packet().answers.map(describe) }))
    process.exit(0)
  } catch (e) {
    console.log(JSON.stringify({ ok: false, error: e.message }))
    process.exit(1)
  }
} else {
  console.error('usage: pkarr_ref.mjs sign|verify ...')
  process.exit(2)
}

#!/usr/bin/env node
// Drive pkarr's own relay clients against a relay URL (pkdns's relay API in the tests):
//   npm pkarr@1.3.0 (JS pkarr: Pkarr.relayPut / Pkarr.relayGet, dns-packet encoding) and
//   @synonymdev/pubky@0.6.0 (the Rust pkarr client compiled to WASM, relay-only).
//
//   node relay_clients.mjs pkarr-put --relay URL --seed HEX --seq N --txt TEXT
//   node relay_clients.mjs pkarr-get --relay URL --seed HEX
//   node relay_clients.mjs pubky-publish --relay URL --seed HEX --homeserver-seed HEX
//   node relay_clients.mjs pubky-resolve --relay URL --pubkey Z32
// Prints one JSON line. Refuses non-loopback relays; exits after --time-limit seconds.
import { Pkarr, SignedPacket, generateKeyPair, z32 } from 'pkarr'

function arg (name, def) {
  const i = process.argv.indexOf('--' + name)
  return i < 0 ? def : process.argv[i + 1]
}
const cmd = process.argv[2]
const relay = arg('relay')
setTimeout(() => { console.error('time limit'); process.exit(3) }, Number(arg('time-limit', 30)) * 1000).unref()
if (!relay || !['127.', 'localhost'].some(p => new URL(relay).hostname.startsWith(p))) {
  throw new Error('a loopback --relay is required: ' + relay)
}
const out = (obj) => { console.log(JSON.stringify(obj)); process.exit(0) }

if (cmd === 'pkarr-put') {
  const kp = generateKeyPair(Buffer.from(arg('seed'), 'hex'))
  const packet = {
    id: 0,
    type: 'response',
    flags: 0,
    answers: [
      { name: '@', type: 'A', class: 'IN', ttl: 300, data: '192.0.2.80' },
      { name: '_pkarr', type: 'TXT', class: 'IN', ttl: 300, data: arg('txt', 'pkarr 1.3.0') }
    ]
  }
  const sp = SignedPacket.fromPacket(kp, packet, { timestamp: Number(arg('seq')) })
  const res = await Pkarr.relayPut(relay, sp)
  out({ status: res.status, ok: res.ok, z32: z32.encode(kp.publicKey), stored: res.headers.get('pkarr-dht-stored-nodes') })
}

if (cmd === 'pkarr-get') {
  const kp = generateKeyPair(Buffer.from(arg('seed'), 'hex'))
  try {
    const sp = await Pkarr.relayGet(relay, kp.publicKey)
    out({ ok: true, seq: sp.timestamp(), answers: sp.packet().answers.map(r => `${r.name} ${r.type} ${Buffer.isBuffer(r.data) ? r.data.toString() : r.data}`) })
  } catch (e) {
    out({ ok: false, error: String(e && e.message) })
  }
}

if (cmd === 'pubky-publish' || cmd === 'pubky-resolve') {
  const { Client, Pubky, Keypair, PublicKey } = await import('@synonymdev/pubky')
  const client = new Client({ pkarr: { relays: [relay], requestTimeout: 5000 } })
  const pubky = Pubky.withClient(client)
  try {
    if (cmd === 'pubky-publish') {
      const kp = Keypair.fromSecret(new Uint8Array(Buffer.from(arg('seed'), 'hex')))
      const hs = Keypair.fromSecret(new Uint8Array(Buffer.from(arg('homeserver-seed'), 'hex'))).publicKey
      // wasm-bindgen frees objects passed by value: read the names first.
      const user = kp.publicKey.z32()
      const homeserver = hs.z32()
      await pubky.signer(kp).pkdns.publishHomeserverForce(hs)
      out({ ok: true, user, homeserver })
    } else {
      const hs = await pubky.getHomeserverOf(PublicKey.from(arg('pubkey')))
      out({ ok: !!hs, homeserver: hs ? hs.z32() : null })
    }
  } catch (e) {
    out({ ok: false, error: String(e && (e.message || e)) })
  }
}

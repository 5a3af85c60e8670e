#!/usr/bin/env node
// Long-lived bittorrent-dht@11 reader for bench/dht_lookup.py: one node, bootstrapped once,
// then a cold get (cache: false) per key, one after the other.
//   node bench/dht_get_client.js --bootstrap H:P[,H:P] --keys FILE (one 64-hex key a line)
// Prints one JSON line: per-op get_ms (whole traversal, when bittorrent-dht calls back),
// first_value_ms (first verified value), queries (KRPC queries this node sent) and found.
import fs from 'node:fs'
import { makeNode, sha1, arg, parseHostPort, hrms, waitReady, verify } from '../tests/interop/lib/pkarr.js'

const boot = String(arg('bootstrap')).split(',').filter(Boolean).map(parseHostPort)
const keys = fs.readFileSync(String(arg('keys')), 'utf8').split('\n').filter(Boolean)
const limit = Number(arg('time-limit', 600))
setTimeout(() => { console.log(JSON.stringify({ ok: false, error: 'time-limit' })); process.exit(1) }, limit * 1000).unref()

const reader = await makeNode({ bootstrap: boot })
reader.on('warning', () => {})
await waitReady(reader)
await new Promise(resolve => setTimeout(resolve, 500))

let queries = 0
const sock = reader._rpc.socket
const send = sock.send.bind(sock)
sock.send = (peer, message, cb) => { if (message && message.y === 'q') queries++; return send(peer, message, cb) }

const perOp = []
for (const hex of keys) {
  const pk = Buffer.from(hex, 'hex')
  let first = null
  const before = queries
  const t0 = process.hrtime.bigint()
  const got = await new Promise(resolve => {
    reader.get(sha1(pk), {
      cache: false,
      verify: (sig, msg, k) => { const ok = verify(sig, msg, k); if (ok && first === null) first = hrms(t0); return ok }
    }, (err, r) => resolve({ err, r }))
  })
  perOp.push({ get_ms: hrms(t0), first_value_ms: first, queries: queries - before, found: !!got.r })
}
console.log(JSON.stringify({ client: 'bittorrent-dht', per_op: perOp }))
reader.destroy()
setTimeout(() => process.exit(0), 300)

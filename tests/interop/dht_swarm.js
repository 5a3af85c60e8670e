#!/usr/bin/env node
// Start N bittorrent-dht (webtorrent, v11) nodes on loopback, bootstrapped to each
// other (and optionally to external local nodes), print their addresses, and stay
// up until SIGINT/SIGTERM or --time-limit seconds (default 600, always bounded).
//
//   node dht_swarm.js --n 20 --port 0                       # 127.0.0.1, free ports
//   node swarm.js --n 20 --port 20000 --ipmode distinct     # 127.0.<i+1>.1:20000+i
//   node swarm.js --n 5 --port 20100 --bootstrap 127.0.0.1:17001,127.0.0.1:17002
//   options: --out FILE (write JSON list of {host,port,id}), --time-limit SEC,
//            --stats-every SEC (print node/value counts), --quiet
//            --cap-nodes K (default 8): bittorrent-dht 11 answers find_node/get_peers/get with its
//            WHOLE routing table (k-bucket closest() without n); with > ~55 entries the UDP reply
//            exceeds 1500 bytes, which libtorrent (1500-byte receive buffer) silently drops.
//            We cap those replies to K nodes (BEP5: 8). --cap-nodes 0 = stock behaviour.
//            --stdin: read commands from stdin, one per line ("kill 3,7,12" destroys those
//            nodes and prints {"killed":[...]}) and exit when stdin closes (the kernel lab
//            kills a share of the swarm after the tables filled; a parent that dies takes
//            the swarm with it).
import fs from 'node:fs'
import { makeNode, arg, parseHostPort } from './lib/pkarr.js'

const N = Number(arg('n', 10))
const basePort = Number(arg('port', 20000))
const ipmode = arg('ipmode', 'same') // same | distinct
const host0 = arg('host', '127.0.0.1')
const external = (arg('bootstrap', '') || '').split(',').filter(Boolean).map(parseHostPort)
const timeLimit = Number(arg('time-limit', 600))
const statsEvery = Number(arg('stats-every', 0))
const out = arg('out', null)
const quiet = !!arg('quiet', false)
const capNodes = Number(arg('cap-nodes', 8))
const commands = !!arg('stdin', false)

function hostFor (i) {
  if (ipmode === 'distinct') return `127.0.${(i % 250) + 1}.${Math.floor(i / 250) + 1}`
  return host0
}

const nodes = []
const started = Date.now()
for (let i = 0; i < N; i++) {
  const boot = [...external]
  if (i > 0) boot.push({ host: nodes[0].address().address, port: nodes[0].address().port })
  if (i > 1) boot.push({ host: nodes[i - 1].address().address, port: nodes[i - 1].address().port })
  const dht = await makeNode({ bootstrap: boot, host: hostFor(i), port: basePort ? basePort + i : 0 })
  if (capNodes > 0) {
    const table = dht._rpc.nodes
    const closest = table.closest.bind(table)
    // only the reply path calls closest(target) without n; k-rpc's own lookups pass n = k
    table.closest = (id, n) => closest(id, n === undefined ? capNodes : n)
  }
  dht.on('warning', () => {})
  dht.on('error', (e) => { if (!quiet) console.error(`node ${i} error`, e.message) })
  nodes.push(dht)
}
// wait for all bootstraps (bounded)
await Promise.race([
  Promise.all(nodes.map(d => d.ready ? null : new Promise(r => d.once('ready', r)))),
  new Promise(r => setTimeout(r, 15000))
])
// second pass: every node looks up its own id again so early nodes learn late ones
await Promise.race([
  Promise.all(nodes.map(d => new Promise(r => d._rpc.populate(d.nodeId, { q: 'find_node', a: { id: d.nodeId, target: d.nodeId } }, () => r())))),
  new Promise(r => setTimeout(r, 15000))
])

const list = nodes.map(d => ({ host: d.address().address, port: d.address().port, id: d.nodeId.toString('hex') }))
if (out) fs.writeFileSync(out, JSON.stringify(list, null, 1))
if (!quiet) for (const n of list) console.log(`${n.host}:${n.port} ${n.id}`)
const mem = process.memoryUsage()
console.log(JSON.stringify({
  ready: true,
  n: N,
  startup_ms: Date.now() - started,
  pid: process.pid,
  rss_mb: +(mem.rss / 2 ** 20).toFixed(1),
  heap_used_mb: +(mem.heapUsed / 2 ** 20).toFixed(1),
  routing_table_sizes: nodes.map(d => d.nodes.count()),
  bootstrap: list.slice(0, 3).map(n => `${n.host}:${n.port}`).join(',')
}))

let statsTimer = null
if (statsEvery > 0) {
  statsTimer = setInterval(() => {
    const m = process.memoryUsage()
    console.log(JSON.stringify({
      t: Math.round((Date.now() - started) / 1000),
      rss_mb: +(m.rss / 2 ** 20).toFixed(1),
      values: nodes.map(d => d._values.length),
      routing: nodes.map(d => d.nodes.count())
    }))
  }, statsEvery * 1000)
}

if (commands) {
  const readline = await import('node:readline')
  const rl = readline.createInterface({ input: process.stdin })
  rl.on('line', (line) => {
    const [cmd, list] = line.trim().split(/\s+/)
    if (cmd !== 'kill') return console.log(JSON.stringify({ error: `unknown command ${cmd}` }))
    const killed = []
    for (const i of String(list || '').split(',').filter(Boolean).map(Number)) {
      if (nodes[i] && !nodes[i].destroyed) { nodes[i].destroy(); killed.push(i) }
    }
    console.log(JSON.stringify({ killed }))
  })
  rl.on('close', () => shutdown('stdin closed'))
}

function shutdown (why) {
  if (statsTimer) clearInterval(statsTimer)
  console.log(JSON.stringify({ exiting: why }))
  let left = nodes.length
  for (const d of nodes) {
    if (d.destroyed) { if (--left === 0) process.exit(0) } else d.destroy(() => { if (--left === 0) process.exit(0) })
  }
  setTimeout(() => process.exit(0), 2000).unref()
}
process.on('SIGINT', () => shutdown('SIGINT'))
process.on('SIGTERM', () => shutdown('SIGTERM'))
setTimeout(() => shutdown('time-limit'), timeLimit * 1000).unref()
// keep alive (the sockets already do; this is only a safety net)
setInterval(() => {}, 1 << 30).unref()

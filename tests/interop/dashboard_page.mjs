#!/usr/bin/env node
// Open pkdns's status page in headless Chromium (Debian /usr/bin/chromium, driven by
// playwright-core), wait until the dashboard has drawn, print what it shows.
//   node dashboard_page.mjs --url http://127.0.0.1:PORT/ --screenshot FILE [--user-data-dir DIR]
// Prints {"tiles": {id: text}, "upstreams": [[...]], "zones": [[...]], "lines": N, "points": [...]}.
import { chromium } from 'playwright-core'

function arg (name, def) {
  const i = process.argv.indexOf('--' + name)
  return i < 0 ? def : process.argv[i + 1]
}
const url = arg('url')
if (!url || !new URL(url).hostname.startsWith('127.')) throw new Error('a loopback --url is required')
setTimeout(() => { console.error('time limit'); process.exit(3) }, Number(arg('time-limit', 60)) * 1000).unref()

const context = await chromium.launchPersistentContext(arg('user-data-dir', ''), {
  executablePath: arg('chromium', '/usr/bin/chromium'),
  headless: true,
  args: ['--no-sandbox', '--disable-gpu', '--disable-quic', '--no-first-run',
    '--disable-background-networking', '--disable-component-update', '--disable-sync'],
  viewport: { width: 1100, height: 900 }
})
try {
  const page = context.pages()[0] || await context.newPage()
  const requests = []
  page.on('request', r => requests.push(r.url()))
  await page.goto(url)
  await page.waitForFunction(() => document.getElementById('total-queries').textContent !== '–',
    null, { timeout: 15000 })
  const tiles = await page.$$eval('.tile .v', vs => Object.fromEntries(vs.map(v => [v.id, v.textContent])))
  const table = id => page.$$eval('#' + id + ' tbody tr', trs => trs.map(tr => [...tr.children].map(td => td.textContent)))
  const points = await page.$$eval('svg.chart', svgs => svgs.map(svg => svg.querySelectorAll('rect').length))
  if (arg('screenshot')) await page.screenshot({ path: arg('screenshot'), fullPage: true })
  const offsite = requests.filter(r => !r.startsWith(new URL(url).origin))
  console.log(JSON.stringify({ tiles, upstreams: await table('upstreams'), zones: await table('zones'), points, offsite }))
} finally {
  await context.close()
}

#!/usr/bin/env node
// Open pkdns's status page in headless Chromium (Debian /usr/bin/chromium, driven by
// playwright-core), wait until the dashboard has drawn, print what it shows.
//   node dashboard_page.mjs --url http://127.0.0.1:PORT/ --screenshot FILE [--user-data-dir DIR]
// Prints {"tiles": {id: text}, "upstreams": [[...]], "zones": [[...]], "lines": N, "points": [...]}.
import { arg, open } from './chromium_page.mjs'

const { url, context } = await open(900)
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

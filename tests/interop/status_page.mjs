#!/usr/bin/env node
// Open pkdns's status page in headless Chromium (Debian /usr/bin/chromium, driven by
// playwright-core: no browser download), look a key up through the form, print what rendered.
//   node status_page.mjs --url http://127.0.0.1:PORT/ --key Z32 --screenshot FILE [--user-data-dir DIR]
// Prints {"status": {...}, "rows": [[name, ttl, type, data], ...], "message": "..."}.
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
  viewport: { width: 1100, height: 800 }
})
try {
  const page = context.pages()[0] || await context.newPage()
  await page.goto(url)
  await page.waitForSelector('#status-version', { timeout: 10000 })
  const status = await page.$$eval('#status dd', dds => Object.fromEntries(dds.map(d => [d.id.replace('status-', ''), d.textContent])))
  await page.fill('#key', arg('key'))
  await page.click('#lookup-button')
  await page.waitForSelector('#records:not([hidden]) tbody tr, #lookup-status.error', { timeout: 20000 })
  const rows = await page.$$eval('#records tbody tr', trs => trs.map(tr => [...tr.children].map(td => td.textContent)))
  const message = await page.textContent('#lookup-status')
  if (arg('screenshot')) await page.screenshot({ path: arg('screenshot'), fullPage: true })
  console.log(JSON.stringify({ status, rows, message }))
} finally {
  await context.close()
}

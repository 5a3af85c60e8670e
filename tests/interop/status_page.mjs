#!/usr/bin/env node
// Open pkdns's status page in headless Chromium (Debian /usr/bin/chromium, driven by
// playwright-core: no browser download), look a key up through the form, print what rendered.
//   node status_page.mjs --url http://127.0.0.1:PORT/ --key Z32 --screenshot FILE [--user-data-dir DIR]
// Prints {"status": {...}, "rows": [[name, ttl, type, data], ...], "message": "..."}.
import { arg, open } from './chromium_page.mjs'

const { url, context } = await open(800)
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

// Shared by the status-page scripts: command-line flags and a headless Debian Chromium
// (/usr/bin/chromium, driven by playwright-core: no browser download) for a loopback URL.
import { chromium } from 'playwright-core'

export function arg (name, def) {
  const i = process.argv.indexOf('--' + name)
  return i < 0 ? def : process.argv[i + 1]
}

// The page's URL (loopback only), a time limit for the whole script, and a browser context.
export async function open (height) {
  const url = arg('url')
  if (!url || !new URL(url).hostname.startsWith('127.')) throw new Error('a loopback --url is required')
  setTimeout(() => { console.error('time limit'); process.exit(3) }, Number(arg('time-limit', 60)) * 1000).unref()
  const context = await chromium.launchPersistentContext(arg('user-data-dir', ''), {
    executablePath: arg('chromium', '/usr/bin/chromium'),
    headless: true,
    args: ['--no-sandbox', '--disable-gpu', '--disable-quic', '--no-first-run',
      '--disable-background-networking', '--disable-component-update', '--disable-sync'],
    viewport: { width: 1100, height }
  })
  return { url, context }
}

// browser.mjs drives client/demo.html in Debian's Chromium through
// playwright-core, for test/integration/browser_test.go:
//
//   node client/test/browser.mjs PAGE_URL WS_URL TOKEN SCREENSHOT_PATH
//
// It talks with the Go test in lines: it prints "piped-browser: stop-node"
// when the page is connected and waits for "stopped" on its standard input
// (the Go test stops the node the page is connected to), then
// "piped-browser: disconnect" and waits for "sent" (the Go test has published
// a disconnect control message for the token). Every other line it prints
// starts with "piped-browser: "; it exits 0 when every check passed.
import { mkdtempSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { createInterface } from "node:readline";

import { chromium } from "playwright-core";

const [pageURL, wsURL, token, screenshotPath] = process.argv.slice(2);
if (!screenshotPath) {
  console.error("usage: node browser.mjs PAGE_URL WS_URL TOKEN SCREENSHOT_PATH");
  process.exit(2);
}
const step = 20000; // ms for each wait below

const log = (...args) => console.log("piped-browser:", ...args);
const stdin = createInterface({ input: process.stdin });
const lines = stdin[Symbol.asyncIterator]();
async function expectLine(want) {
  const { value, done } = await lines.next();
  if (done || value.trim() !== want) throw new Error(`expected "${want}" from the Go test, got ${done ? "EOF" : JSON.stringify(value)}`);
}

// The flags the machine needs (see docs in client/README.md, "Tests"):
// no background networking, which this machine's closed network refuses.
const args = [
  "--headless",
  "--no-sandbox",
  "--disable-gpu",
  "--disable-quic",
  "--no-first-run",
  "--disable-background-networking",
  "--disable-component-update",
  "--disable-sync",
];
const profile = mkdtempSync(join(tmpdir(), "piped-chromium-"));
const context = await chromium.launchPersistentContext(profile, {
  executablePath: "/usr/bin/chromium",
  headless: true,
  args,
  viewport: { width: 1100, height: 900 },
});
let failed = false;
try {
  const page = context.pages()[0] ?? (await context.newPage());
  page.on("console", (m) => log(`console.${m.type()}:`, m.text()));
  page.on("pageerror", (e) => log("page error:", e.message));

  const entries = (sel) => page.locator(`#log li${sel}`);
  // waitCount waits until at least n log entries match sel.
  async function waitCount(sel, n, what) {
    const deadline = Date.now() + step;
    while ((await entries(sel).count()) < n) {
      if (Date.now() > deadline) {
        const text = await page.locator("#log").innerText();
        throw new Error(`timed out after ${step} ms waiting for ${what} (${n} × ${sel}); the page's log:\n${text}`);
      }
      await page.waitForTimeout(50);
    }
  }

  const t0 = Date.now();
  await page.goto(`${pageURL}?connect=0`);
  await page.fill("#url", wsURL.replace(/\/api\/.*$/, ""));
  await page.fill("#token", token);
  await page.click("#connect");
  await waitCount("[data-kind=open]", 1, "the connection to open");
  log(`connected in ${Date.now() - t0} ms`);

  // 1. Calls: each one's result shows with its payload.
  for (let i = 1; i <= 3; i++) {
    await page.fill("#method", "hello");
    await page.fill("#payload", JSON.stringify({ n: i, text: "héllo ✓" }));
    await page.click("#call");
    await waitCount("[data-kind=result][data-method=hello]", i, `the result of call ${i}`);
    const text = await entries("[data-kind=result][data-method=hello]").first().innerText();
    if (!text.includes(`"n":${i}`) || !text.includes("héllo ✓")) throw new Error(`result of call ${i}: ${text}`);
  }
  log("3 calls answered");

  // 2. An event for this token, through the backend and exchange-mass.
  await page.click("#event");
  await waitCount("[data-kind=event][data-event=demo-event]", 1, "the event");
  await waitCount("[data-kind=result][data-method=event]", 1, "the result of the event call");
  log("event received");

  // 3. The node goes away: the client reconnects through nginx to the other
  // node, and the next call works (it waits for the connection if need be).
  log("stop-node");
  await expectLine("stopped");
  await waitCount("[data-kind=close][data-code='1012'][data-will-reconnect=true]", 1, "close 1012 (will reconnect)");
  await page.fill("#method", "hello");
  await page.fill("#payload", JSON.stringify({ after: "restart" }));
  await page.click("#call");
  await waitCount("[data-kind=open][data-reconnect=true]", 1, "the reconnect");
  await waitCount("[data-kind=result][data-method=hello]", 4, "the result of the call after the reconnect");
  const after = await entries("[data-kind=result][data-method=hello]").first().innerText();
  if (!after.includes('"after":"restart"')) throw new Error(`result after the reconnect: ${after}`);
  log("reconnected; the next call was answered");

  // 4. A call the node rejects shows its error code.
  await page.click("#reserved");
  await waitCount("[data-kind=error][data-code=bad_request][data-method='$reserved']", 1, "the bad_request error");
  log("rejected call shows bad_request");

  if ((await page.locator("#state").innerText()) !== "open") throw new Error("the state is not open before the disconnect");

  // 5. The backend logs the token out (disconnect, 4001): the client stops,
  // and a call is refused locally with "closed".
  log("disconnect");
  await expectLine("sent");
  await waitCount("[data-kind=close][data-code='4001'][data-will-reconnect=false]", 1, "close 4001 (stopped)");
  await page.click("#call");
  await waitCount("[data-kind=error][data-code=closed][data-method=hello]", 1, "the call after 4001 rejected with closed");
  if ((await page.locator("#state").innerText()) !== "closed") throw new Error("the state is not closed after 4001");
  log("4001 stopped the client");

  // 6. An upgrade the node refuses (400, a bad token) is a 1006 before open
  // in a browser: the client retries maxFailedOpens times, then gives up.
  const wsBase = wsURL.replace(/\/api\/.*$/, "");
  const closes = await page.evaluate(async (url) => {
    const { Piped } = await import("./piped.js");
    return new Promise((resolve) => {
      const p = new Piped({ url, token: "bad token!", maxFailedOpens: 3, minDelay: 20, maxDelay: 50 });
      const seen = [];
      p.on("close", (info) => {
        seen.push(info);
        if (!info.willReconnect) resolve(seen);
      });
    });
  }, wsBase);
  const summary = closes.map((c) => `${c.code}/${c.opened ? "opened" : "before open"}/${c.willReconnect ? "retry" : c.gaveUp ? "gave up" : "stop"}`);
  if (JSON.stringify(summary) !== JSON.stringify(["1006/before open/retry", "1006/before open/retry", "1006/before open/gave up"])) {
    throw new Error(`closes of a refused token: ${summary.join(", ")}`);
  }
  log(`refused upgrade: ${summary.join(", ")}`);

  await page.screenshot({ path: screenshotPath, fullPage: true });
  log(`screenshot ${screenshotPath}`);
  log(`all checks passed in ${Date.now() - t0} ms`);
} catch (err) {
  failed = true;
  console.error("piped-browser: FAIL:", err?.stack ?? err);
  try {
    const page = context.pages()[0];
    if (page) await page.screenshot({ path: screenshotPath, fullPage: true });
    log(`screenshot of the failure: ${screenshotPath}`);
  } catch {}
} finally {
  await context.close();
  rmSync(profile, { recursive: true, force: true });
  stdin.close();
}
process.exit(failed ? 1 : 0);

// Drives a running hub's /admin/ dashboard in headless Chromium: a job that failed
// permanently (discarded) is listed with its (escaped) error, its Replay button runs it
// again, and the admin API then shows it completed. Prints one PASS or FAIL line per
// step; exits 1 on the first failure. Started by ./run, which provides the environment
// below.
//
//   HUB_URL       the hub's API, e.g. http://127.0.0.1:41234
//   ADMIN_TOKEN   SYNCLINE_ADMIN_TOKEN of that hub
//   OUT_DIR       where the screenshots go
//   CHROMIUM      the browser binary (default /usr/bin/chromium)
//   CHECK_SECONDS time limit for the whole check (default 150)

import http from "node:http";
import path from "node:path";
import { chromium } from "playwright-core";

const hub = required("HUB_URL");
const token = required("ADMIN_TOKEN");
const outDir = required("OUT_DIR");
const executablePath = process.env.CHROMIUM || "/usr/bin/chromium";
const limitSeconds = Number(process.env.CHECK_SECONDS || 150);

function required(name) {
  const value = process.env[name];
  if (!value) {
    console.log(`FAIL setup: ${name} is not set`);
    process.exit(2);
  }
  return value;
}

let browser;
let peer;
const deadline = setTimeout(() => {
  console.log(`FAIL time: the check took longer than ${limitSeconds} s`);
  process.exit(1);
}, limitSeconds * 1000);

async function step(name, body) {
  try {
    const detail = await body();
    console.log(`PASS ${name}${detail ? `: ${detail}` : ""}`);
  } catch (error) {
    console.log(`FAIL ${name}: ${error.message}`);
    error.reported = true;
    throw error;
  }
}

function ensure(condition, message) {
  if (!condition) throw new Error(message);
}

async function admin(method, route, body) {
  const response = await fetch(new URL(route, hub), {
    method,
    headers: { authorization: `Bearer ${token}`, "content-type": "application/json" },
    body: body === undefined ? undefined : JSON.stringify(body),
  });
  const json = await response.json().catch(() => null);
  ensure(response.ok, `${method} ${route} answered ${response.status}: ${JSON.stringify(json)}`);
  return json;
}

// Job states no worker leaves (only an operator's replay does).
const FINAL = ["completed", "cancelled", "discarded"];

async function waitForJob(id, wanted, seconds) {
  const until = Date.now() + seconds * 1000;
  for (;;) {
    const job = await admin("GET", `/admin/jobs/${id}`);
    if (job.status === wanted) return job;
    ensure(!FINAL.includes(job.status), `job ${id} ended ${job.status}, not ${wanted}: ${job.last_error}`);
    ensure(Date.now() < until, `job ${id} is ${job.status}, not ${wanted}, after ${seconds} s`);
    await new Promise((r) => setTimeout(r, 200));
  }
}

/// A partner that refuses pings (HTTP 400, with markup in its answer) until `fixed`.
function startPeer() {
  const state = { fixed: false, requests: 0 };
  const server = http.createServer((req, res) => {
    state.requests += 1;
    req.resume();
    if (state.fixed) {
      res.writeHead(200).end("ok");
    } else {
      res.writeHead(400, { "content-type": "text/plain" }).end("<b>refused</b>");
    }
  });
  return new Promise((resolve) =>
    server.listen(0, "127.0.0.1", () => resolve({ server, state, url: `http://127.0.0.1:${server.address().port}/ping` })),
  );
}

async function main() {
  peer = await startPeer();
  let jobId;
  await step("a ping to a refusing peer fails permanently", async () => {
    jobId = (await admin("POST", "/admin/jobs/ping", { url: peer.url })).job_id;
    const job = await waitForJob(jobId, "discarded", 30);
    return `job ${jobId} discarded: ${job.last_error}`;
  });

  await step("Chromium starts headless", async () => {
    // Playwright gives every launch a fresh, temporary user-data-dir.
    browser = await chromium.launch({
      executablePath,
      headless: true,
      timeout: 60_000,
      args: [
        "--headless",
        "--no-sandbox",
        "--disable-gpu",
        "--disable-quic",
        "--no-first-run",
        "--disable-background-networking",
        "--disable-component-update",
        "--disable-sync",
      ],
    });
    return `version ${browser.version()}`;
  });

  await step("the dashboard asks a visitor without credentials to sign in", async () => {
    const context = await browser.newContext();
    const page = await context.newPage();
    const challenged = page.waitForResponse((r) => new URL(r.url()).pathname === "/admin/");
    // With no credentials to offer, Chromium gives up on the page after the challenge.
    const loaded = await page.goto(new URL("/admin/", hub).href).catch((e) => e);
    const response = await challenged;
    ensure(response.status() === 401, `answered ${response.status()}`);
    ensure(response.headers()["www-authenticate"]?.startsWith("Basic"), "no Basic challenge");
    await context.close();
    return loaded instanceof Error ? loaded.message.split("\n")[0] : `page status ${loaded.status()}`;
  });

  const context = await browser.newContext({ httpCredentials: { username: "ops", password: token } });
  const page = await context.newPage();
  page.setDefaultTimeout(20_000);
  const row = () => page.locator("#failed tr", { hasText: jobId });

  await step("signed in, the dashboard lists the queues and the discarded job with its error", async () => {
    const response = await page.goto(new URL("/admin/", hub).href);
    ensure(response.status() === 200, `answered ${response.status()}`);
    ensure((await page.title()) === "syncline jobs", `title is ${await page.title()}`);
    const queue = page.locator("#queues tr", { hasText: "demo.ping" });
    ensure((await queue.count()) === 1, "no demo.ping row in the queues table");
    ensure((await row().count()) === 1, "the discarded job is not listed");
    const text = await row().innerText();
    ensure(text.includes("discarded"), `row reads ${JSON.stringify(text)}`);
    // The peer's markup is shown as text, never rendered.
    ensure(text.includes("HTTP 400: <b>refused</b>"), `row reads ${JSON.stringify(text)}`);
    ensure((await page.locator("#failed b").count()) === 0, "the peer's markup was rendered");
    await page.screenshot({ path: path.join(outDir, "dashboard-failed.png"), fullPage: true });
    return text.replace(/\s+/g, " ").trim();
  });

  await step("its Replay button runs the job again, and the peer now accepts it", async () => {
    peer.state.fixed = true;
    await row().locator('input[name="reason"]').fill("peer fixed (browser check)");
    await Promise.all([
      page.waitForURL((url) => url.pathname === "/admin/"),
      row().getByRole("button", { name: "Replay" }).click(),
    ]);
    const job = await waitForJob(jobId, "completed", 30);
    const outcomes = job.attempt_history.map((a) => a.outcome);
    ensure(
      JSON.stringify(outcomes) === JSON.stringify(["discarded", "completed"]),
      `attempt history ${JSON.stringify(outcomes)}`,
    );
    ensure(peer.state.requests === 2, `the peer saw ${peer.state.requests} requests`);
    return `job ${jobId}: ${outcomes.join(" → ")}`;
  });

  await step("after the replay the dashboard no longer lists the job as discarded", async () => {
    await page.reload();
    ensure((await row().count()) === 0, "the job is still listed");
    await page.screenshot({ path: path.join(outDir, "dashboard-replayed.png"), fullPage: true });
    return `screenshots in ${outDir}`;
  });
}

let failed = false;
try {
  await main();
} catch (error) {
  if (!error.reported) console.log(`FAIL browser check: ${error.message}`);
  failed = true;
} finally {
  clearTimeout(deadline);
  await browser?.close().catch(() => {});
  peer?.server.close();
}
process.exit(failed ? 1 : 0);

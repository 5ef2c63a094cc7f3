#!/usr/bin/env node
// graphile-worker side of benches/run-all, modelled on graphile-worker's perfTest
// (perfTest/run.js, init.js, latencyTest.js in its repository).
//
//   node graphile.js drain --jobs N --processes P
//     Installs the schema, times P `graphile-worker --once` processes on the empty
//     queue (start-up and shut-down cost), queues N no-op jobs with one
//     graphile_worker.add_jobs call, then times P `--once` processes draining them.
//     jobs/s = N / (drain time - empty-queue time), as perfTest computes it.
//     (perfTest times one empty run; we time P in parallel, as the drain starts P.)
//
//   node graphile.js latency --samples N --load-rate R --warm-up W
//     One in-process worker (perfTest's latencyTest): after a warm-up of W jobs (100 in
//     perfTest), adds one job at a time on a connection of its own and waits for it to
//     start; the latency is the time from just before `add_job` to the task function
//     running. Done idle, then again while R jobs/s of other no-op jobs are added (in
//     batches every 50 ms).
//
// The database is DATABASE_URL's (a fresh one); GW_MODE (unbatched|batched) and
// GW_CONCURRENCY (per process; 24 as in perfTest unless given) are read by
// graphile.config.js. Prints one JSON object on stdout, with `setting` describing how
// it ran (mode, local queue, completion batching, processes × concurrency).

// As perfTest/run.js does: no log line per successful job (read when the library
// loads, here and in the CLI processes, which inherit it).
process.env.NO_LOG_SUCCESS = "1";

const { spawn } = require("node:child_process");
const path = require("node:path");
const { Pool } = require("pg");
const { Logger, run } = require("graphile-worker");
const preset = require("./graphile.config.js");

const CLI = require.resolve("graphile-worker/dist/cli.js");
const CONFIG = path.join(__dirname, "graphile.config.js");
const SETTLE_MS = 1000;
const PROBE_LIMIT_MS = 10_000;
const LOAD_PERIOD_MS = 50;

const sleep = (ms) => new Promise((resolve) => setTimeout(resolve, ms));
const nowMs = () => Number(process.hrtime.bigint()) / 1e6;

function options(argv) {
  const parsed = {};
  for (let i = 0; i < argv.length; i += 2) {
    const name = argv[i].replace(/^--/, "");
    const value = Number(argv[i + 1]);
    if (!Number.isInteger(value) || value < 0) {
      throw new Error(`--${name} needs a whole number, got ${argv[i + 1]}`);
    }
    parsed[name] = value;
  }
  return parsed;
}

/** Runs the graphile-worker CLI under /usr/bin/time; resolves to its peak RSS in KiB. */
function cli(args) {
  return new Promise((resolve, reject) => {
    const child = spawn("/usr/bin/time", ["-f", "peak_rss_kb=%M", process.execPath, CLI, "-C", CONFIG, ...args], {
      stdio: ["ignore", "pipe", "pipe"],
    });
    let output = "";
    child.stdout.on("data", (chunk) => (output += chunk));
    child.stderr.on("data", (chunk) => (output += chunk));
    child.on("error", reject);
    child.on("close", (code) => {
      const rss = /peak_rss_kb=(\d+)/.exec(output);
      if (code !== 0 || !rss) {
        reject(new Error(`graphile-worker ${args.join(" ")} exited with ${code}:\n${output}`));
      } else {
        resolve(Number(rss[1]));
      }
    });
  });
}

/** Wall time of `processes` parallel `--once` runs, and the largest peak RSS among them. */
async function once(processes) {
  const started = nowMs();
  const rss = await Promise.all(Array.from({ length: processes }, () => cli(["--once"])));
  return { ms: nowMs() - started, rssKb: Math.max(...rss) };
}

async function drain({ jobs, processes }) {
  await cli(["--schema-only"]);
  const empty = await once(processes);
  const pool = new Pool({ connectionString: process.env.DATABASE_URL, max: 1 });
  pool.on("error", (e) => console.error(`[pg pool] ${e.message}`));
  try {
    await pool.query(
      `SELECT 1 FROM graphile_worker.add_jobs(array(
         SELECT json_populate_record(null::graphile_worker.job_spec,
                  json_build_object('identifier', 'noop', 'payload', json_build_object('id', i)))
         FROM generate_series(1, $1::int) i))`,
      [jobs],
    );
    const full = await once(processes);
    const { rows } = await pool.query("SELECT count(*)::int AS left FROM graphile_worker._private_jobs");
    if (rows[0].left !== 0) {
      throw new Error(`${rows[0].left} of ${jobs} jobs were still queued after the drain`);
    }
    // A drain no longer than the empty run is lost in start-up noise (tiny smoke counts).
    const seconds = (full.ms - empty.ms) / 1000;
    return {
      setting: describe(`${processes} \`--once\` process${processes === 1 ? "" : "es"}`),
      jobs,
      processes,
      concurrency: preset.worker.concurrentJobs,
      local_queue_size: (preset.worker.localQueue || {}).size ?? null,
      complete_job_batch_delay_ms: preset.worker.completeJobBatchDelay ?? null,
      empty_run_ms: empty.ms,
      drain_run_ms: full.ms,
      jobs_per_s: seconds > 0 ? jobs / seconds : null,
      peak_rss_kb: full.rssKb,
    };
  } finally {
    await pool.end();
  }
}

/** How the workers were configured, in words, for the report's table. */
function describe(workers) {
  const w = preset.worker;
  const mode = process.env.GW_MODE || "unbatched";
  const queue = w.localQueue && w.localQueue.size > 0
    ? `local queue ${w.localQueue.size}` +
      (w.localQueue.refetchDelay ? ` (refetch delay ${w.localQueue.refetchDelay.durationMs} ms)` : "")
    : "no local queue";
  const completion = w.completeJobBatchDelay >= 0
    ? `completions batched (delay ${w.completeJobBatchDelay} ms)`
    : "one completion per job";
  return `${mode}: ${queue}, ${completion}; ${workers} × concurrency ${w.concurrentJobs}`;
}

class ProbeTimeout extends Error {}

/** Passes only warnings and errors on, to stderr: stdout carries the result. */
const quietLogger = new Logger(() => (level, message) => {
  if (level === "error" || level === "warning") console.error(`[graphile-worker] ${level}: ${message}`);
});

/** Nearest-rank percentile, as benches/support/mod.rs computes it. */
function percentile(sorted, p) {
  return sorted[Math.max(Math.ceil(p * sorted.length), 1) - 1];
}

function summary(latencies) {
  const sorted = [...latencies].sort((a, b) => a - b);
  return {
    samples: sorted.length,
    p50_ms: percentile(sorted, 0.5),
    p99_ms: percentile(sorted, 0.99),
    min_ms: sorted[0],
    max_ms: sorted[sorted.length - 1],
  };
}

async function latency({ samples, "load-rate": loadRate, "warm-up": warmUp }) {
  // Probes and load go through a pool of our own; the worker makes its own from the preset.
  const pool = new Pool({ connectionString: process.env.DATABASE_URL, max: 3 });
  pool.on("error", (e) => console.error(`[pg pool] ${e.message}`));
  const waiting = new Map();
  const runner = await run({
    preset,
    noHandleSignals: true,
    logger: quietLogger,
    taskList: {
      probe: async ({ id }) => {
        const probe = waiting.get(id);
        if (probe) probe.resolve(nowMs() - probe.added);
      },
      noop: async () => {},
    },
  });
  const client = await pool.connect();
  let probeId = 0;
  const probes = async (count) => {
    const latencies = [];
    for (let i = 0; i < count; i++) {
      const id = probeId++;
      const started = new Promise((resolve) => waiting.set(id, { resolve, added: nowMs() }));
      await client.query("SELECT graphile_worker.add_job('probe', json_build_object('id', $1::int))", [id]);
      let timer;
      const timedOut = new Promise((_, reject) => {
        timer = setTimeout(
          () => reject(new ProbeTimeout(`a probe did not start within ${PROBE_LIMIT_MS / 1000} s`)),
          PROBE_LIMIT_MS,
        );
      });
      latencies.push(await Promise.race([started, timedOut]));
      clearTimeout(timer);
      waiting.delete(id);
    }
    return latencies;
  };
  try {
    await probes(warmUp);
    await sleep(SETTLE_MS);
    const idle = summary(await probes(samples));

    const perBatch = Math.max(1, Math.round((loadRate * LOAD_PERIOD_MS) / 1000));
    let loading = true;
    let loaded = 0;
    const loadStarted = nowMs();
    const load = (async () => {
      while (loading) {
        const tick = nowMs();
        await pool.query(
          `SELECT 1 FROM graphile_worker.add_jobs(array(
             SELECT json_populate_record(null::graphile_worker.job_spec,
                      json_build_object('identifier', 'noop', 'payload', '{}'::json))
             FROM generate_series(1, $1::int)))`,
          [perBatch],
        );
        loaded += perBatch;
        await sleep(Math.max(0, LOAD_PERIOD_MS - (nowMs() - tick)));
      }
    })();
    await sleep(SETTLE_MS);
    let underLoad;
    try {
      underLoad = summary(await probes(samples));
    } catch (e) {
      // The worker fell behind the load: a finding to report, not a crash.
      if (!(e instanceof ProbeTimeout)) throw e;
      underLoad = { error: e.message };
    } finally {
      loading = false;
      await load;
    }
    const achieved = loaded / ((nowMs() - loadStarted) / 1000);
    return {
      setting: describe("1 in-process worker"),
      concurrency: preset.worker.concurrentJobs,
      idle,
      under_load: { ...underLoad, load_jobs_per_s: achieved },
    };
  } finally {
    client.release();
    await runner.stop();
    await pool.end();
  }
}

async function main() {
  const [command, ...rest] = process.argv.slice(2);
  const commands = { drain, latency };
  if (!commands[command]) {
    throw new Error("usage: graphile.js drain --jobs N --processes P | latency --samples N --load-rate R --warm-up W");
  }
  const result = await commands[command](options(rest));
  const version = require("graphile-worker/package.json").version;
  console.log(JSON.stringify({ engine: "graphile-worker", version, mode: process.env.GW_MODE || "unbatched", ...result }));
}

main().catch((e) => {
  console.error(e);
  process.exit(1);
});

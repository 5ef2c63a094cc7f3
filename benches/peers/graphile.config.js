// graphile-worker settings for benches/run-all, after graphile-worker's own
// perfTest/graphile.config.js: 24 concurrent jobs per process and a pool one larger.
// GW_MODE picks the job release path:
//   unbatched - the library defaults: one fetch and one completion round trip per job;
//   batched   - perfTest's batching: a local queue of 500 jobs per fetch and completions
//               flushed together (completeJobBatchDelay / failJobBatchDelay 0).
// DATABASE_URL names the (fresh) database; GW_CONCURRENCY overrides the concurrency.

const path = require("node:path");

const concurrency = Number(process.env.GW_CONCURRENCY || 24);
const modes = {
  unbatched: {
    localQueue: { size: -1 },
    completeJobBatchDelay: -1,
    failJobBatchDelay: -1,
  },
  batched: {
    localQueue: { size: 500, refetchDelay: { durationMs: 10 } },
    completeJobBatchDelay: 0,
    failJobBatchDelay: 0,
  },
};
const mode = process.env.GW_MODE || "unbatched";
if (!modes[mode]) {
  throw new Error(`GW_MODE must be one of ${Object.keys(modes).join(", ")}, not ${mode}`);
}
if (!process.env.DATABASE_URL) {
  throw new Error("DATABASE_URL must name the benchmark database");
}

/** @type {GraphileConfig.Preset} */
module.exports = {
  worker: {
    connectionString: process.env.DATABASE_URL,
    taskDirectory: path.join(__dirname, "tasks"),
    fileExtensions: [".js"],
    gracefulShutdownAbortTimeout: 2500,
    concurrentJobs: concurrency,
    maxPoolSize: concurrency + 1,
    ...modes[mode],
  },
};

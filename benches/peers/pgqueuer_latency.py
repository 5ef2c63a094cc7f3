"""pgqueuer's add->start latency for benches/run-all (pgqueuer's own benchmark tool
measures throughput only).

The method is graphile-worker's perfTest latency test, so the peers are measured alike:
one in-process PgQueuer (its defaults: asyncpg, batch size 10) is warmed up with
--warm-up jobs; then one job at a time is enqueued on a second connection and awaited, the
latency being the time from just before `enqueue` to the entrypoint running. Done
idle, then again while a third connection enqueues --load-rate jobs/s of other no-op
jobs (in batches every 50 ms).

The database comes from the libpq variables (PGHOST, PGPORT, PGUSER, PGDATABASE) and
must hold pgqueuer's schema. Prints one JSON object on stdout.
"""

import argparse
import asyncio
import json
import math
import time
from contextlib import suppress
from importlib.metadata import version

import asyncpg
from pgqueuer import AsyncpgDriver, Job, PgQueuer, Queries

SETTLE_S = 1.0
PROBE_LIMIT_S = 10.0
LOAD_PERIOD_S = 0.05
SHUTDOWN_LIMIT_S = 30.0


class ProbeTimeout(Exception):
    pass


def percentile(sorted_values: list[float], p: float) -> float:
    """Nearest-rank percentile, as benches/support/mod.rs computes it."""
    return sorted_values[max(math.ceil(p * len(sorted_values)), 1) - 1]


def summary(latencies: list[float]) -> dict[str, float]:
    ordered = sorted(latencies)
    return {
        "samples": len(ordered),
        "p50_ms": percentile(ordered, 0.50),
        "p99_ms": percentile(ordered, 0.99),
        "min_ms": ordered[0],
        "max_ms": ordered[-1],
    }


async def measure(samples: int, load_rate: int, warm_up: int) -> dict[str, object]:
    pgq = PgQueuer(AsyncpgDriver(await asyncpg.connect()))
    waiting: dict[int, tuple[asyncio.Future[float], float]] = {}

    @pgq.entrypoint("probe")
    async def probe(job: Job) -> None:
        entry = waiting.get(int(job.payload or b"-1"))
        if entry and not entry[0].done():
            entry[0].set_result((time.perf_counter() - entry[1]) * 1000)

    @pgq.entrypoint("noop")
    async def noop(job: Job) -> None:
        pass

    worker = asyncio.create_task(pgq.run())
    probes = Queries(AsyncpgDriver(await asyncpg.connect()))
    next_id = 0

    async def probe_run(count: int) -> list[float]:
        nonlocal next_id
        latencies = []
        for _ in range(count):
            probe_id, next_id = next_id, next_id + 1
            started: asyncio.Future[float] = asyncio.get_running_loop().create_future()
            waiting[probe_id] = (started, time.perf_counter())
            await probes.enqueue("probe", str(probe_id).encode())
            try:
                latencies.append(await asyncio.wait_for(started, PROBE_LIMIT_S))
            except TimeoutError:
                raise ProbeTimeout(f"a probe did not start within {PROBE_LIMIT_S:.0f} s") from None
            del waiting[probe_id]
        return latencies

    try:
        await probe_run(warm_up)
        await asyncio.sleep(SETTLE_S)
        idle = summary(await probe_run(samples))

        loader = Queries(AsyncpgDriver(await asyncpg.connect()))
        per_batch = max(1, round(load_rate * LOAD_PERIOD_S))
        loading = True
        loaded = 0

        async def load() -> None:
            nonlocal loaded
            while loading:
                tick = time.perf_counter()
                await loader.enqueue(["noop"] * per_batch, [None] * per_batch, [0] * per_batch)
                loaded += per_batch
                await asyncio.sleep(max(0.0, LOAD_PERIOD_S - (time.perf_counter() - tick)))

        load_started = time.perf_counter()
        load_task = asyncio.create_task(load())
        try:
            await asyncio.sleep(SETTLE_S)
            under_load = summary(await probe_run(samples))
        except ProbeTimeout as timeout:
            # The worker fell behind the load: a finding to report, not a crash.
            under_load = {"error": str(timeout)}
        finally:
            loading = False
            await load_task
        under_load["load_jobs_per_s"] = loaded / (time.perf_counter() - load_started)
        return {"idle": idle, "under_load": under_load}
    finally:
        pgq.shutdown.set()
        with suppress(asyncio.CancelledError):
            await asyncio.wait_for(worker, SHUTDOWN_LIMIT_S)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--samples", type=int, required=True)
    parser.add_argument("--load-rate", type=int, required=True)
    parser.add_argument("--warm-up", type=int, required=True)
    args = parser.parse_args()
    result = asyncio.run(measure(args.samples, args.load_rate, args.warm_up))
    print(json.dumps({"engine": "pgqueuer", "version": version("pgqueuer"), **result}))


if __name__ == "__main__":
    main()

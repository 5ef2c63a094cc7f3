"""Prints benches/run-all's one markdown table from the results folder it fills.

Usage: python3 report.py RESULTS_DIR

Reads (each optional, so a smoke run without the engine bench still reports):
  engine.txt                 the table `cargo bench --bench engine` printed
  syncline-work-*.json       `syncline work` drains (run-all writes them)
  graphile-<mode>-drain.json, graphile-<mode>-latency.json   (graphile.js)
  pgqueuer-drain-*.json      pgqueuer's benchmark tool's results, with its settings and
                             peak RSS (run-all writes them)
  pgqueuer-latency.json      (pgqueuer_latency.py)
Ratios are syncline ÷ peer: above 1 syncline drains faster; below 1 its latency is lower.
The syncline reference is its fastest `work` drain for jobs/s and the engine bench
for latency.
"""

import json
import sys
from pathlib import Path


def load(folder: Path, name: str) -> dict | None:
    path = folder / name
    return json.loads(path.read_text()) if path.exists() else None


def engine_bench(folder: Path) -> dict | None:
    """The fastest drain and the latency rows of `cargo bench --bench engine`'s table."""
    path = folder / "engine.txt"
    if not path.exists():
        return None
    rows = {}
    for line in path.read_text().splitlines():
        cells = [c.strip() for c in line.split("|")]
        if len(cells) == 6 and cells[1].isdigit():
            rows[cells[0]] = cells
    number = lambda cell: float(cell) if cell not in ("-", "") else None  # noqa: E731
    drains = [r for name, r in rows.items() if name.startswith("drain")]
    idle = next((r for name, r in rows.items() if "latency, idle" in name), None)
    loaded = next((r for name, r in rows.items() if "latency, under load" in name), None)
    if not drains or not idle or not loaded:
        raise SystemExit(f"{path}: no drain or latency rows found; did the engine bench's table change?")
    best = max(drains, key=lambda r: number(r[3]))
    return {
        "setting": f"`cargo bench --bench engine`, in-process; {best[0]}",
        "jobs": int(best[1]),
        "jobs_per_s": number(best[3]),
        "idle": {"p50_ms": number(idle[4]), "p99_ms": number(idle[5])},
        "under_load": {"p50_ms": number(loaded[4]), "p99_ms": number(loaded[5])},
    }


def fmt(value: float | None, digits: int = 0) -> str:
    if value is None:
        return "–"
    return f"{value:,.{digits}f}".replace(",", " ")


def latency_cells(latency: dict | None) -> list[str]:
    cells = []
    for phase in ("idle", "under_load"):
        found = (latency or {}).get(phase) or {}
        if "error" in found:
            cells += ["fell behind", "fell behind"]
        else:
            cells += [fmt(found.get("p50_ms"), 2), fmt(found.get("p99_ms"), 2)]
    return cells


def ratio(ours: float | None, theirs: float | None) -> str:
    if ours is None or theirs is None or theirs == 0:
        return "–"
    return f"{ours / theirs:.2f}"


def main() -> None:
    folder = Path(sys.argv[1])
    header = [
        "engine",
        "how it ran",
        "jobs",
        "jobs/s",
        "p50 idle ms",
        "p99 idle ms",
        "p50 load ms",
        "p99 load ms",
        "peak RSS MiB",
        "÷ jobs/s",
        "÷ p50 idle",
        "÷ p99 idle",
    ]
    rows = []
    notes = []

    runs = sorted(folder.glob("syncline-work-*.json"), key=lambda p: p.stat().st_mtime)
    works = [load(folder, p.name) for p in runs]
    for work in works:
        rows.append(
            ["syncline", work["setting"], fmt(work["jobs"]), fmt(work["jobs_per_s"]), *["–"] * 4,
             fmt(work["peak_rss_kb"] / 1024, 1), "", "", ""]
        )
    engine = engine_bench(folder)
    if engine:
        rows.append(
            ["syncline", engine["setting"], fmt(engine["jobs"]), fmt(engine["jobs_per_s"]),
             *latency_cells(engine), "–", "", "", ""]
        )
    our_rate = max((w["jobs_per_s"] for w in works), default=None)
    our_idle = (engine or {}).get("idle", {})

    def peer(name: str, setting: str, drain: dict | None, latency: dict | None, rss_kb: float | None,
             label: str) -> None:
        rate = (drain or {}).get("jobs_per_s")
        idle = (latency or {}).get("idle") or {}
        rows.append(
            [name, setting, fmt((drain or {}).get("jobs")), fmt(rate), *latency_cells(latency),
             fmt(rss_kb / 1024, 1) if rss_kb else "–", ratio(our_rate, rate),
             ratio(our_idle.get("p50_ms"), idle.get("p50_ms")),
             ratio(our_idle.get("p99_ms"), idle.get("p99_ms"))]
        )
        load_rate = ((latency or {}).get("under_load") or {}).get("load_jobs_per_s")
        if load_rate is not None:
            notes.append(f"{label}: background load during the latency probes {load_rate:.0f} jobs/s")

    for mode in ("unbatched", "batched"):
        drain = load(folder, f"graphile-{mode}-drain.json")
        latency = load(folder, f"graphile-{mode}-latency.json")
        if drain or latency:
            info = drain or latency
            setting = f"{mode}, {info.get('processes', '?')} processes × {info.get('concurrency', 24)} concurrent"
            name = f"graphile-worker {info['version']}"
            peer(name, setting, drain, latency, (drain or {}).get("peak_rss_kb"), f"{name} {mode}")

    # Latency was measured once, with PgQueuer's defaults (batch 10): shown on the first drain's row.
    latency = load(folder, "pgqueuer-latency.json")
    drains = sorted(folder.glob("pgqueuer-drain-*.json"), key=lambda p: p.stat().st_mtime)
    for index, path in enumerate(drains):
        drain = load(folder, path.name)
        name = f"pgqueuer {drain['version']}"
        setting = f"its benchmark tool, drain, {drain['dequeue']} dequeuers × batch {drain['batch']}"
        peer(name, setting, drain, latency if index == 0 else None, drain["peak_rss_kb"], name)

    print("| " + " | ".join(header) + " |")
    print("| " + " | ".join(["---"] * 2 + ["---:"] * (len(header) - 2)) + " |")
    for row in rows:
        print("| " + " | ".join(row) + " |")
    print()
    print(
        "÷ columns: syncline ÷ peer (jobs/s: syncline's fastest `work` drain; latency: the engine "
        "bench's idle figures). Above 1 on jobs/s, or below 1 on latency, favours syncline."
    )
    print(
        "Latency: syncline's engine bench times a probe from its row's run_at to its first attempt's "
        "start (probes 20 ms apart); the peers time it in the process from just before adding the job "
        "to the task running, one probe at a time (graphile-worker's perfTest method). "
        "'fell behind': a probe waited over 10 s because the worker could not keep up with the load."
    )
    print(
        "Peak RSS: syncline `work`'s VmHWM; graphile-worker: the larger of its `--once` processes; "
        "pgqueuer: its benchmark tool's process, which also enqueued the jobs."
    )
    for note in notes:
        print(note)


if __name__ == "__main__":
    main()

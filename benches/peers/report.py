"""Prints benches/run-all's markdown tables from the results folder it fills.

Usage: python3 report.py RESULTS_DIR

Reads (each optional, so a smoke run without the engine bench still reports):
  drain-NN-KEY-rR.json   one drain: setting NN (run order) with key KEY (e.g.
                         syncline-32x32, graphile-batched-2x24, pgqueuer-5x10), run R;
                         fields engine, version (peers), setting, jobs, jobs_per_s (null
                         when not measurable), peak_rss_kb
  latency-KEY.json       add→start latency (idle, under_load), shown on drain KEY's row
  engine.txt             the table `cargo bench --bench engine` printed
Each drain setting's row shows the MEDIAN jobs/s of its runs, their min–max, and the
largest peak RSS of its runs. Ratios are syncline ÷ peer: above 1 syncline drains faster;
below 1 its latency is lower. The syncline reference is its best `work` setting (highest
median) for jobs/s and its `work` latency (else the engine bench's) for latency. Then each
engine's best setting, and syncline best ÷ each peer's best.
"""

import json
import re
import statistics
import sys
from pathlib import Path

DRAIN = re.compile(r"^drain-(\d+)-(.+)-r(\d+)\.json$")
LATENCY = re.compile(r"^latency-(.+)\.json$")


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
        "setting": f"`cargo bench --bench engine`, in-process, one run; {best[0]}",
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


class Setting:
    """One drain setting: its runs, summarised."""

    def __init__(self, order: int, key: str):
        self.order = order
        self.key = key
        self.runs: list[dict] = []
        self.latency: dict | None = None

    @property
    def first(self) -> dict:
        return self.runs[0]

    @property
    def engine(self) -> str:
        return self.first["engine"]

    @property
    def name(self) -> str:
        version = self.first.get("version")
        return f"{self.engine} {version}" if version else self.engine

    @property
    def rates(self) -> list[float]:
        return sorted(r["jobs_per_s"] for r in self.runs if r.get("jobs_per_s") is not None)

    @property
    def median(self) -> float | None:
        return statistics.median(self.rates) if self.rates else None

    @property
    def spread(self) -> str:
        rates = self.rates
        return f"{fmt(rates[0])}–{fmt(rates[-1])}" if rates else "–"

    @property
    def runs_cell(self) -> str:
        measured = len(self.rates)
        return str(measured) if measured == len(self.runs) else f"{measured} of {len(self.runs)}"

    @property
    def peak_rss_mib(self) -> float | None:
        values = [r["peak_rss_kb"] for r in self.runs if r.get("peak_rss_kb")]
        return max(values) / 1024 if values else None


def main() -> None:
    folder = Path(sys.argv[1])
    settings: dict[str, Setting] = {}
    for path in folder.glob("drain-*.json"):
        match = DRAIN.match(path.name)
        if not match:
            continue
        order, key = int(match[1]), match[2]
        settings.setdefault(key, Setting(order, key)).runs.append(json.loads(path.read_text()))
    ordered = sorted(settings.values(), key=lambda s: s.order)
    latencies = {}
    for path in folder.glob("latency-*.json"):
        key = LATENCY.match(path.name)[1]
        latency = json.loads(path.read_text())
        if key in settings:
            settings[key].latency = latency
        else:
            latencies[key] = latency
    engine = engine_bench(folder)

    # The references: syncline's best `work` setting, and its latency.
    best: dict[str, Setting] = {}
    for setting in ordered:
        if setting.median is None:
            continue
        if setting.engine not in best or setting.median > best[setting.engine].median:
            best[setting.engine] = setting
    ours = best.get("syncline")
    our_rate = ours.median if ours else None
    our_latency = next((s.latency for s in ordered if s.engine == "syncline" and s.latency), None)
    our_latency = our_latency or engine
    our_idle = ((our_latency or {}).get("idle")) or {}

    header = [
        "engine",
        "how it ran",
        "jobs",
        "runs",
        "median jobs/s",
        "min–max jobs/s",
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
    for setting in ordered:
        syncline = setting.engine == "syncline"
        idle = ((setting.latency or {}).get("idle")) or {}
        how = setting.first["setting"]
        if setting is best.get(setting.engine):
            how += " **(best)**"
        rows.append(
            [setting.name, how, fmt(setting.first.get("jobs")), setting.runs_cell, fmt(setting.median),
             setting.spread, *latency_cells(setting.latency), fmt(setting.peak_rss_mib, 1),
             "" if syncline else ratio(our_rate, setting.median),
             "" if syncline else ratio(our_idle.get("p50_ms"), idle.get("p50_ms")),
             "" if syncline else ratio(our_idle.get("p99_ms"), idle.get("p99_ms"))]
        )
        if setting.latency:
            notes.append((setting.name, setting.latency))
    for key, latency in sorted(latencies.items()):
        # Latency without a drain row of the same setting: a row of its own.
        name = latency.get("engine", key) + (f" {latency['version']}" if latency.get("version") else "")
        idle = latency.get("idle") or {}
        syncline = latency.get("engine") == "syncline"
        rows.append(
            [name, latency.get("setting", key) + " (latency only)", "", "", "–", "–",
             *latency_cells(latency), "–", "",
             "" if syncline else ratio(our_idle.get("p50_ms"), idle.get("p50_ms")),
             "" if syncline else ratio(our_idle.get("p99_ms"), idle.get("p99_ms"))]
        )
        notes.append((name, latency))
    if engine:
        rows.append(
            ["syncline", engine["setting"], fmt(engine["jobs"]), "1", fmt(engine["jobs_per_s"]), "–",
             *latency_cells(engine), "–", "", "", ""]
        )

    print("| " + " | ".join(header) + " |")
    print("| " + " | ".join(["---"] * 2 + ["---:"] * (len(header) - 2)) + " |")
    for row in rows:
        print("| " + " | ".join(row) + " |")
    print()

    # Each engine's best setting, and the headline ratios.
    print("Best setting per engine (highest median jobs/s):")
    print()
    print("| engine | best setting | runs | median jobs/s | min–max jobs/s | peak RSS MiB | syncline best ÷ this |")
    print("| --- | --- | ---: | ---: | ---: | ---: | ---: |")
    for setting in sorted(best.values(), key=lambda s: s.order):
        print(
            f"| {setting.name} | {setting.first['setting']} | {setting.runs_cell} | {fmt(setting.median)} | "
            f"{setting.spread} | {fmt(setting.peak_rss_mib, 1)} | "
            f"{'' if setting is ours else ratio(our_rate, setting.median)} |"
        )
    print()
    for peer in sorted(best.values(), key=lambda s: s.order):
        if peer is ours:
            continue
        if ours is None:
            print(f"**syncline best ÷ {peer.engine} best: –** (no syncline drain measured)")
            continue
        print(
            f"**syncline best ÷ {peer.engine} best = {our_rate / peer.median:.2f}×** "
            f"({fmt(our_rate)} ÷ {fmt(peer.median)} median jobs/s; syncline: {ours.first['setting']}; "
            f"{peer.engine}: {peer.first['setting']}. Over single runs: from "
            f"{ours.rates[0] / peer.rates[-1]:.2f}× (syncline's slowest run ÷ the peer's fastest) to "
            f"{ours.rates[-1] / peer.rates[0]:.2f}× (syncline's fastest ÷ the peer's slowest).)"
        )
        print()
    for engine_name in sorted({s.engine for s in ordered} - set(best)):
        print(f"**{engine_name}: no drain measurable** (every run's jobs/s was null)")
        print()

    print(
        "Medians: each drain setting ran the number of times in `runs`, each on a fresh database, "
        "in rounds (every setting once per round); min–max are the fastest and slowest runs; peak "
        "RSS is the largest of its runs. ÷ columns: syncline ÷ peer (jobs/s: syncline's best "
        "median `work` drain; latency: syncline's idle figures"
        + (" from `syncline work`" if our_latency is not engine else " from the engine bench")
        + "). Above 1 on jobs/s, or below 1 on latency, favours syncline."
    )
    print(
        "Latency (measured once per engine, on the row of the setting it ran at): syncline times a "
        "probe from its row's run_at to its first attempt's start (probes 20 ms apart, as the engine "
        "bench); the peers time it in the process from just before adding the job to the task running, "
        "one probe at a time (graphile-worker's perfTest method). 'fell behind': probes were not done "
        "within 10 s because the worker could not keep up with the load."
    )
    print(
        "jobs/s: syncline `work` from its start to the last job done; graphile-worker: jobs ÷ (drain "
        "run − empty-queue run) of its `--once` processes, as perfTest; pgqueuer: its tool's rate. "
        "Peak RSS: syncline `work`'s VmHWM; graphile-worker: the larger of its `--once` processes; "
        "pgqueuer: its benchmark tool's process, which also enqueued the jobs."
    )
    for name, latency in notes:
        load_rate = ((latency or {}).get("under_load") or {}).get("load_jobs_per_s")
        if load_rate is not None:
            how = f" ({latency['setting']})" if latency.get("setting") else ""
            print(f"{name}{how}: background load during the latency probes {load_rate:.0f} jobs/s")


if __name__ == "__main__":
    main()

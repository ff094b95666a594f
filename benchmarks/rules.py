"""Benchmark: the rules engine on a large town, and a whole season's backtest.

    .venv/bin/python -m benchmarks.rules [--meters 10000] [--stations 100] [--plows 50]
        [--night-h 8] [--skip-season]

1. A synthetic town (registry CSVs: N meters, K stations, P plows on the sample town's
   roads) and a day of its data in a private InfluxDB 1.x: 24 hourly registers per
   meter (a tenth of them daily uploaders), 10-minute snow readings, and a working
   night of 1 Hz plow positions with the blade down. Then, as the service lives it:
   - first evaluation: the whole window from an empty state in one cycle (plow
     look-back stretched over the night), in a child process;
   - cold start: a new process with that state re-reads the window (default
     look-backs), against the bare query of the same window;
   - steady cycles with nothing new, and cycles each seeing a typical minute of a town
     (1/60 of the hourly meters, every plow at 1 Hz, a tenth of the stations, one
     daily upload of 24 hours).
   Data generation, the baselines and the first evaluation run in forked children, so
   the peak RSS printed last is the service's own.
2. The winter-season scenario (sample town, 1 Dec – 31 Mar) through ingest's processor
   into InfluxDB, then a backtest over the whole season at a 10-minute step: data
   loaded once, evaluated incrementally.

Figures are wall seconds on a shared machine; CPU seconds (the engine's and influxd's)
are printed beside them. Last line:
``rules cycle: <cold> s cold, <steady> s steady, <rss> MB for <M> meters, <K> stations, <P> plows``.
"""

from __future__ import annotations

import argparse
import json
import multiprocessing as mp
import os
import queue
import resource
import sys
import tempfile
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from core.config import Config, InfluxConfig, load_config, load_registry
from core.influxql import InfluxQuery
from devtools.localstack import InfluxDB1
from devtools.rulelab import load_scenario_into, run_backtest
from rules.config import RulesConfig, with_settings
from rules.engine import Engine, warm_up
from rules.families import FAMILIES
from rules.model import DAY_MS, HOUR_MS, MINUTE_MS
from rules.sources import LiveSource, query_frame
from rules.state import MemoryState, SqliteState
from sensors.registry import Registry

ROOT = Path(__file__).resolve().parents[1]
SAMPLE = ROOT / "config" / "yukimizu.toml"
T_END = 1_768_435_200_000  # 2026-01-15T00:00Z = 09:00 JST: the morning after


def peak_rss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def write_registry(d: Path, meters: int, stations: int, plows: int) -> Path:
    """Registry CSVs for a town of the given size, on the sample town's roads."""
    rng = np.random.default_rng(7)
    d.mkdir(parents=True, exist_ok=True)
    districts = ["本町", "中町", "上町", "下町", "新町", "東町", "西町", "北町"]
    lat = rng.uniform(38.36, 38.40, max(meters, stations))
    lon = rng.uniform(140.17, 140.23, max(meters, stations))
    with (d / "stations.csv").open("w", encoding="utf-8") as f:
        f.write("id,name,district,lat,lon,mount_height_cm,sensor_type,dev_eui\n")
        for i in range(stations):
            kind = "laser" if i % 5 == 0 else "ultrasonic"
            f.write(
                f"S{i:04d},観測点{i},{districts[i % 8]},{lat[i]:.6f},{lon[i]:.6f},300,{kind},\n"
            )
    with (d / "meters.csv").open("w", encoding="utf-8") as f:
        f.write(
            "id,district,lat,lon,diameter_mm,q3_m3h,register_digits,register_unit,watched,dev_eui\n"
        )
        for i in range(meters):
            watched = "true" if i % 50 == 0 else "false"
            f.write(
                f"W{i:05d},{districts[i % 8]},{lat[i]:.6f},{lon[i]:.6f},13,2.5,7,L,{watched},\n"
            )
    with (d / "plows.csv").open("w", encoding="utf-8") as f:
        f.write("id,name,contractor,dev_eui\n")
        for i in range(plows):
            f.write(f"V{i:03d},除雪{i}号車,業者{i % 5},\n")
    (d / "routes.geojson").write_bytes((ROOT / "config" / "routes.geojson").read_bytes())
    return d


def town_lines(registry: Registry, night_h: float) -> dict[str, list[str]]:
    """A day of data for the synthetic town (line protocol, ms)."""
    rng = np.random.default_rng(11)
    start = T_END - 24 * HOUR_MS
    out: dict[str, list[str]] = {"water_meter": [], "snow_depth": [], "plow_position": []}
    for n, m in enumerate(registry.meters.values()):
        use = rng.gamma(0.6, 25.0, 25)
        use[3:6] = 0.0  # night: no use (leaks are the exception)
        if n % 97 == 0:
            use += 20.0  # a leak
        reg = 100_000.0 + np.cumsum(use)
        daily = n % 10 == 0
        for h in range(25):
            t = start + h * HOUR_MS
            lag = (T_END + 2 * HOUR_MS - t) / 1000 if daily else 5.0
            if daily and t > T_END:
                continue
            out["water_meter"].append(
                f"water_meter,device={m.id},district={m.district} "
                f"register_l={reg[h]:.1f},lag_s={lag:.1f} {t}"
            )
    for s in registry.stations.values():
        depth = 60.0
        for step in range(24 * 6):
            t = start + step * 600_000
            depth += 0.25 if 12 * 6 <= step < 20 * 6 else -0.01
            noisy = depth + rng.uniform(-3, 3)
            out["snow_depth"].append(
                f"snow_depth,device={s.id},district={s.district} depth_cm={noisy:.1f},"
                f"air_temp_c=-3.0,quality=80i,battery_v=3.6,lag_s=2.0 {t}"
            )
    routes = list(registry.routes.values())
    night_start = T_END - int(night_h * HOUR_MS)
    for i, p in enumerate(registry.plows.values()):
        coords = [c for r in routes[i % len(routes) :: 7] for c in r.coords] or [(140.2, 38.38)]
        path = np.array(coords)
        seg = np.linspace(0, len(path) - 1, int(night_h * 3600))
        idx = np.floor(seg).astype(int)
        frac = seg - idx
        k2 = np.minimum(idx + 1, len(path) - 1)
        lon = path[idx, 0] + (path[k2, 0] - path[idx, 0]) * frac
        lat = path[idx, 1] + (path[k2, 1] - path[idx, 1]) * frac
        for j in range(len(seg)):
            out["plow_position"].append(
                f"plow_position,device={p.id},contractor={p.contractor} lat={lat[j]:.6f},"
                f"lon={lon[j]:.6f},speed_kmh=20.0,blade_down=true,lag_s=1.0 "
                f"{night_start + j * 1000}"
            )
    return out


def town_config(work: Path, args: argparse.Namespace) -> Config:
    reg_dir = write_registry(work / "town", args.meters, args.stations, args.plows)
    cfg = load_config(SAMPLE, environ={})
    return cfg.model_copy(
        update={
            "registry": cfg.registry.model_copy(
                update={
                    "stations": reg_dir / "stations.csv",
                    "meters": reg_dir / "meters.csv",
                    "plows": reg_dir / "plows.csv",
                    "routes": reg_dir / "routes.geojson",
                    # the sample town's work zones name its plows, not this town's
                    "zones": None,
                }
            )
        }
    )


def minute_lines(registry: Registry, k: int) -> tuple[int, list[str]]:
    """The ``k``-th minute (k ≥ 1) after 10:00 JST of a typical town: 1/60 of the
    hourly meters' 10:00 readings, 1 Hz positions of every plow, a tenth of the stations
    (10-minute readings), and one daily uploader's batch of 24 hours. Returns the
    cycle time that first sees them, and the lines."""
    t_hour = T_END + HOUR_MS
    start = t_hour + (k - 1) * MINUTE_MS
    now = start + MINUTE_MS
    rng = np.random.default_rng(100 + k)
    out: list[str] = []
    meters = list(registry.meters.values())
    hourly = [m for n, m in enumerate(meters) if n % 10 != 0]
    daily = [m for n, m in enumerate(meters) if n % 10 == 0]
    share = len(hourly) // 60
    for m in hourly[(k - 1) * share : k * share]:
        lag = (start - t_hour) / 1000 + rng.uniform(0, 60)
        out.append(
            f"water_meter,device={m.id},district={m.district} "
            f"register_l={100_400.0 + rng.uniform(0, 50):.1f},lag_s={lag:.1f} {t_hour}"
        )
    up = daily[k % len(daily)] if daily else None
    if up is not None:
        for h in range(24):
            t = T_END - 23 * HOUR_MS + h * HOUR_MS
            out.append(
                f"water_meter,device={up.id},district={up.district} "
                f"register_l={100_000.0 + 10 * h:.1f},lag_s={(start + 30_000 - t) / 1000:.1f} {t}"
            )
    stations = list(registry.stations.values())
    for s in stations[(k - 1) % 10 :: 10]:
        out.append(
            f"snow_depth,device={s.id},district={s.district} depth_cm=62.0,"
            f"air_temp_c=-2.0,quality=80i,battery_v=3.6,lag_s=2.0 {start + 30_000}"
        )
    routes = list(registry.routes.values())
    for i, p in enumerate(registry.plows.values()):
        coords = routes[i % len(routes)].coords if routes else [(140.2, 38.38)]
        for j in range(60):
            lon, lat = coords[(k * 60 + j) % len(coords)]
            out.append(
                f"plow_position,device={p.id},contractor={p.contractor} lat={lat:.6f},"
                f"lon={lon:.6f},speed_kmh=15.0,blade_down=true,lag_s=1.0 {start + j * 1000}"
            )
    return now, out


def _in_child(fn: Callable[..., Any], *args: Any) -> Any:
    """Run ``fn`` in a forked process (its memory is not this process's peak RSS)."""
    ctx = mp.get_context("fork")
    q: mp.Queue[Any] = ctx.Queue()
    proc = ctx.Process(target=lambda: q.put(fn(*args)))
    proc.start()
    while True:
        try:
            result = q.get(timeout=1.0)
            break
        except queue.Empty:
            if not proc.is_alive():
                raise RuntimeError(f"{fn.__name__} failed in its child process") from None
    proc.join()
    return result


def _write_town(cfg: Config, influx: InfluxDB1, night_h: float) -> tuple[int, float]:
    t0 = time.perf_counter()
    lines = town_lines(load_registry(cfg), night_h)
    influx.create_database("town")
    total = 0
    for batch in lines.values():
        for i in range(0, len(batch), 50_000):
            influx.write(batch[i : i + 50_000], "town")
        total += len(batch)
    return total, time.perf_counter() - t0


def _bare_query(client: InfluxQuery, inputs: dict[str, tuple[str, ...]], rcfg: RulesConfig) -> Any:
    """The baseline: only querying the window, as any engine reading InfluxDB must."""
    q0 = time.perf_counter()
    rows = 0
    for m, fields in inputs.items():
        rows += len(query_frame(client, m, fields, T_END - rcfg.lookback_ms(m), T_END))
    return rows, time.perf_counter() - q0, peak_rss_mb()


def _bare_period(
    client: InfluxQuery, inputs: dict[str, tuple[str, ...]], start_ms: int
) -> tuple[int, float, float]:
    """The baseline of a first start: querying its whole period, one request a
    measurement. Rows, wall s, CPU-s of this process."""
    q0, c0 = time.perf_counter(), time.process_time()
    rows = sum(len(query_frame(client, m, f, start_ms, T_END)) for m, f in inputs.items())
    return rows, time.perf_counter() - q0, time.process_time() - c0


def _first_start(
    registry: Registry, rcfg: RulesConfig, client: InfluxQuery, state: Path
) -> dict[str, Any]:
    """What ``rules run`` does on its first start: an empty state catches up on
    ``rules.warmup_days`` of history (rules.engine.warm_up), derived lines kept."""
    t0 = time.perf_counter()
    c0 = time.process_time()
    engine = Engine(registry, rcfg, SqliteState(state), FAMILIES)
    res = warm_up(engine, client, T_END, keep_lines=True)
    engine.state.close()
    return {
        "seconds": time.perf_counter() - t0,
        "cpu_s": time.process_time() - c0,
        "steps": res.steps,
        "points": res.points_read,
        "transitions": len(res.transitions),
        "lines": len(res.lines),
        "wait_s": res.read_wait_s,
        "rss": peak_rss_mb(),
    }


def _first_evaluation(
    registry: Registry, rcfg: RulesConfig, client: InfluxQuery, state: Path
) -> dict[str, Any]:
    """A town's window evaluated from an empty state in one cycle (state saved)."""
    engine = Engine(registry, rcfg, SqliteState(state), FAMILIES)
    c0 = time.process_time()
    res = engine.cycle(T_END, LiveSource(client), emit_after_ms=T_END - 36 * HOUR_MS)
    engine.state.close()
    return {
        "seconds": res.seconds,
        "cpu_s": time.process_time() - c0,
        "read_s": res.read_s,
        "family_s": res.family_s,
        "points": res.points_read,
        "transitions": len(res.transitions),
        "derived": len(res.points),
        "rss": peak_rss_mb(),
    }


def influx_cpu_s(influx: InfluxDB1) -> float:
    """CPU seconds influxd has used so far (user + system)."""
    fields = Path(f"/proc/{influx.pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


@dataclass
class CycleFigures:
    first_s: float  # the service's first start (empty state, warm-up)
    first_ratio: float  # … against the bare query of its period
    cold_s: float  # a restart with state
    steady_s: float
    minute_s: float
    rss_mb: float


def print_per_device_hour(registry: Registry, night_h: float, family_s: dict[str, float]) -> None:
    device_h = {
        "water": len(registry.meters) * 24,
        "snow": len(registry.stations) * 24,
        "plow": len(registry.plows) * night_h,
    }
    print(
        "  per 1,000 device-hours (wall s, first evaluation): "
        + ", ".join(
            f"{k} {family_s[k] / device_h[k] * 1000:.3f} s"
            for k in device_h
            if device_h[k] and k in family_s
        )
    )


def bench_first_start(
    registry: Registry, live_cfg: RulesConfig, client: InfluxQuery, influx: InfluxDB1, work: Path
) -> tuple[float, float]:
    """The first start's wall seconds, and their ratio to the bare query of its period."""
    # The service's first start: empty state, rules.warmup_days of history replayed at
    # 10-minute steps, read in chunks while evaluating. Between two bare queries of its
    # period (this machine's load drifts).
    warm_start = T_END - int(live_cfg.warmup_days * DAY_MS)
    live_inputs = Engine(registry, live_cfg, MemoryState(), FAMILIES).inputs
    c0 = influx_cpu_s(influx)
    before = _in_child(_bare_period, client, live_inputs, warm_start)
    c1 = influx_cpu_s(influx)
    fs = _in_child(_first_start, registry, live_cfg, client, work / "first.sqlite")
    fs_influx = influx_cpu_s(influx) - c1
    bare_influx = c1 - c0
    after = _in_child(_bare_period, client, live_inputs, warm_start)
    bare_period_s = (before[1] + after[1]) / 2
    first_ratio = fs["seconds"] / bare_period_s
    print(
        f"first start (empty state: {live_cfg.warmup_days:g} days of history caught up in "
        f"{fs['steps']:,} steps, what `rules run` does): {fs['seconds']:.2f} s, "
        f"{fs['cpu_s']:.1f} CPU-s + influxd {fs_influx:.1f} CPU-s ({fs['points']:,} points, "
        f"{fs['transitions']} transitions, {fs['lines']:,} derived lines; peak RSS of that "
        f"process {fs['rss']:.0f} MB) against the bare query of its period ({before[0]:,} "
        f"points) {before[1]:.2f} s before, {after[1]:.2f} s after: {first_ratio:.2f}x"
    )
    print(
        f"  CPU: first start {fs['cpu_s']:.1f} + influxd {fs_influx:.1f} = "
        f"{fs['cpu_s'] + fs_influx:.1f} CPU-s; bare query {before[2]:.1f} + influxd "
        f"{bare_influx:.1f} = {before[2] + bare_influx:.1f} CPU-s; the replay waited "
        f"{fs['wait_s']:.1f} s for reads (the rest of them overlapped its evaluation)"
    )
    return fs["seconds"], first_ratio


def bench_cycle(args: argparse.Namespace, work: Path, influx: InfluxDB1) -> CycleFigures:
    cfg = town_config(work, args)
    registry = load_registry(cfg)
    total, write_s = _in_child(_write_town, cfg, influx, args.night_h)
    print(
        f"town: {len(registry.meters):,} meters, {len(registry.stations)} stations, "
        f"{len(registry.plows)} plows; {total:,} points written in {write_s:.1f} s"
    )
    # A long read timeout: the first evaluation's window of a large town is one answer.
    client = InfluxQuery(
        InfluxConfig(url=influx.url, database="town", create_database=False, timeout_s=300)
    )
    # The first evaluation counts the night's plow positions (all inside its window);
    # the service after it runs with the default look-backs (plows 1 h).
    rcfg = with_settings(cfg, [f"lookback_h_by_measurement.plow_position={args.night_h + 1}"])
    live_cfg = with_settings(cfg)
    inputs = Engine(registry, rcfg, MemoryState(), FAMILIES).inputs
    bare = [_in_child(_bare_query, client, inputs, rcfg) for _ in range(2)]
    rows, first_query_s = bare[0][0], min(b[1] for b in bare)
    print(
        f"baseline: querying the first evaluation's window ({rows:,} points) alone: "
        f"{first_query_s:.2f} s (best of 2; peak RSS of that process {bare[0][2]:.0f} MB)"
    )
    state = work / "rules.sqlite"
    first = _in_child(_first_evaluation, registry, rcfg, client, state)
    fam = ", ".join(f"{k} {v:.2f}" for k, v in first["family_s"].items())
    print(
        f"first evaluation (empty state, whole window in one cycle): {first['seconds']:.2f} s, "
        f"{first['cpu_s']:.1f} CPU-s ({first['points']:,} points, {first['transitions']} "
        f"transitions, {first['derived']:,} derived points); read {first['read_s']:.2f} s, "
        f"families s: {fam}; peak RSS of that process {first['rss']:.0f} MB"
    )
    print_per_device_hour(registry, args.night_h, first["family_s"])
    first_s, first_ratio = bench_first_start(registry, live_cfg, client, influx, work)
    # A restart: the state is there, the process is new: the window is read once.
    # Paired with the bare query of the same window right before it (this machine's
    # load drifts), three times.
    colds, ratios = [], []
    for i in range(3):
        rows, query_s, bare_rss = _in_child(_bare_query, client, inputs, live_cfg)
        t0 = time.perf_counter()
        engine = Engine(registry, live_cfg, SqliteState(state), FAMILIES)
        load_s = time.perf_counter() - t0
        source = LiveSource(client)
        res = engine.cycle(T_END + (i + 1) * MINUTE_MS, source)
        colds.append(load_s + res.seconds)
        ratios.append((load_s + res.seconds) / query_s)
        print(
            f"cold start {i + 1} (restart with state): {load_s + res.seconds:.2f} s "
            f"(state loaded {load_s:.2f} s, window read {res.read_s:.2f} s, "
            f"{res.points_read:,} points kept) against the bare query of the service's window "
            f"({rows:,} points, default look-backs) {query_s:.2f} s: {ratios[-1]:.2f}x "
            f"(peak RSS of the bare query's process {bare_rss:.0f} MB)"
        )
        if i < 2:
            engine.state.close()
    print(f"cold start: median {np.median(colds):.2f} s, {np.median(ratios):.2f}x the bare query")
    cold = float(np.median(colds))
    steady = []
    for k in range(4, 7):
        c0 = influx_cpu_s(influx)
        res = engine.cycle(T_END + k * MINUTE_MS, source)
        steady.append(res.seconds)
        print(
            f"steady cycle, nothing new: {res.seconds:.3f} s (read {res.read_s:.3f} s, "
            f"{res.points_read} points; influxd {influx_cpu_s(influx) - c0:.2f} CPU-s)"
        )
    minute = []
    cpu_engine = cpu_influx = 0.0
    for k in range(1, 4):
        now, lines = minute_lines(registry, k)
        influx.write(lines, "town")
        c0, p0 = influx_cpu_s(influx), time.process_time()
        res = engine.cycle(now, source)
        minute.append(res.seconds)
        cpu_engine += time.process_time() - p0
        cpu_influx += influx_cpu_s(influx) - c0
        print(
            f"a minute of new data ({len(lines):,} points): {res.seconds:.3f} s "
            f"(read {res.read_s:.3f} s, {res.points_read:,} points read, "
            f"{time.process_time() - p0:.2f} CPU-s; influxd {influx_cpu_s(influx) - c0:.2f} CPU-s)"
        )
    device_hours = 3 * (len(registry.meters) + len(registry.stations) + len(registry.plows)) / 60
    print(
        f"per 1,000 device-hours in real time (the minutes above, plows at 1 Hz): engine "
        f"{cpu_engine / device_hours * 1000:.2f} CPU-s, influxd "
        f"{cpu_influx / device_hours * 1000:.2f} CPU-s"
    )
    print(
        f"reads: {source.full_reads} full, {source.incremental_reads} incremental; "
        f"peak RSS of the engine's process {peak_rss_mb():.0f} MB"
    )
    engine.state.close()
    return CycleFigures(
        first_s,
        first_ratio,
        cold,
        float(np.median(steady)),
        float(np.median(minute)),
        peak_rss_mb(),
    )


def bench_season(work: Path, influx: InfluxDB1, step_s: int) -> None:
    cfg = load_config(SAMPLE, environ={})
    t0 = time.perf_counter()
    loaded = load_scenario_into(
        influx, "season", ROOT / "scenarios" / "winter-season.toml", cfg, truth_dir=work / "t"
    )
    print(
        f"season: {loaded.points:,} points through the processor into InfluxDB in "
        f"{time.perf_counter() - t0:.0f} s"
    )
    rcfg: RulesConfig = with_settings(cfg)
    result, scores = run_backtest(influx.url, loaded, cfg, rcfg, families=FAMILIES, step_s=step_s)
    print(
        f"season backtest: {result.steps:,} steps of {step_s} s in {result.seconds:.1f} s "
        f"({len(result.transitions)} transitions); peak RSS {peak_rss_mb():.0f} MB"
    )
    by_rule: dict[str, int] = {}
    for _s, t in result.transitions:
        by_rule[t.rule] = by_rule.get(t.rule, 0) + 1
    print("transitions by rule: " + json.dumps(by_rule, ensure_ascii=False))
    for s in scores:
        print("  " + s.row())


def main(argv: Sequence[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    p.add_argument("--meters", type=int, default=10_000)
    p.add_argument("--stations", type=int, default=100)
    p.add_argument("--plows", type=int, default=50)
    p.add_argument("--night-h", type=float, default=8.0)
    p.add_argument("--step", type=int, default=600)
    p.add_argument("--skip-season", action="store_true")
    args = p.parse_args(argv)
    with tempfile.TemporaryDirectory(prefix="yukimizu-bench-rules-") as tmp:
        work = Path(tmp)
        influx = InfluxDB1(work / "influxdb")
        influx.start()
        try:
            if not args.skip_season:
                bench_season(work, influx, args.step)
            fig = bench_cycle(args, work, influx)
        finally:
            influx.stop()
    print(f"load average at the end: {' '.join(Path('/proc/loadavg').read_text().split()[:3])}")
    print(
        f"targets: first start ≤ 1.3x the bare query "
        f"{'ok' if fig.first_ratio <= 1.3 else 'MISSED'} ({fig.first_ratio:.2f}x), "
        f"steady ≤ 0.5 s {'ok' if fig.steady_s <= 0.5 else 'MISSED'}, "
        f"a minute ≤ 1 s {'ok' if fig.minute_s <= 1.0 else 'MISSED'} ({fig.minute_s:.2f} s), "
        f"peak RSS ≤ 500 MB {'ok' if fig.rss_mb <= 500 else 'MISSED'}"
    )
    print(
        f"cold below: the first start ({fig.first_s:.2f} s; a restart with state: "
        f"{fig.cold_s:.2f} s)"
    )
    print(
        f"rules cycle: {fig.first_s:.2f} s cold, {fig.steady_s:.2f} s steady, "
        f"{fig.rss_mb:.0f} MB for {args.meters} meters, {args.stations} stations, "
        f"{args.plows} plows"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())

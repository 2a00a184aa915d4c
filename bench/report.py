"""
The benchmark's table: one row per measure, one column per subject (nginx,
pypicache, the peers), then pypicache's ratios ``x nginx`` and ``x best peer``
(pypicache's figure divided by theirs; the best peer is the highest rate or the
shortest time among the peers that have the figure).
"""

from __future__ import annotations

from typing import Any

HIGHER, LOWER = "higher", "lower"


def measures(results: dict[str, Any]) -> list[tuple[str, str, str]]:
    """(key, label, which is better) of every row, in order."""
    cfg = results["config"]
    many = f"{cfg['many_files']:,}-file"
    rows = []
    for size, label in (("small", "small"), ("many", many)):
        for kind in ("html", "json"):
            for gz in ("_gz", ""):
                enc = "gzip" if gz else "identity"
                rows.append(
                    (
                        f"page_{size}_{kind}{gz}",
                        f"{label} page {kind.upper()} {enc}, req/s",
                        HIGHER,
                    )
                )
    big = f"{cfg['big_bytes'] // (1024 * 1024)} MB"
    delay = cfg["delay_ms"]
    rows += [
        ("wheel_small", "small wheel, req/s", HIGHER),
        ("big_warm", f"{big} file warm, MB/s", HIGHER),
        ("big_cold", f"{big} file cold (through the proxy), MB/s", HIGHER),
        ("pip_cold", "pip install cold, s", LOWER),
        ("pip_warm", "pip install warm, s", LOWER),
        ("uv_cold", "uv pip install cold, s", LOWER),
        ("uv_warm", "uv pip install warm, s", LOWER),
        ("far_pip_cold", f"upstream {delay} ms away: pip cold, s", LOWER),
        ("far_pip_warm", f"upstream {delay} ms away: pip warm, s", LOWER),
        (
            "startup_twistd_web",
            "start-up, twistd -n web on an empty folder (Twisted's floor), s",
            LOWER,
        ),
        ("startup_empty", "start-up to first answer, empty cache, s", LOWER),
    ]
    for count in cfg["cache_files"]:
        rows.append(
            (
                f"startup_{count}_health",
                f"start-up, {count:,} cached files: /health, s",
                LOWER,
            )
        )
        rows.append(
            (
                f"startup_{count}_page",
                f"start-up, {count:,} cached files: first page, s",
                LOWER,
            )
        )
    rows += [
        ("cpu_small_json_gz", "CPU s per 1,000 req, small page JSON gzip", LOWER),
        ("cpu_many_json_gz", f"CPU s per 1,000 req, {many} page JSON gzip", LOWER),
        ("single_flight", "upstream fetches of 1 file, 8 cold clients at once", LOWER),
    ]
    versions = f"{cfg['many_files'] // 3:,}"
    for case, label in (
        ("one", f"UI project page, {many} release"),
        ("one_group", "UI page of its cp312 wheels"),
        ("many", f"UI project page, {many} project, {versions} versions"),
        ("many_older", f"UI page of another of its {versions} versions"),
    ):
        rows.append((f"ui_{case}_cold", f"{label}, cold, ms", LOWER))
        rows.append((f"ui_{case}_cold_cpu", f"{label}, cold, CPU ms", LOWER))
        rows.append((f"ui_{case}_rendered", f"{label}, first render, ms", LOWER))
        rows.append(
            (f"ui_{case}_rendered_cpu", f"{label}, first render, CPU ms", LOWER)
        )
        if case in ("one", "many"):
            rows.append((f"ui_{case}_warm", f"{label}, warm, ms", LOWER))
    return rows


def value(figures: dict[str, Any], key: str) -> float | None:
    if key == "single_flight":
        return figures.get("single_flight", {}).get("upstream_fetches")
    if key.startswith("ui_"):
        case, _, which = key[3:].removesuffix("_cpu").rpartition("_")
        which += "_cpu" if key.endswith("_cpu") else ""
        return figures.get("ui_pages", {}).get(case, {}).get(f"{which}_ms")
    if key.startswith("startup_") and key != "startup_empty":
        return figures.get("startup_cached", {}).get(key[len("startup_") :])
    v = figures.get(key)
    return v if isinstance(v, (int, float)) else None


def fmt(v: float | None) -> str:
    if v is None:
        return "–"
    if isinstance(v, int):
        return f"{v:,}"
    if abs(v) >= 100:
        return f"{v:,.0f}"
    if abs(v) >= 10:
        return f"{v:.1f}"
    return f"{v:.2f}" if abs(v) >= 0.1 else f"{v:.3f}"


def ratio(ours: float | None, theirs: float | None) -> str:
    if ours is None or theirs is None or theirs == 0:
        return "–"
    return f"{ours / theirs:.2f}x"


def table(results: dict[str, Any]) -> str:
    subjects = results["subjects"]
    names = list(subjects)
    peers = [n for n in names if n not in ("nginx", "pypicache")]
    header = [
        "measure",
        *(f"{n} {subjects[n].get('version', '')}".strip() for n in names),
        "x nginx",
        "x best peer",
        "remarks",
    ]
    rows = []
    for key, label, better in measures(results):
        values = {n: value(subjects[n], key) for n in names}
        if all(v is None for v in values.values()):
            continue
        ours = values.get("pypicache")
        peer_values = [values[p] for p in peers if values[p] is not None]
        best = None
        if peer_values:
            best = max(peer_values) if better == HIGHER else min(peer_values)
        remarks = "; ".join(
            f"{n}: {subjects[n]['remarks'][key]}"
            for n in names
            if key in subjects[n].get("remarks", {})
        )
        if key.startswith("ui_"):
            ui = subjects["pypicache"]["ui_pages"]
            remarks = f"pypicache: target < {ui['target_ms']} ms"
            if key == "ui_one_cold":
                remarks += f"; first page of the process {ui['first_ms']} ms"
            if key.endswith("_cpu"):
                remarks = "CPU time of the process (all threads)"
        floor = subjects.get("pypicache", {}).get("startup_cached", {})
        if key.startswith("startup_") and ours is not None and floor.get("twistd_web"):
            said = f"pypicache: {ours / floor['twistd_web']:.2f}x twistd web"
            if key == "startup_twistd_web":
                said = "Twisted's own start-up to a first answer, same run"
            remarks = "; ".join(r for r in (remarks, said) if r)
        if key == "single_flight":
            sf = subjects["pypicache"]["single_flight"]
            remarks = f"pypicache: {sf['verified']}/{sf['clients']} verified; target 1"
        rows.append(
            [
                label,
                *(fmt(values[n]) for n in names),
                ratio(ours, values.get("nginx")),
                ratio(ours, best),
                remarks,
            ]
        )
    widths = [max(len(r[i]) for r in [header, *rows]) for i in range(len(header))]

    def line(r: list[str]) -> str:
        cells = (
            [r[0].ljust(widths[0])]
            + [c.rjust(w) for c, w in zip(r[1:-1], widths[1:-1])]
            + [r[-1]]
        )
        return "  ".join(cells).rstrip()

    m = results["machine"]
    tools = results.get("tools", {})
    title = (
        f"pypicache side-by-side benchmark ({results['mode']}): {m['cpus']} CPUs ({m['cpu']}), Linux {m['kernel']}, "
        f"Python {m['python']}, Twisted {m['twisted']}, pip {m['pip']}, uv {tools.get('uv', '?')}, "
        f"wrk {tools.get('wrk', 'not installed')}; {results['seconds']} s; load average "
        f"{results['load_average_start'][0]:.2f} at start, {results['load_average_end'][0]:.2f} at end"
    )
    lines = [title, line(header), line(["-" * w for w in widths[:-1]] + ["-------"])]
    lines += [line(r) for r in rows]
    lines.append(
        "ratios: pypicache's figure / theirs (rates: higher is better; times and CPU: lower is better)"
    )
    for note in results.get("notes", []):
        lines.append(f"note: {note}")
    return "\n".join(lines)

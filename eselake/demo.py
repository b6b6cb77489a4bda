"""``eselake demo``: simulate a small DSA-110 strip with one ESE, run the whole chain into a lake, print the
candidates and chart the best one."""
from __future__ import annotations

import time
from pathlib import Path

import polars as pl
from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

from eselake.lake import Lake


def _progress(console):
    return Progress(TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn(),
                    console=console)


def run_demo(out: Path, days: int = 60, workers: int = 2, lake: Lake | None = None, imager: str = "auto",
             console: Console | None = None) -> pl.DataFrame:
    from eselake.charts import save_chart, variability_chart
    from eselake.ingest.catalogs.catalog import load_catalog_file
    from eselake.ingest.radio.pipeline import ingest_uvh5
    from eselake.sim.visibilities import SimConfig, simulate
    from eselake.output import rich_table
    from eselake.source import Source

    console = console or Console()
    if days < 50:
        console.print(f"[yellow]note:[/yellow] with {days} days the injected ESE (at least 16 days, with its "
                      "caustics) fills much of the lightcurve; 50 days or more give the dip scan a baseline")
    out = Path(out).absolute()
    lake = lake or Lake(out / "lake")
    sim_dir = out / "sim"
    t0 = time.perf_counter()
    cfg = SimConfig(out=sim_dir, days=days)
    if not (sim_dir / "simulation.json").exists():
        with _progress(console) as prog:
            task = prog.add_task(f"simulating {days} days of DSA-110 tiles", total=days * cfg.tiles_per_day)
            simulate(cfg, progress=lambda k, n: prog.update(task, completed=k))
    else:
        import json as _json
        previous = _json.loads((sim_dir / "simulation.json").read_text()).get("days")
        if previous != days:
            from eselake.errors import EselakeError
            raise EselakeError(f"{out} holds a simulation of {previous} days, not {days}; use another --out "
                               "or remove it")
        console.print(f"using the simulation already in {sim_dir}")
    cat = load_catalog_file(sim_dir / "catalog.csv", "nvss")
    lake.write_catalog("nvss", cat)
    with _progress(console) as prog:
        task = prog.add_task("UVH5 -> MS -> calibration -> image -> photometry", total=None)

        def on_result(r, k, n):
            prog.update(task, completed=k, total=n)
            if r.stage == "failed":
                prog.console.print(f"[red]tile {r.tile_id} failed[/red]: {r.error}", highlight=False)

        results = ingest_uvh5(lake, sim_dir / "uvh5", out / "products", calibrators=sim_dir / "calibrators.csv",
                              workers=workers, imager=imager, on_result=on_result)
    done = sum(r.stage == "done" for r in results)
    console.print(f"{done} tiles ingested, {sum(r.stage == 'skipped' for r in results)} already in the lake, "
                  f"{sum(r.stage == 'failed' for r in results)} failed ({time.perf_counter() - t0:.0f} s)")
    res = lake.refresh()                 # as every ingest does: statistics, ESE search, candidates
    console.print(f"derived data refreshed ({res['mode']}, {res.get('sources', 0)} sources, {res['seconds']:.1f} s)")
    from eselake.faces import describe, detect
    cands = detect(lake)                 # the default detection: the same list as every other face
    cols = [c for c in ("source_id", "sigma", "fap_per_source_year", "depth", "duration_days", "dip_start_mjd",
                        "dip_end_mjd", "status") if c in cands.columns]
    console.print(rich_table(cands.select(cols), title=f"ESE candidates ({describe()})", width=console.width))
    import json
    meta = json.loads((sim_dir / "simulation.json").read_text())
    injected = [s["source_id"] for s in meta["sources"] if s["kind"] == "ese"]
    if injected:
        found = cands["source_id"].to_list()
        verdict = ("[green]first[/green]" if found[:1] == injected[:1] else
                   "[yellow]found, not first[/yellow]" if injected[0] in found else "[red]not found[/red]")
        console.print(f"injected ESE: {injected[0]} -> {verdict}")
    charts = out / "charts"
    if cands.height:
        best = cands["source_id"][0]
        path = charts / f"{best.replace(' ', '_').replace('+', 'p')}_lightcurve.png"
        Source(best, lake).plot_lightcurve(outfile=path)
        console.print(f"lightcurve chart: {path}")
    save_chart(variability_chart(lake), charts / "eta_v.png")
    console.print(f"eta-V diagram: {charts / 'eta_v.png'}")
    console.print(f"lake: {lake.path}  ({time.perf_counter() - t0:.0f} s in all)", highlight=False)
    console.print("next (in the venv: `source .venv/bin/activate`, or prefix .venv/bin/):", highlight=False)
    for cmd in (f"eselake --lake {lake.path} ese-detect",
                f"eselake --lake {lake.path} serve      # then open http://127.0.0.1:8000/"):
        console.print("  " + cmd, highlight=False, markup=False, soft_wrap=True)
    return cands

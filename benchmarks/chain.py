"""Per-stage times of the radio chain for one tile, against the 309 s real-time budget of a DSA-110 tile.

    python benchmarks/chain.py [--full] [--imager auto|wsclean|tclean]
    python benchmarks/chain.py --scheduler local [--dask-workers 1,2] [--days 2]
    python benchmarks/chain.py --scheduler tcp://host:8786

Always runs the test-size tile (20 antennas, 2 channels/subband, 6 integrations); with --full also a full-size
tile (96 antennas, 48 channels/subband = 768 channels, 24 integrations), which takes several minutes.

With --scheduler, instead: throughput of `ingest uvh5` on Dask, in tiles per hour, for test-size tiles (2 per
day: a calibrator tile and a target tile). ``local`` starts a LocalCluster of each of --dask-workers worker
processes in turn; an address uses the workers of that cluster as they are. The clock runs from submitting
the tiles to the last commit (cluster start-up and the workers' first imports are not counted).
"""
from __future__ import annotations

import argparse
import os
import tempfile
import time
from pathlib import Path

import eselake  # noqa: F401  (offline configuration before CASA)
from eselake import Lake
from eselake.ingest.radio import calibrate, dsa110
from eselake.ingest.catalogs.catalog import load_catalog_file
from eselake.ingest.radio.convert import convert_tile, group_tiles
from eselake.ingest.radio.image import image_tile
from eselake.ingest.photometry.measure import measure_image
from eselake.ingest.parallel import dask_client
from eselake.ingest.radio.pipeline import ingest_uvh5
from eselake.sim.visibilities import SimConfig, simulate

BUDGET_S = dsa110.INTEGRATIONS_PER_TILE * dsa110.INTEGRATION_S


def run(label: str, cfg: SimConfig, imager: str) -> None:
    times = {}
    t = time.perf_counter()
    simulate(cfg)
    times["simulate (not part of the chain)"] = time.perf_counter() - t
    tile = group_tiles(cfg.out / "uvh5")[0]
    t = time.perf_counter()
    ms, center, _ = convert_tile(tile, cfg.out / "tile.ms")
    times["UVH5 -> MS"] = time.perf_counter() - t
    t = time.perf_counter()
    cal = calibrate.calibrator_in_field(center, calibrate.read_calibrators(cfg.out / "calibrators.csv"))
    calibrate.apply(ms, calibrate.solve(ms, cal, cfg.dec_deg))
    times["calibration (solve + apply)"] = time.perf_counter() - t
    t = time.perf_counter()
    pbcor = image_tile(ms, cfg.out / "tile", cfg.dec_deg, imager=imager)
    times[f"imaging ({imager}) + pbcor"] = time.perf_counter() - t
    t = time.perf_counter()
    measure_image(Lake(cfg.out / "lake"), pbcor, sources=load_catalog_file(cfg.out / "catalog.csv", "nvss"))
    times["photometry + lake write"] = time.perf_counter() - t
    chain = sum(v for k, v in times.items() if not k.startswith("simulate"))
    print(f"\n{label}: {cfg.n_antennas} antennas, {16 * cfg.nchan} channels, {cfg.n_integrations} integrations")
    for k, v in times.items():
        print(f"  {k:34s} {v:8.2f} s")
    print(f"  {'chain total':34s} {chain:8.1f} s   = {chain / BUDGET_S:.2f} x the {BUDGET_S:.0f} s real-time budget")


def _warm_worker() -> int:
    """Import the chain on a worker before the clock starts (CASA, pyuvdata, the lake)."""
    import os

    import eselake.ingest.radio.calibrate  # noqa: F401
    import eselake.ingest.radio.image  # noqa: F401
    import eselake.ingest.radio.pipeline  # noqa: F401
    return os.getpid()


def throughput(scheduler: str, counts: list[int], days: int, imager: str, tmp: Path) -> None:
    """Tiles per hour of `ingest uvh5` on Dask against the number of workers."""
    cfg = SimConfig(out=tmp / "tiles", days=days, tiles_per_day=2, n_antennas=20, nchan=2, n_integrations=6,
                    n_sources=8, calibrator_flux_jy=20.0, flux_range_jy=(0.3, 1.5), sefd_jy=3000.0, ese=False,
                    seed=3)
    simulate(cfg)
    n_tiles = len(group_tiles(cfg.out / "uvh5"))
    catalog = load_catalog_file(cfg.out / "catalog.csv", "nvss")
    local = scheduler == "local" or scheduler.startswith("local:")
    print(f"\n`ingest uvh5` on Dask ({scheduler}): {n_tiles} test-size tiles ({cfg.n_antennas} antennas, "
          f"{16 * cfg.nchan} channels, {cfg.n_integrations} integrations), imager {imager}")
    print(f"  {'workers':>7s} {'wall s':>8s} {'tiles/hour':>11s} {'speed-up':>9s} {'chain s/tile':>13s} "
          f"{'busy':>5s} {'load avg':>9s}  failed  (s/tile: convert, calibrate, image, photometry)")
    first = None
    for n in counts if local else [0]:
        with dask_client(f"local:{n}" if local else scheduler) as client:
            client.wait_for_workers(max(n, 1), timeout=300)
            client.run(_warm_worker)
            n_workers = len(client.scheduler_info()["workers"])
            lake = Lake(tmp / f"lake-{n_workers}-{n}")
            lake.write_catalog("nvss", catalog)
            t = time.perf_counter()
            results = ingest_uvh5(lake, cfg.out / "uvh5", tmp / f"products-{n_workers}-{n}",
                                  calibrators=cfg.out / "calibrators.csv", imager=imager, scheduler=client)
            wall = time.perf_counter() - t
        done = [r for r in results if r.stage == "done"]
        per_tile = sum(sum(r.seconds.values()) for r in done) / max(len(done), 1)
        stages = {k: sum(r.seconds.get(k, 0.0) for r in done) / max(len(done), 1)
                  for k in ("convert", "calibrate", "image", "photometry")}
        rate = len(done) / wall * 3600
        first = first or rate
        load = os.getloadavg()[0]               # the machine's own load (other users) colours these figures
        busy = per_tile * len(done) / (wall * n_workers)     # the workers' time spent in the chain
        print(f"  {n_workers:7d} {wall:8.1f} {rate:11.0f} {rate / first:8.2f}x {per_tile:13.1f} {busy:5.0%} "
              f"{load:9.1f}  {len(results) - len(done):6d}  ({', '.join(f'{v:.1f}' for v in stages.values())})")
        for r in results:
            if r.stage != "done":
                print(f"    {r.tile_id}: {r.stage} {r.error}")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--full", action="store_true", help="also the full-size tile")
    ap.add_argument("--imager", default="auto", choices=["auto", "wsclean", "tclean"])
    ap.add_argument("--scheduler", default=None, metavar="ADDRESS",
                    help="tiles per hour on Dask: 'local' (LocalClusters of --dask-workers) or tcp://host:port")
    ap.add_argument("--dask-workers", default="1,2", help="worker counts for --scheduler local [1,2]")
    ap.add_argument("--days", type=int, default=2, help="days of 2 tiles for --scheduler [2]")
    args = ap.parse_args()
    if args.scheduler:
        with tempfile.TemporaryDirectory() as tmp:
            throughput(args.scheduler, [int(n) for n in args.dask_workers.split(",")], args.days, args.imager,
                       Path(tmp))
        return
    with tempfile.TemporaryDirectory() as tmp:
        run("test-size tile", SimConfig(out=Path(tmp) / "small", days=1, n_antennas=20, nchan=2, n_integrations=6,
                                        n_sources=8, ese=False), args.imager)
        if args.full:
            full = SimConfig(out=Path(tmp) / "full", days=1, n_antennas=96, nchan=48, n_integrations=24,
                             n_sources=15, ese=False)
            full.antennas = [s.name for s in dsa110.stations()][:96]
            run("full-size tile", full, args.imager)


if __name__ == "__main__":
    main()

"""Per-stage times of the radio chain for one tile, against the 309 s real-time budget of a DSA-110 tile.

    python benchmarks/chain.py [--full] [--imager auto|wsclean|tclean]

Always runs the test-size tile (20 antennas, 2 channels/subband, 6 integrations); with --full also a full-size
tile (96 antennas, 48 channels/subband = 768 channels, 24 integrations), which takes several minutes.
"""
from __future__ import annotations

import argparse
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


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--full", action="store_true", help="also the full-size tile")
    ap.add_argument("--imager", default="auto", choices=["auto", "wsclean", "tclean"])
    args = ap.parse_args()
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

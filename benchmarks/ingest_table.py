"""Bulk import: `eselake ingest table` of N measurements (default 10M: 10k sources x 1k images) from Parquet,
beside the floor of writing the same rows with deltalake directly, in one run.

    python benchmarks/ingest_table.py [--sources 10000] [--images 1000] [--format parquet|csv]
"""
from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

import pyarrow.csv as pcsv
import pyarrow.parquet as pq
from deltalake import write_deltalake

from eselake import Lake
from eselake.ingest.table import import_table
from eselake.sim.lightcurves import simulate_photometry


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--sources", type=int, default=10_000)
    ap.add_argument("--images", type=int, default=1_000)
    ap.add_argument("--format", choices=["parquet", "csv"], default="parquet")
    args = ap.parse_args()
    sim = simulate_photometry(args.sources, args.images, cadence_days=0.5, noise_jy=2e-3, seed=1)
    rows = sim.photometry.select(["source_id", "image_id", "mjd", "peak_jyb", "peak_err_jyb", "flags"])
    n = rows.num_rows
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        src = tmp / f"m.{args.format}"
        (pq.write_table if args.format == "parquet" else pcsv.write_csv)(rows, src)
        print(f"{n:,} measurements of {args.images:,} images in {src.name} ({src.stat().st_size / 1e6:.0f} MB)")
        t = time.perf_counter()
        write_deltalake(str(tmp / "floor"), rows)
        floor = time.perf_counter() - t
        t = time.perf_counter()
        res = import_table(Lake(tmp / "lake"), src, refresh=False)
        took = time.perf_counter() - t
        t = time.perf_counter()
        Lake(tmp / "lake").refresh()
        ref = time.perf_counter() - t
        print("| step | time |\n| --- | --- |")
        print(f"| deltalake write of the same rows (floor) | {floor:.1f} s |")
        print(f"| eselake ingest table ({res.rows:,} rows, checks, grouping, two commits) | {took:.1f} s |")
        print(f"| then the first (full) refresh | {ref:.1f} s |")


if __name__ == "__main__":
    main()

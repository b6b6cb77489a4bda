"""Scale of the lake: build a compacted lake of N sources x M images (default 10k x 10k = 100M measurements)
and time a full variability_stats and ese_candidates query and single-source lightcurve queries (p50/p99).

    python benchmarks/lake_scale.py [--sources 10000] [--images 10000] [--lightcurves 50] [--keep DIR]

The lake is written night by night (one file per night, sorted by source_id, 128k-row groups with min/max
statistics), as `eselake lake compact` leaves it; a single source's query then reads a few row groups per file.
Needs ~20 GB free disk for the default size; memory use stays within a few GB.
"""
from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

import numpy as np
import pyarrow as pa

from eselake import Lake
from eselake.sim.lightcurves import Dip, simulate_photometry
from eselake.lake.layout import IMAGES_SCHEMA, PHOTOMETRY_SCHEMA, new_ingest_id, night_of
from eselake.lake.write import conform, write_parquet_atomic


def build(lake: Lake, n_sources: int, n_images: int, images_per_night: int) -> None:
    t0 = time.perf_counter()
    base = np.exp(np.random.default_rng(0).uniform(np.log(0.05), np.log(1.0), n_sources))   # fixed per source
    for start in range(0, n_images, images_per_night):
        k = min(images_per_night, n_images - start)
        sim = simulate_photometry(n_sources, k, start_mjd=60000.0 + start / images_per_night, cadence_days=0.9 / k,
                                  noise_jy=2e-3, frac_noise=0.02, gain_sigma=0.03, seed=start,
                                  dips=[Dip(7, 60000 + 0.4 * n_images / images_per_night, 40, 0.3)],
                                  base_flux_jy=base)
        ids = [f"img-{start + i:07d}" for i in range(k)]
        mapping = dict(zip(sim.images.column("image_id").to_pylist(), ids))
        images = sim.images.set_column(0, "image_id", pa.array(ids))
        phot = sim.photometry.set_column(sim.photometry.schema.get_field_index("image_id"), "image_id",
                                         pa.array([mapping[i] for i in sim.photometry.column("image_id").to_pylist()]))
        ing = new_ingest_id()
        night = night_of(float(images.column("mjd")[0].as_py()))
        write_parquet_atomic(conform(phot.append_column("ingest_id", pa.array([ing] * phot.num_rows)), PHOTOMETRY_SCHEMA),
                             lake.dataset_dir("photometry") / f"night={night}" / f"compact-{ing}.parquet",
                             sort_by="source_id")
        write_parquet_atomic(conform(images.append_column("ingest_id", pa.array([ing] * k)), IMAGES_SCHEMA),
                             lake.dataset_dir("images") / f"night={night}" / f"compact-{ing}.parquet")
        done = start + k
        print(f"\r  writing: {done}/{n_images} images ({done * n_sources:,} rows, "
              f"{time.perf_counter() - t0:.0f} s)", end="", flush=True)
    print()


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--sources", type=int, default=10_000)
    ap.add_argument("--images", type=int, default=10_000)
    ap.add_argument("--images-per-night", type=int, default=20,
                    help="images per night (20: 500 nights, so a 40-day dip is a small part of each lightcurve)")
    ap.add_argument("--lightcurves", type=int, default=50)
    ap.add_argument("--keep", type=Path, default=None, help="build (or reuse) the lake here instead of a temp dir")
    args = ap.parse_args()
    tmp = None
    if args.keep is None:
        tmp = tempfile.TemporaryDirectory()
        root = Path(tmp.name) / "lake"
    else:
        root = args.keep
    lake = Lake(root)
    n_rows = args.sources * args.images
    print(f"lake of {args.sources:,} sources x {args.images:,} images = {n_rows:,} measurements at {root}")
    if not lake.files("photometry"):
        build(lake, args.sources, args.images, args.images_per_night)
    size = sum(f.stat().st_size for f in lake.files("photometry"))
    print(f"  {len(lake.files('photometry'))} photometry files, {size / 1e9:.2f} GB")

    def timed(label, q, params=None):
        t = time.perf_counter()
        df = lake.sql(q, params)
        dt = time.perf_counter() - t
        print(f"  {label:44s} {dt:8.2f} s  ({df.height:,} rows)")
        return df

    timed("first query (views + gains cache build)", "SELECT count(*) AS n FROM images")
    timed("variability_stats, all sources", "SELECT * FROM variability_stats")
    cands = timed("ese_candidates, all sources", "SELECT * FROM ese_candidates")
    print(f"  candidates: {cands['source_id'].to_list()[:5]} (injected: SIM J000007)")
    rng = np.random.default_rng(0)
    times = []
    for sid in rng.integers(0, args.sources, args.lightcurves):
        t = time.perf_counter()
        lake.sql("SELECT mjd, peak_jyb, peak_err_jyb, normalized_flux_jy FROM photometry WHERE source_id = ? "
                 "ORDER BY mjd", [f"SIM J{sid:06d}"])
        times.append(time.perf_counter() - t)
    print(f"  single-source lightcurve ({args.lightcurves} sources)       p50 {np.percentile(times, 50):.3f} s   "
          f"p99 {np.percentile(times, 99):.3f} s")
    if tmp is not None:
        tmp.cleanup()


if __name__ == "__main__":
    main()

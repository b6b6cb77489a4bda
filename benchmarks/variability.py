"""Variability statistics over a large lake: eselake's SQL views vs a seed-style SQLite per-source Python
loop vs a pandas groupby, in one run.

    python benchmarks/variability.py [--sources 10000] [--epochs 1000] [--loop-subset 200]

The lake is written compacted (what `eselake lake compact` produces). The SQLite loop is timed on
--loop-subset sources and extrapolated to all sources (labelled so).
"""
from __future__ import annotations

import argparse
import sqlite3
import tempfile
import time
from pathlib import Path

import numpy as np
import pyarrow as pa

from eselake import Lake
from eselake.sim.lightcurves import Dip, simulate_photometry


def seed_style_loop(db: Path, source_ids: list[str]) -> None:
    """What the seed does: for each source, SELECT its rows, compute stats in Python, INSERT a row."""
    con = sqlite3.connect(db)
    con.execute("CREATE TABLE IF NOT EXISTS variability_stats (source_id TEXT PRIMARY KEY, n_obs INT, "
                "mean_flux_mjy REAL, std_flux_mjy REAL, chi2_nu REAL, eta_metric REAL, sigma_deviation REAL)")
    for sid in source_ids:
        rows = con.execute("SELECT peak_jyb, peak_err_jyb FROM photometry WHERE source_id = ? ORDER BY mjd",
                           (sid,)).fetchall()
        f = np.array([r[0] for r in rows]) * 1000
        e = np.array([r[1] for r in rows]) * 1000
        w = 1 / e**2
        n = len(f)
        wmean = (w * f).sum() / w.sum()
        std = f.std(ddof=1)
        con.execute("INSERT OR REPLACE INTO variability_stats VALUES (?,?,?,?,?,?,?)",
                    (sid, n, f.mean(), std, float((w * (f - wmean) ** 2).sum() / (n - 1)),
                     float(n / (n - 1) * ((w * f * f).mean() - (w * f).mean() ** 2 / w.mean())),
                     float(np.abs(f - f.mean()).max() / std)))
        con.commit()
    con.close()


def pandas_groupby(df):
    d = df.assign(f=df.peak_jyb * 1000, e=df.peak_err_jyb * 1000)
    d = d.assign(w=1 / d.e**2)
    d = d.assign(wf=d.w * d.f, wff=d.w * d.f * d.f)
    g = d.groupby("source_id")
    out = g.agg(n_obs=("f", "size"), mean=("f", "mean"), std=("f", "std"), fmin=("f", "min"), fmax=("f", "max"),
                sw=("w", "sum"), swf=("wf", "sum"), swff=("wff", "sum"))
    out["chi2_nu"] = (out.swff - out.swf**2 / out.sw) / (out.n_obs - 1)
    out["eta"] = out.chi2_nu
    out["sigma_deviation"] = np.maximum(out.fmax - out["mean"], out["mean"] - out.fmin) / out["std"]
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--sources", type=int, default=10_000)
    ap.add_argument("--epochs", type=int, default=1000)
    ap.add_argument("--loop-subset", type=int, default=200)
    args = ap.parse_args()
    t0 = time.perf_counter()
    sim = simulate_photometry(args.sources, args.epochs, noise_jy=2e-3, frac_noise=0.02, gain_sigma=0.03,
                              dips=[Dip(7, 60000 + args.epochs / 3, 40, 0.3)], seed=1)
    n_rows = sim.photometry.num_rows
    print(f"{args.sources} sources x {args.epochs} epochs = {n_rows:,} measurements "
          f"(simulated in {time.perf_counter() - t0:.1f} s)")
    with tempfile.TemporaryDirectory() as tmp:
        lake = Lake(Path(tmp) / "lake")
        t0 = time.perf_counter()
        from eselake.lake.layout import IMAGES_SCHEMA, PHOTOMETRY_SCHEMA
        from eselake.lake.write import conform, write_parquet_atomic
        ing = "0" * 24
        write_parquet_atomic(conform(sim.photometry.append_column("ingest_id", pa.array([ing] * n_rows)),
                                     PHOTOMETRY_SCHEMA), lake.path / "photometry" / "night=all" / "part.parquet",
                             sort_by="source_id")
        write_parquet_atomic(conform(sim.images.append_column("ingest_id", pa.array([ing] * args.epochs)),
                                     IMAGES_SCHEMA), lake.path / "images" / "night=all" / "part.parquet")
        print(f"  lake written (compacted)              : {time.perf_counter() - t0:8.2f} s")

        def timed(label, fn):
            t = time.perf_counter()
            out = fn()
            dt = time.perf_counter() - t
            print(f"  {label:38s}: {dt:8.2f} s")
            return dt, out

        t_stats, stats = timed("eselake variability_stats (all)", lambda: lake.sql("SELECT * FROM variability_stats"))
        t_cand, cands = timed("eselake ese_candidates (all, w/ dips)",
                              lambda: lake.sql("SELECT * FROM ese_candidates"))
        t_one, _ = timed("eselake one source's lightcurve",
                         lambda: lake.sql("SELECT mjd, peak_jyb FROM photometry WHERE source_id = ?",
                                          [sim.source_ids[123]]))
        df = sim.photometry.select(["source_id", "mjd", "peak_jyb", "peak_err_jyb"]).to_pandas()
        t_pd, _ = timed("pandas groupby (stats only, no norm.)", lambda: pandas_groupby(df))
        db = Path(tmp) / "seed.sqlite3"
        con = sqlite3.connect(db)
        con.execute("CREATE TABLE photometry (source_id TEXT, mjd REAL, peak_jyb REAL, peak_err_jyb REAL)")
        con.executemany("INSERT INTO photometry VALUES (?,?,?,?)", df.itertuples(index=False, name=None))
        con.execute("CREATE INDEX idx_src ON photometry(source_id)")
        con.commit()
        con.close()
        sub = sim.source_ids[: args.loop_subset]
        t = time.perf_counter()
        seed_style_loop(db, sub)
        t_loop = (time.perf_counter() - t) * args.sources / len(sub)
        print(f"  {'seed-style SQLite loop (extrapolated from ' + str(len(sub)) + ')':38s}: {t_loop:8.2f} s")
    print(f"  ratio seed loop / eselake stats       : {t_loop / t_stats:8.1f} x")
    print(f"  ratio pandas / eselake stats          : {t_pd / t_stats:8.2f} x")
    print(f"  candidates found: {cands['source_id'].to_list()[:5]} (injected: {sim.source_ids[7]})")


if __name__ == "__main__":
    main()

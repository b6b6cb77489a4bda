"""Lake maintenance: ``check`` (leftovers of interrupted writes, unreadable files, duplicate committed rows)
and ``compact`` (one sorted file per night, atomically, without changing any query result)."""
from __future__ import annotations

import shutil
import time
from dataclasses import dataclass
from pathlib import Path

import pyarrow.parquet as pq

from eselake.lake.connect import sql_str
from eselake.lake.lake import fetch_arrow
from eselake.lake.layout import DATASETS, IMAGES_SCHEMA, PHOTOMETRY_SCHEMA, new_ingest_id
from eselake.lake.write import conform, with_constant, write_parquet_atomic


@dataclass
class Finding:
    severity: str          # error: the lake is damaged | leftover: harmless residue of an interrupted write
    kind: str
    path: str
    detail: str


def _sql_list(paths) -> str:
    return ", ".join(sql_str(str(p)) for p in paths)


def _age_s(path: Path) -> float:
    try:
        return time.time() - path.stat().st_mtime
    except FileNotFoundError:
        return 0.0


def check(lake) -> list[Finding]:
    """Everything unusual in the lake. Errors mean data a reader would see wrongly or not at all."""
    out: list[Finding] = []
    if not lake.path.exists():
        return out
    for tmp in lake.temp_files():
        out.append(Finding("leftover", "temp file", str(tmp), f"unfinished write, {_age_s(tmp):.0f} s old"))
    for name, ds in DATASETS.items():
        for f in lake.files(name):
            try:
                schema = pq.read_schema(f)
                pq.read_metadata(f)
            except Exception as exc:  # noqa: BLE001 - any unreadable file is a finding
                out.append(Finding("error", "unreadable file", str(f), f"{type(exc).__name__}: {exc}"))
                continue
            missing = [fld.name for fld in ds.schema if fld.name not in schema.names]
            if missing:
                out.append(Finding("error", "schema", str(f), f"missing columns {missing}"))
    if any(f.severity == "error" for f in out):
        return out          # the queries below would fail on unreadable files
    con = lake.connect()
    try:
        phot_glob = sql_str(str(lake.dataset_dir("photometry")) + "/**/*.parquet")
        img_glob = sql_str(str(lake.dataset_dir("images")) + "/**/*.parquet")
        if lake.files("photometry"):
            rows = con.execute(f"""
                WITH f AS (SELECT filename, image_id, ingest_id, count(*) AS n
                           FROM read_parquet({phot_glob}, filename = true) GROUP BY ALL)
                SELECT f.filename, count(*) FILTER (WHERE i.image_id IS NULL) AS stale, count(*) AS parts,
                       sum(f.n) AS n
                FROM f LEFT JOIN images i ON i.image_id = f.image_id AND i.ingest_id = f.ingest_id
                GROUP BY f.filename HAVING count(*) FILTER (WHERE i.image_id IS NULL) = count(*)""").fetchall()
            for filename, _, _, n in rows:
                out.append(Finding("leftover", "unreferenced photometry", filename,
                                   f"{n} rows of an unfinished or superseded ingest (invisible to queries)"))
            dup = con.execute("""SELECT source_id, image_id, count(*) AS n FROM measurements
                                 GROUP BY source_id, image_id HAVING count(*) > 1 LIMIT 20""").fetchall()
            for sid, iid, n in dup:
                out.append(Finding("error", "duplicate rows", iid, f"source {sid} appears {n} times"))
        if lake.files("images"):
            rows = con.execute(f"""
                WITH f AS (SELECT filename, image_id, ingest_id FROM read_parquet({img_glob}, filename = true))
                SELECT f.filename, count(*) FROM f LEFT JOIN images i USING (image_id, ingest_id)
                GROUP BY f.filename HAVING count(*) FILTER (WHERE i.image_id IS NULL) = count(*)""").fetchall()
            for filename, n in rows:
                out.append(Finding("leftover", "superseded images", filename, f"{n} rows of earlier ingests"))
    finally:
        con.close()
    return out


def fix(lake, findings: list[Finding], min_age_s: float = 3600.0) -> list[str]:
    """Remove leftovers older than ``min_age_s`` (younger ones may belong to a write in progress)."""
    removed = []
    for f in findings:
        if f.severity != "leftover":
            continue
        p = Path(f.path)
        if p.exists() and _age_s(p) >= min_age_s:
            if p.is_dir():
                shutil.rmtree(p, ignore_errors=True)
            else:
                p.unlink(missing_ok=True)
            removed.append(str(p))
    return removed


def compact(lake, nights: list[str] | None = None) -> dict[str, int]:
    """Rewrite each night's committed photometry as one file sorted by source_id (row groups with min/max
    statistics make single-source queries skip most of it) and its images as one file.

    Atomic for readers: the new photometry file is written first under a new ingest_id, then the images file
    with that ingest_id (the commit point), then the old files are removed. Images re-ingested meanwhile stay
    with their newer ingest. Returns rows compacted per night.
    """
    done: dict[str, int] = {}
    phot_dir, img_dir = lake.dataset_dir("photometry"), lake.dataset_dir("images")
    all_nights = sorted(p.name.split("=", 1)[1] for p in img_dir.glob("night=*")) if img_dir.is_dir() else []
    for night in (nights or all_nights):
        with lake.lock(f"compact-{night}"):
            old_phot = sorted((phot_dir / f"night={night}").glob("*.parquet"))
            old_img = sorted((img_dir / f"night={night}").glob("*.parquet"))
            if len(old_phot) <= 1 and len(old_img) <= 1:
                continue
            con = lake.connect()
            try:
                images = fetch_arrow(con, f"""
                    SELECT * EXCLUDE (rn) FROM (
                        SELECT *, row_number() OVER (PARTITION BY image_id ORDER BY ingest_id DESC) AS rn
                        FROM read_parquet([{_sql_list(old_img)}])) WHERE rn = 1""")
                con.register("night_images", images)
                phot = fetch_arrow(con, f"""
                    SELECT p.* FROM read_parquet([{_sql_list(old_phot)}]) p
                    JOIN night_images i ON p.image_id = i.image_id AND p.ingest_id = i.ingest_id
                    ORDER BY p.source_id, p.mjd""")
            finally:
                con.close()
            cid = new_ingest_id()
            name = f"compact-{cid}.parquet"
            phot = conform(with_constant(phot, "ingest_id", cid, PHOTOMETRY_SCHEMA), PHOTOMETRY_SCHEMA)
            images = conform(with_constant(images, "ingest_id", cid, IMAGES_SCHEMA), IMAGES_SCHEMA)
            write_parquet_atomic(phot, phot_dir / f"night={night}" / name)
            write_parquet_atomic(images, img_dir / f"night={night}" / name)
            for p in old_phot + old_img:
                p.unlink(missing_ok=True)
            done[night] = phot.num_rows
    return done

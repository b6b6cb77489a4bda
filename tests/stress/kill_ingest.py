"""Stress (on demand, not part of `make test`): kill -9 an ingest at random moments many times; after each kill
every image has all of its rows or none, `lake check` finds no error, and a final run completes the lake.

    python tests/stress/kill_ingest.py [--rounds 200] [--images 12]
"""
from __future__ import annotations

import argparse
import random
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

from eselake import Lake  # noqa: E402
from eselake.lake import maintain  # noqa: E402
from tests.test_measure import make_field  # noqa: E402


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--rounds", type=int, default=200)
    ap.add_argument("--images", type=int, default=12)
    ap.add_argument("--seed", type=int, default=1)
    args = ap.parse_args()
    rng = random.Random(args.seed)
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        folder = tmp / "images"
        folder.mkdir()
        for k in range(args.images):
            _, cat, _ = make_field(folder, f"img{k:03d}.fits", mjd=60500.3 + k, shape=(300, 300), n=30)
        src = tmp / "sources.csv"
        src.write_text("name,ra,dec\n" + "\n".join(f"{s},{r},{d}" for s, r, d in zip(
            cat.column("source_id").to_pylist(), cat.column("ra_deg").to_pylist(), cat.column("dec_deg").to_pylist())))
        lake = Lake(tmp / "lake")
        cmd = [sys.executable, "-m", "eselake", "--lake", str(lake.path), "photometry", "batch", "--source-list",
               str(src), "--image-dir", str(folder), "--force", "--workers", "2"]
        for r in range(args.rounds):
            p = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
            time.sleep(rng.uniform(0.5, 6.0))
            p.send_signal(signal.SIGKILL)
            p.wait()
            subprocess.run(["pkill", "-9", "-f", "multiprocessing.spawn"], capture_output=True)
            counts = lake.sql("SELECT image_id, count(*) AS n FROM photometry GROUP BY image_id")["n"].to_list()
            errors = [f for f in maintain.check(lake) if f.severity == "error"]
            ok = set(counts) <= {30} and not errors
            print(f"round {r + 1:4d}: {len(counts):3d} images complete, partial: {sorted(set(counts) - {30})}, "
                  f"errors: {len(errors)} -> {'ok' if ok else 'FAILED'}", flush=True)
            if not ok:
                sys.exit(1)
        subprocess.run(cmd[:-3], check=True, capture_output=True)
        n = lake.sql("SELECT count(*) AS n FROM photometry")["n"][0]
        print(f"final run: {n} rows (expected {30 * args.images})")
        sys.exit(0 if n == 30 * args.images else 1)


if __name__ == "__main__":
    main()

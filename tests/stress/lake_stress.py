"""Randomised lake stress: several processes ingest, re-ingest, compact, load catalogues, review and refresh at
once; each round ends with kill -9 of all of them at a random moment. After every round the lake is checked
against an independent tally of what was committed (written by the workers to their own journals, fsynced,
before and after every commit):

- every image holds exactly N_SRC rows, all from one measurement (never a mix, never doubled);
- that measurement is the last one its writer saw committed, or the one it had in flight when killed (nothing
  lost, nothing resurrected);
- the catalogue holds exactly one load (the last committed or the in-flight one), never doubled;
- reviews: every committed review is there, nothing that was never started;
- `lake check` finds no error; after a final refresh every derived dataset equals its view.

    python tests/stress/lake_stress.py [--rounds 200] [--seed 1]      # the long run
The suite runs a short version (tests/test_stress.py).
"""
from __future__ import annotations

import argparse
import json
import os
import random
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT))

N_SRC = 15
N_IMAGES = 12
WRITERS = 2
CAT_SIZE = 40


# ------------------------------------------------------------------------------------------ workers
def _journal(path: Path, record: dict) -> None:
    with open(path, "a") as fh:
        fh.write(json.dumps(record) + "\n")
        fh.flush()
        os.fsync(fh.fileno())


def _image_row(k: int) -> dict:
    mjd = 60100.3 + (k % 5) + k / 1000.0
    return {"image_id": f"img{k:03d}", "path": f"/data/img{k:03d}.fits", "mjd": mjd, "freq_hz": 1.4e9,
            "rms_jyb": 1e-3, "kind": "image", "ra_center_deg": 10.0 + k, "dec_center_deg": 40.0}


def _phot(k: int, value: float, mjd: float):
    import pyarrow as pa
    return pa.table({"source_id": [f"SRC {i:03d}" for i in range(N_SRC)], "image_id": [f"img{k:03d}"] * N_SRC,
                     "mjd": [mjd] * N_SRC, "peak_jyb": [0.1 + 0.01 * i + 1e-3 * (value % 7) + 2e-3 * k for i in range(N_SRC)],
                     "peak_err_jyb": [0.01] * N_SRC, "flags": [0] * N_SRC,
                     "local_rms_jyb": [value] * N_SRC})       # the measurement's identity, for the checker


def worker(role: str, lake_path: str, journal: str, seed: int) -> None:
    from eselake import Lake
    from eselake.lake import maintain
    from eselake.lake.derived import refresh

    rng = random.Random(seed)
    lake = Lake(lake_path)
    jpath = Path(journal)
    seq = int(time.time() * 1000) % 10_000_000
    while True:
        seq += 1
        if role.startswith("writer"):
            w = int(role[-1])
            k = rng.choice([i for i in range(N_IMAGES) if i % WRITERS == w])
            row = _image_row(k)
            if rng.random() < 0.3:                       # re-measure into another night
                row["mjd"] += rng.choice([-2.0, 1.0])
            value = float(seq)
            _journal(jpath, {"op": "intent", "image": row["image_id"], "value": value})
            lake.commit_image(row, _phot(k, value, row["mjd"]))
            _journal(jpath, {"op": "done", "image": row["image_id"], "value": value})
        elif role == "catalog":
            import numpy as np
            import pyarrow as pa
            _journal(jpath, {"op": "intent", "value": float(seq)})
            lake.write_catalog("nvss", pa.table({"source_id": [f"SRC {i:03d}" for i in range(CAT_SIZE)],
                                                 "ra_deg": np.full(CAT_SIZE, 10.0), "dec_deg": np.full(CAT_SIZE, 40.0),
                                                 "flux_mjy": np.full(CAT_SIZE, float(seq))}))
            _journal(jpath, {"op": "done", "value": float(seq)})
        elif role == "review":
            note = f"r{seq}"
            _journal(jpath, {"op": "intent", "note": note})
            lake.add_reviews([{"source_id": "SRC 001", "status": "investigated", "notes": note, "reviewer": "s"}])
            _journal(jpath, {"op": "done", "note": note})
        elif role == "maintain":
            if rng.random() < 0.5:
                maintain.compact(lake)
            else:
                refresh(lake)
            time.sleep(rng.uniform(0.0, 0.5))


# ------------------------------------------------------------------------------------------ checker
def _read(path: Path) -> list[dict]:
    if not path.exists():
        return []
    out = []
    for line in path.read_text().splitlines():
        try:
            out.append(json.loads(line))
        except ValueError:          # a line cut by the kill: its commit never started
            pass
    return out


def _allowed_values(records: list[dict], key: str | None) -> dict:
    """Per key: (last done value, values in flight after it)."""
    state: dict = {}
    for r in records:
        k = r.get(key) if key else "-"
        last, pending = state.get(k, (None, set()))
        if r["op"] == "intent":
            pending = pending | {r["value"]}
        else:
            last, pending = r["value"], set()
        state[k] = (last, pending)
    return state


def check(lake_path: Path, journals: Path) -> list[str]:
    from eselake import Lake
    from eselake.lake import maintain

    problems = []
    lake = Lake(lake_path)
    rows = lake.sql("SELECT image_id, count(*) AS n, min(local_rms_jyb) AS v, count(DISTINCT local_rms_jyb) AS k "
                    "FROM photometry GROUP BY image_id")
    seen = {r["image_id"]: r for r in rows.to_dicts()}
    writes = []
    for w in range(WRITERS):
        writes += _read(journals / f"writer{w}.jsonl")
    for image, (last, pending) in _allowed_values(writes, "image").items():
        got = seen.get(image)
        if got is None:
            if last is not None:
                problems.append(f"{image}: committed value {last} lost")
            continue
        if got["n"] != N_SRC or got["k"] != 1:
            problems.append(f"{image}: {got['n']} rows from {got['k']} measurement(s)")
        if got["v"] != last and got["v"] not in pending:
            problems.append(f"{image}: holds {got['v']}, expected {last} or in-flight {sorted(pending)}")
    cat = lake.sql("SELECT count(*) AS n, min(flux_mjy) AS v, max(flux_mjy) AS w FROM catalog_sources").row(0)
    last, pending = _allowed_values(_read(journals / "catalog.jsonl"), None).get("-", (None, set()))
    if last is not None or cat[0]:
        if cat[0] != CAT_SIZE or cat[1] != cat[2] or (cat[1] != last and cat[1] not in pending):
            problems.append(f"catalogue: {cat[0]} rows, flux {cat[1]}..{cat[2]}, expected {last} or {pending}")
    reviews = _read(journals / "review.jsonl")
    have = set(lake.sql("SELECT notes FROM reviews_files")["notes"].to_list())
    done = {r["note"] for r in reviews if r["op"] == "done"}
    started = {r["note"] for r in reviews}
    if not done <= have or not have <= started:
        problems.append(f"reviews: {len(done - have)} lost, {len(have - started)} unknown")
    problems += [f"lake check: {f.kind} {f.path} {f.detail}" for f in maintain.check(lake) if f.severity == "error"]
    return problems


def run(rounds: int, seed: int, workdir: Path, *, min_s: float = 2.0, max_s: float = 6.0, verbose=True) -> int:
    rng = random.Random(seed)
    lake_path, journals = workdir / "lake", workdir / "journals"
    journals.mkdir(parents=True, exist_ok=True)
    roles = [f"writer{w}" for w in range(WRITERS)] + ["catalog", "review", "maintain"]
    env = dict(os.environ, PYTHONPATH=str(ROOT))
    for r in range(rounds):
        procs = [subprocess.Popen([sys.executable, __file__, "--worker", role, str(lake_path),
                                   str(journals / f"{role}.jsonl"), str(rng.randrange(1 << 30))],
                                  env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
                 for role in roles]
        time.sleep(rng.uniform(min_s, max_s))
        for p in procs:
            p.send_signal(signal.SIGKILL)
        errs = []
        for p in procs:
            _, err = p.communicate()
            text = err.decode(errors="replace").strip()
            if text and "Traceback" in text:
                errs.append(text.splitlines()[-1])
        problems = check(lake_path, journals) + [f"worker raised: {e}" for e in errs]
        if verbose:
            print(f"round {r + 1:4d}: {'ok' if not problems else 'FAILED'}", flush=True)
        if problems:
            for p in problems:
                print("  " + p, flush=True)
            return 1
    # finally: a refresh brings the derived data to equality with the views
    from eselake import Lake
    from eselake.lake.derived import refresh
    from tests.test_derived import assert_derived_equal_views

    lake = Lake(lake_path)
    refresh(lake)
    assert_derived_equal_views(lake)
    if verbose:
        print(f"{rounds} rounds clean; derived datasets equal their views")
    return 0


def main() -> None:
    if len(sys.argv) > 1 and sys.argv[1] == "--worker":
        worker(sys.argv[2], sys.argv[3], sys.argv[4], int(sys.argv[5]))
        return
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--rounds", type=int, default=200)
    ap.add_argument("--seed", type=int, default=1)
    ap.add_argument("--keep", type=Path, default=None, help="Work in this folder (kept) instead of a temp one")
    args = ap.parse_args()
    if args.keep:
        sys.exit(run(args.rounds, args.seed, args.keep))
    with tempfile.TemporaryDirectory() as tmp:
        sys.exit(run(args.rounds, args.seed, Path(tmp)))


if __name__ == "__main__":
    main()

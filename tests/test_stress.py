"""Short version of tests/stress/lake_stress.py: concurrent ingest, re-ingest, compaction, catalogue loads,
reviews and refreshes, all killed with SIGKILL at random moments; invariants against the workers' journals."""
from tests.stress.lake_stress import run


def test_lake_stress_short(tmp_path):
    assert run(3, seed=11, workdir=tmp_path, min_s=3.0, max_s=6.0, verbose=False) == 0

import socket
from pathlib import Path

import pytest

import eselake  # noqa: F401  - applies the offline configuration before any test imports CASA

SHARED = Path(__file__).resolve().parents[1].parent / "shared" / "data"


def shared_file(rel: str) -> Path:
    """A file of ../shared/data, or skip the test when the reference data are absent."""
    path = SHARED / rel
    if not path.exists():
        pytest.skip(f"reference data {path} not available")
    return path


@pytest.fixture
def lake(tmp_path):
    from eselake import Lake
    return Lake(tmp_path / "lake")


@pytest.fixture(autouse=True)
def _isolated_cache(tmp_path_factory, monkeypatch):
    # keep the CASA log and generated config out of the user's home during tests
    monkeypatch.setenv("ESELAKE_CACHE", str(tmp_path_factory.getbasetemp() / "eselake-cache"))


@pytest.fixture
def no_network(monkeypatch):
    """Fail the test if anything tries to open a non-local network connection."""
    real = socket.socket.connect

    def guarded(self, address):
        host = address[0] if isinstance(address, tuple) else address
        if isinstance(host, str) and host not in ("127.0.0.1", "localhost", "::1") and not host.startswith("/"):
            raise AssertionError(f"network access attempted: {address}")
        return real(self, address)

    monkeypatch.setattr(socket.socket, "connect", guarded)


def simulated_lake(path, n_sources, n_epochs, dip=None, **kwargs):
    """A lake holding simulated photometry (ids with spaces and '+'); ``dip`` = (source, start_mjd, days,
    depth). Returns (lake, simulation)."""
    from eselake import Lake
    from eselake.sim.lightcurves import Dip, simulate_photometry

    kwargs.setdefault("id_prefix", "NVSS J1234+42 ")
    sim = simulate_photometry(n_sources, n_epochs, noise_jy=2e-3, frac_noise=0.02, seed=2,
                              dips=[Dip(*dip)] if dip else None, **kwargs)
    from eselake.lake.derived import refresh

    lake = Lake(path)
    lake.commit_batch(sim.images, sim.photometry)
    refresh(lake)                         # as every ingest does
    return lake, sim

"""Everything runs offline: astropy never downloads, CASA imports and runs tclean without network."""
import subprocess
import sys
import textwrap

import pytest


def test_astropy_offline_config():
    import eselake  # noqa: F401
    from astropy.utils import iers
    from astropy.utils.data import conf
    assert iers.conf.auto_download is False
    assert conf.allow_internet is False


def test_duckdb_never_autoinstalls(lake):
    con = lake.connect()
    assert con.execute("SELECT current_setting('autoinstall_known_extensions')").fetchone()[0] is False


TCLEAN = textwrap.dedent('''
    import os, socket, sys
    def refuse(self, address):
        raise RuntimeError(f"network access attempted: {address}")
    socket.socket.connect = refuse
    import eselake
    import casatools, casatasks
    work = sys.argv[1]
    os.chdir(work)
    ms = os.path.join(work, "tiny.ms")
    sm = casatools.simulator(); me = casatools.measures(); qa = casatools.quanta()
    sm.open(ms)
    x = [0.0, 30.0, 0.0, -40.0, 60.0]; y = [0.0, 0.0, 35.0, 20.0, -50.0]; z = [0.0] * 5
    sm.setconfig(telescopename="DSA-110", x=x, y=y, z=z, dishdiameter=[4.65] * 5, mount=["alt-az"] * 5,
                 antname=[f"a{i}" for i in range(5)], coordsystem="local",
                 referencelocation=me.position("WGS84", "-118.2825deg", "37.2339deg", "1182.6m"))
    sm.setspwindow(spwname="L", freq="1.4GHz", deltafreq="1MHz", freqresolution="1MHz", nchannels=1,
                   stokes="XX YY")
    sm.setfeed(mode="perfect X Y")
    sm.setfield(sourcename="f", sourcedirection=me.direction("J2000", "0h0m0s", "37d0m0s"))
    sm.settimes(integrationtime="10s", usehourangle=True, referencetime=me.epoch("UTC", "2025/01/01"))
    sm.observe("f", "L", starttime="0s", stoptime="60s")
    sm.close()
    casatasks.tclean(vis=ms, imagename=os.path.join(work, "img"), imsize=64, cell="60arcsec", niter=0)
    assert os.path.isdir(os.path.join(work, "img.image")), "tclean made no image"
    print("TCLEAN-OK")
''')


def test_casa_import_and_tiny_tclean_offline(tmp_path):
    pytest.importorskip("casatools")
    work = tmp_path / "work"
    work.mkdir()
    res = subprocess.run([sys.executable, "-c", TCLEAN, str(work)], capture_output=True, text=True,
                         cwd=tmp_path, timeout=600)
    assert "TCLEAN-OK" in res.stdout, res.stdout[-2000:] + res.stderr[-4000:]
    # no CASA log littering the working directory
    assert not list(tmp_path.glob("casa-*.log")) and not list(work.glob("casa-*.log"))


@pytest.mark.parametrize("value, expected", [("2.5GB", 2_500_000_000), ("1.5 GiB", 1.5 * 2 ** 30),
                                             ("512mb", 512_000_000), ("3000000", 3_000_000), ("80%", None)])
def test_memory_limit_in_bytes(monkeypatch, value, expected):
    """The by-source sort takes a share of ESELAKE_MEMORY_LIMIT: plain sizes are understood, others left alone."""
    from eselake import offline

    monkeypatch.setitem(offline.DUCKDB_CONFIG, "memory_limit", value)
    assert offline.memory_limit_bytes() == expected

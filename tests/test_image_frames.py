"""Images of other telescopes: sky frames (FK4/B1950, galactic), sky axes in any order or position, Stokes
planes, units (mJy/beam), quantised integer pixels, blank sentinels, old time keywords, compressed files.
Every image is rendered on the sky through astropy's own WCS, so the truth does not depend on our reading."""
import gzip

import numpy as np
import pyarrow as pa
import pytest
from astropy import units as u
from astropy.coordinates import SkyCoord
from astropy.io import fits
from astropy.wcs import WCS

from eselake.errors import InputError
from eselake.ingest.photometry.fitsimage import read_image
from eselake.ingest.photometry.measure import measure_image, product_kind

RA0, DEC0 = 150.0, 40.0
PIX = 6.0 / 3600                      # deg
BEAM = 24.0 / 3600                    # deg, circular
N = 128


def _sources():
    off = np.array([-0.06, 0.0, 0.06])
    de, dn = (v.ravel() for v in np.meshgrid(off, off))
    c = SkyCoord(RA0 * u.deg, DEC0 * u.deg).spherical_offsets_by(de * u.deg, dn * u.deg)
    return pa.table({"source_id": [f"S{k}" for k in range(9)], "ra_deg": c.ra.deg, "dec_deg": c.dec.deg,
                     "flux_mjy": 100.0 * (np.arange(9) + 1)})


def _header(frame="icrs", lat_first=False):
    """A 2-D SIN header centred on (RA0, DEC0) expressed in ``frame``."""
    c = SkyCoord(RA0 * u.deg, DEC0 * u.deg)
    h = fits.Header()
    if frame == "galactic":
        lon, lat, names = c.galactic.l.deg, c.galactic.b.deg, ("GLON-SIN", "GLAT-SIN")
    elif frame == "fk4":
        f = c.transform_to("fk4")
        lon, lat, names = f.ra.deg, f.dec.deg, ("RA---SIN", "DEC--SIN")
        h["RADESYS"], h["EQUINOX"] = "FK4", 1950.0
    else:
        lon, lat, names = RA0, DEC0, ("RA---SIN", "DEC--SIN")
        h["RADESYS"] = "ICRS"
    axes = [(names[0], lon, -PIX), (names[1], lat, PIX)]
    for i, (ctype, val, step) in enumerate(axes[::-1] if lat_first else axes, start=1):
        h[f"CTYPE{i}"], h[f"CRVAL{i}"], h[f"CDELT{i}"], h[f"CRPIX{i}"] = ctype, val, step, N / 2 + 0.5
    return h


def _render(h, rms=1e-3, seed=0):
    """Pixels (Jy/beam) of the sources on header ``h``'s 2-D sky, computed on the sky through astropy."""
    w = WCS(h)
    yy, xx = np.mgrid[0:N, 0:N]
    sky = w.pixel_to_world(xx.ravel(), yy.ravel()).icrs
    src = _sources()
    img = np.random.default_rng(seed).normal(0.0, rms, N * N)
    sig = BEAM / (2 * np.sqrt(2 * np.log(2)))
    for ra, dec, f in zip(src["ra_deg"].to_numpy(), src["dec_deg"].to_numpy(), src["flux_mjy"].to_numpy()):
        sep = SkyCoord(ra * u.deg, dec * u.deg).separation(sky).deg
        img += 1e-3 * f * np.exp(-0.5 * (sep / sig) ** 2)
    return img.reshape(N, N)


def _write(path, data, h, **cards):
    h = h.copy()
    h["BMAJ"], h["BMIN"], h["BPA"] = BEAM, BEAM, 0.0
    h.setdefault("BUNIT", "JY/BEAM")
    h["DATE-OBS"] = "2024-05-01T03:00:00"
    for k, v in cards.items():
        h[k.replace("_", "-")] = v
    fits.PrimaryHDU(data, header=h).writeto(path, overwrite=True)
    return path


def _measure(lake, path, **kw):
    res = measure_image(lake, path, sources=_sources(), write=False, **kw)
    return dict(zip(res.measurements["source_id"], res.measurements["peak_jyb"]))


TRUTH = {f"S{k}": 0.1 * (k + 1) for k in range(9)}


@pytest.mark.parametrize("frame,lat_first", [("icrs", False), ("fk4", False), ("galactic", False),
                                             ("icrs", True)])
def test_sky_frame_and_axis_order_of_the_header(lake, tmp_path, frame, lat_first):
    """The same sky written in FK4/B1950, galactic or Dec-first axes: every source found, at its flux."""
    h = _header(frame, lat_first)
    path = _write(tmp_path / "f.fits", _render(h).astype(np.float32), h)
    got = _measure(lake, path)
    assert set(got) == set(TRUTH)
    for sid, flux in TRUTH.items():
        assert got[sid] == pytest.approx(flux, abs=0.005)
    img = read_image(path)
    assert (img.ra_center_deg, img.dec_center_deg) == pytest.approx((RA0, DEC0), abs=1e-6)   # ICRS centre


def test_sky_axes_anywhere_and_stokes_planes(lake, tmp_path):
    """STOKES first (FITS axes STOKES, RA, DEC); a single-plane Stokes axis must hold Stokes I."""
    h2 = _header()
    plane = _render(h2).astype(np.float32)
    h = fits.Header()
    h["CTYPE1"], h["CRVAL1"], h["CDELT1"], h["CRPIX1"] = "STOKES", 1.0, 1.0, 1.0
    for i in (1, 2):
        for key in ("CTYPE", "CRVAL", "CDELT", "CRPIX"):
            h[f"{key}{i + 1}"] = h2[f"{key}{i}"]
    cube = np.stack([plane, 0.01 * plane], axis=-1)          # numpy (DEC, RA, STOKES): I, then Q
    got = _measure(lake, _write(tmp_path / "s.fits", cube, h))
    assert got["S8"] == pytest.approx(0.9, abs=0.005) and len(got) == 9
    v = _header()
    v["CTYPE3"], v["CRVAL3"], v["CDELT3"], v["CRPIX3"] = "STOKES", 4.0, 1.0, 1.0
    with pytest.raises(InputError, match=r"v\.fits: the STOKES axis \(CTYPE3\) holds V, no Stokes I plane"):
        read_image(_write(tmp_path / "v.fits", plane[None], v))
    ecl = _header()
    ecl["CTYPE1"], ecl["CTYPE2"] = "ELON-SIN", "ELAT-SIN"          # astropy would take it for ICRS
    with pytest.raises(InputError, match=r"e\.fits: sky axes ELON-SIN/ELAT-SIN are not supported"):
        read_image(_write(tmp_path / "e.fits", plane, ecl))


def test_units_quantised_pixels_and_sentinels(lake, tmp_path):
    h = _header()
    sky = _render(h)
    ref = _measure(lake, _write(tmp_path / "jy.fits", sky.astype(np.float32), h))
    # mJy/beam image and noise map: scaled to Jy/beam
    mjy = _write(tmp_path / "mjy.fits", (1e3 * sky).astype(np.float32), h, BUNIT="mJy/beam")
    noise = _write(tmp_path / "noise.fits", np.full((N, N), 2.0, np.float32), h, BUNIT="mJy/beam")
    res = measure_image(lake, mjy, sources=_sources(), write=False, noise_map=noise)
    assert res.measurements["peak_jyb"].to_list() == pytest.approx([ref[s] for s in res.measurements["source_id"]],
                                                                   rel=1e-5)
    assert res.measurements["peak_err_jyb"].min() >= 2e-3 * 0.9
    with pytest.raises(InputError, match="BUNIT is 'K'"):
        read_image(_write(tmp_path / "k.fits", sky.astype(np.float32), h, BUNIT="K"))
    # int16 quantised at the noise level (BSCALE = rms): equal neighbours are sky, not blank fill ...
    q = sky.copy()
    q[:, :20] = 0.0                                          # ... while a zero-filled margin is blank
    hq = h.copy()
    hq["BSCALE"], hq["BZERO"] = 1e-3, 0.0
    hdu = fits.PrimaryHDU(np.round(q / 1e-3).astype(np.int16), header=hq)
    hdu.header["BSCALE"], hdu.header["BZERO"] = 1e-3, 0.0
    for k, v in (("BMAJ", BEAM), ("BMIN", BEAM), ("BPA", 0.0), ("BUNIT", "JY/BEAM"),
                 ("DATE-OBS", "2024-05-01T03:00:00")):
        hdu.header[k] = v
    hdu.writeto(tmp_path / "int16.fits")
    img = read_image(tmp_path / "int16.fits")
    assert int(np.isnan(img.data[:, 22:]).sum()) == 0
    assert np.isnan(img.data[:, :18]).all()
    assert img.rms_jyb == pytest.approx(1e-3, rel=0.15)
    # a -1e30 blank sentinel beside a source: blank (NaN, the source flagged), never a flux of -1e28 Jy
    s = sky.astype(np.float32)
    x, y = WCS(h).world_to_pixel(SkyCoord(_sources()["ra_deg"][4].as_py() * u.deg,
                                          _sources()["dec_deg"][4].as_py() * u.deg))
    s[int(round(float(y))), int(round(float(x))) + 1] = -1e30
    res = measure_image(lake, _write(tmp_path / "sentinel.fits", s, h), sources=_sources(), write=False)
    m = res.measurements
    assert m["peak_jyb"].abs().max() < 10 and m.filter(m["source_id"] == "S4")["flags"][0] != 0


def test_old_time_keywords_and_bounds(tmp_path):
    h = _header()
    sky = _render(h).astype(np.float32)
    p = _write(tmp_path / "t.fits", sky, h, DATE_OBS="2012-04-29", TIME_OBS="17:19:23")
    assert read_image(p).mjd == pytest.approx(56046.72179, abs=1e-5)       # DATE-OBS date + TIME-OBS
    p = _write(tmp_path / "t0.fits", sky, h, DATE_OBS="1858-11-17T00:00:00")
    with pytest.raises(InputError, match=r"t0\.fits: observation time 1858-11-17 = MJD 0\.0+ .* outside"):
        read_image(p)
    p = _write(tmp_path / "t1.fits", sky, h, DATE_OBS="2012-04-29", MJD_OBS=56076.7)
    with pytest.raises(InputError, match="is not on DATE-OBS = 2012-04-29"):
        read_image(p)
    p = _write(tmp_path / "t2.fits", sky, h, DATE_OBS="29/04/95")                 # FITS before 2000: DD/MM/YY
    assert read_image(p).mjd == pytest.approx(49836.0)


def test_compressed_files_read_and_found(lake, tmp_path):
    h = _header()
    raw = tmp_path / "raw.fits"
    _write(raw, _render(h).astype(np.float32), h)
    gz = tmp_path / "obs.fits.gz"
    gz.write_bytes(gzip.compress(raw.read_bytes()))
    assert product_kind(gz) == "sky" and product_kind(tmp_path / "obs-psf.fits.gz") is None
    assert _measure(lake, gz)["S8"] == pytest.approx(0.9, abs=0.005)
    bad = tmp_path / "bad.fits.gz"
    bad.write_bytes(gzip.compress(raw.read_bytes())[:40] + b"\0" * 4000)
    with pytest.raises(InputError, match=r"bad\.fits\.gz: not a readable FITS image \([^\n]*\)$"):
        read_image(bad)


def test_cutout_centred_on_the_source_in_any_frame(tmp_path):
    """The web page's postage stamp of a source in a galactic, Dec-first, STOKES-first image: the source at
    its centre."""
    import struct
    import zlib

    from eselake.api import cutout_png

    h = _header("galactic", lat_first=True)
    sky = _render(h).astype(np.float32)
    path = _write(tmp_path / "g.fits", np.stack([0.01 * sky, sky]), h, CTYPE3="STOKES", CRVAL3=2.0, CDELT3=-1.0,
                  CRPIX3=1.0)                              # numpy (STOKES, ...): Q then I
    src = _sources()
    png = cutout_png(str(path), src["ra_deg"][0].as_py(), src["dec_deg"][0].as_py(), 0.04, scale=1)
    w, hgt = struct.unpack(">II", png[16:24])
    raw = zlib.decompress(png[png.index(b"IDAT") + 4:png.index(b"IEND") - 8])
    img = np.frombuffer(raw, np.uint8).reshape(hgt, w + 1)[:, 1:].astype(float)
    img[hgt // 2, :] = img[:, w // 2] = 0                   # the cross-hair ticks
    cy, cx = np.unravel_index(np.argmax(img), img.shape)
    assert abs(cy - hgt / 2) <= 2 and abs(cx - w / 2) <= 2


def test_background_subtracted_only_when_the_image_has_one(lake, tmp_path):
    """A pedestal plus a gradient (single-dish-like or diffuse emission) is removed: the sources come out at
    their fluxes, not biased by twice the pedestal; a zero-mean interferometric image is left untouched."""
    from eselake.ingest.photometry.fitsimage import background_map

    h = _header()
    sky = _render(h)
    assert background_map(sky, BEAM / PIX) is None
    assert read_image(_write(tmp_path / "flat.fits", sky.astype(np.float32), h)).background_jyb == 0.0
    ramp = 0.25 + 0.002 * (np.arange(N)[None, :] - N / 2) * np.ones((N, 1))
    path = _write(tmp_path / "bkg.fits", (sky + ramp).astype(np.float32), h)
    assert read_image(path).background_jyb == pytest.approx(0.25, abs=0.01)
    got = _measure(lake, path)
    for sid, flux in TRUTH.items():
        assert got[sid] == pytest.approx(flux, abs=0.01)

"""A small lake measured from real FITS images (so positions, image paths and cutouts exist), with a
dipping source and a source named like an HTML injection."""
from __future__ import annotations

from pathlib import Path

import numpy as np
import pyarrow as pa

EVIL = '<img src=x onerror="window.PWNED=1">'
N_EPOCHS = 60
DIP = (60025.0, 60045.0)           # MJD range where the first source is at half flux


def web_lake(root: Path):
    """(lake, ids): 6 sources on 60 daily 96x96 images; ids[0] dips to 50% inside DIP; ids[-1] is EVIL."""
    from eselake import Lake
    from eselake.ingest.photometry.measure import measure_image
    from eselake.sim.images import make_wcs, point_source_image, write_image

    root.mkdir(parents=True, exist_ok=True)
    ra0, dec0, cell = 188.5, 42.0, 0.01
    wcs = make_wcs((96, 96), ra0, dec0, cell)
    pix = [(30, 30), (66, 30), (30, 66), (66, 66), (48, 48), (20, 76)]
    world = wcs.pixel_to_world_values(np.array([p[0] for p in pix], float), np.array([p[1] for p in pix], float))
    ids = [f"NVSS J{i}" for i in ("123000+420000", "123130+420100", "122830+422000", "123200+421500",
                                  "123015+421015")] + [EVIL]
    flux = np.array([0.5, 0.3, 0.25, 0.4, 0.35, 0.3])
    lake = Lake(root / "lake")
    commit = lake.commit_image

    def commit_image(image, phot):          # rows stamped with their image, whatever the lake's version does
        if "image_id" not in phot.column_names:
            phot = phot.append_column("image_id", pa.array([image["image_id"]] * phot.num_rows, pa.string()))
        return commit(image, phot)
    lake.commit_image = commit_image
    lake.write_catalog("sources", pa.table({
        "source_id": ids, "name": ids, "ra_deg": world[0], "dec_deg": world[1], "flux_mjy": flux * 1000,
        "flux_err_mjy": [1.0] * 6, "major_arcsec": [0.0] * 6, "minor_arcsec": [0.0] * 6, "pa_deg": [0.0] * 6}))
    rng = np.random.default_rng(7)
    img_dir = root / "images"
    img_dir.mkdir(exist_ok=True)
    for k in range(N_EPOCHS):
        mjd = 60000.5 + k
        f = flux * (1 + 0.01 * rng.standard_normal(6))
        if DIP[0] <= mjd <= DIP[1]:
            f[0] *= 0.5
        data = point_source_image((96, 96), [p[0] for p in pix], [p[1] for p in pix], f, 4.0, rms=2e-3, rng=rng)
        path = img_dir / f"img{k:03d}.fits"
        write_image(path, data, wcs, bmaj_deg=0.04, bmin_deg=0.04, mjd=mjd)
        measure_image(lake, path, catalog="sources")
    return lake, ids


# The demo's catalogue (eselake demo, seed 1): ids, positions (deg) and fluxes (mJy); the first is the ESE.
DEMO_SOURCES = [
    ("NVSS J124507+455356", 191.2812662, 45.8991357, 600.000), ("NVSS J124541+453436", 191.4236448, 45.5768064, 951.602),
    ("NVSS J124812+443403", 192.0508552, 44.5677409, 233.032), ("NVSS J124934+441717", 192.3922563, 44.2880770, 180.986),
    ("NVSS J124721+455709", 191.8394744, 45.9525325, 1074.777), ("NVSS J124515+441208", 191.3158864, 44.2023089, 1089.870),
    ("NVSS J124254+451723", 190.7275490, 45.2898463, 1128.830), ("NVSS J124933+450533", 192.3877101, 45.0926479, 444.632),
    ("NVSS J125151+445647", 192.9647207, 44.9464755, 281.929), ("NVSS J124030+445722", 190.1275518, 44.9561567, 152.470),
    ("NVSS J124936+454404", 192.4014110, 45.7346797, 663.456), ("NVSS J124613+445002", 191.5567015, 44.8340553, 787.047),
    ("NVSS J124227+454002", 190.6154661, 45.6672658, 1027.213), ("NVSS J124127+452028", 190.3637897, 45.3413091, 287.058),
]


def demo_like_lake(root: Path, n_epochs: int = 60):
    """A stand-in for the demo's lake (same source ids, positions and fluxes; the ESE source at 60% for 20 days),
    measured from FITS images, for tests that run the README's examples without the radio chain."""
    from eselake import Lake
    from eselake.ingest.photometry.measure import measure_image
    from eselake.sim.images import make_wcs, point_source_image, write_image

    root.mkdir(parents=True, exist_ok=True)
    shape, cell = (150, 150), 0.02
    wcs = make_wcs(shape, 191.55, 45.08, cell)
    ids = [s[0] for s in DEMO_SOURCES]
    ra = np.array([s[1] for s in DEMO_SOURCES])
    dec = np.array([s[2] for s in DEMO_SOURCES])
    flux = np.array([s[3] for s in DEMO_SOURCES]) / 1000
    x, y = wcs.world_to_pixel_values(ra, dec)
    lake = Lake(root / "lake")
    commit = lake.commit_image

    def commit_image(image, phot):
        if "image_id" not in phot.column_names:
            phot = phot.append_column("image_id", pa.array([image["image_id"]] * phot.num_rows, pa.string()))
        return commit(image, phot)
    lake.commit_image = commit_image
    lake.write_catalog("nvss", pa.table({
        "source_id": ids, "name": ids, "ra_deg": ra, "dec_deg": dec, "flux_mjy": flux * 1000,
        "flux_err_mjy": [1.0] * len(ids), "major_arcsec": [0.0] * len(ids), "minor_arcsec": [0.0] * len(ids),
        "pa_deg": [0.0] * len(ids)}))
    rng = np.random.default_rng(11)
    img_dir = root / "images"
    img_dir.mkdir(exist_ok=True)
    for k in range(n_epochs):
        mjd = 60830.4 + k
        f = flux.copy()                 # constant sources: their scatter is the image noise (eta ~ 1)
        if 60850 <= mjd <= 60870:
            f[0] *= 0.6
        data = point_source_image(shape, x, y, f, 3.0, rms=3e-3, rng=rng)
        path = img_dir / f"tile{k:03d}.pbcor.fits"
        write_image(path, data, wcs, bmaj_deg=0.06, bmin_deg=0.06, mjd=mjd)
        measure_image(lake, path, catalog="nvss")
    return lake, ids

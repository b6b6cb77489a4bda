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

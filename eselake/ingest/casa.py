"""Running CASA tasks cleanly: inside a given folder (casatasks drop *.last files into the working
directory) and with their log sent to the eselake cache (see eselake.offline)."""
from __future__ import annotations

import contextlib
import os
from pathlib import Path


@contextlib.contextmanager
def in_folder(path):
    """Run the block with ``path`` as the working directory (CASA tasks write *.last files there)."""
    path = Path(path)
    path.mkdir(parents=True, exist_ok=True)
    old = os.getcwd()
    os.chdir(path)
    try:
        yield path
    finally:
        os.chdir(old)


def tasks():
    """casatasks, imported lazily (the offline site config is applied by ``import eselake``)."""
    import casatasks
    return casatasks


def tools():
    import casatools
    return casatools

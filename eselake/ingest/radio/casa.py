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


# Messages CASA prints on every call that carry nothing for a user: the component list's close notice, the
# staleness notice of the leap-second table shipped in casadata (no leap second has been added since 2017), and
# tclean's notice that DSA-110 is not in its observatory table.
_NOISE = ("componentlist closed", "Leap second table TAI_UTC seems out-of-date",
          "Until the table is updated (see the CASA documentation", "times and coordinates derived from UTC could be wrong",
          # tclean does not know DSA-110's site and uses the first antenna instead, as intended
          "Did not get the position of DSA-110", "Please contact CASA to add it to the repository",
          "Using first antenna position as refence")


def tasks():
    """casatasks, imported lazily (the offline site config is applied by ``import eselake``); CASA's own
    messages go to its log file, not to the terminal."""
    import casatasks
    casatasks.casalog.showconsole(onconsole=False)
    casatasks.casalog.filterMsg(list(_NOISE))
    return casatasks


def tools():
    import casatools
    tasks()
    return casatools

"""Offline configuration for astropy, CASA and DuckDB, applied once when eselake is imported.

eselake runs on observatory nodes without internet: nothing here may try to download.
- astropy: IERS auto-download off (the bundled astropy-iers-data tables are used, with degraded
  accuracy allowed outside their range), no internet for the data cache or the site registry.
- CASA (casatools/casatasks): a site config (CASASITECONFIG) pointing at the ``casadata`` package,
  measures/data auto-updates off, logs under the eselake cache folder instead of the working directory.
- DuckDB: extensions are never installed automatically (parquet, json and icu are built in).
"""
from __future__ import annotations

import importlib.util
import os
import tempfile
from pathlib import Path

DUCKDB_CONFIG = {
    "autoinstall_known_extensions": False,
    "autoload_known_extensions": False,
    # spill large sorts and joins to the system temp folder, not to ./.tmp in the user's working directory
    "temp_directory": os.path.join(tempfile.gettempdir(), f"eselake-duckdb-{os.getuid()}"),
    # bounded memory: larger joins and sorts spill to temp_directory (ESELAKE_MEMORY_LIMIT to change)
    # 2.5 GB leaves room for Arrow and the search within the 4 GB a 100M-row lake may use (benchmarks/lake_scale.py)
    "memory_limit": os.environ.get("ESELAKE_MEMORY_LIMIT", "2.5GB"),
}

_applied = False
_UNITS = {"": 1, "b": 1, "kb": 1e3, "mb": 1e6, "gb": 1e9, "tb": 1e12, "kib": 2 ** 10, "mib": 2 ** 20, "gib": 2 ** 30,
          "tib": 2 ** 40}


def memory_limit_bytes() -> int | None:
    """DuckDB's memory limit in bytes (``ESELAKE_MEMORY_LIMIT``), None when not a plain size (e.g. '80%')."""
    import re

    m = re.fullmatch(r"\s*([0-9.]+)\s*([a-zA-Z]*)\s*", str(DUCKDB_CONFIG["memory_limit"]))
    unit = m and _UNITS.get(m.group(2).lower())
    return int(float(m.group(1)) * unit) if unit else None


def cache_dir() -> Path:
    """Per-user folder for eselake's generated config and the CASA log (``$ESELAKE_CACHE``)."""
    base = os.environ.get("ESELAKE_CACHE") or os.path.join(
        os.environ.get("XDG_CACHE_HOME") or os.path.expanduser("~/.cache"), "eselake")
    path = Path(base)
    path.mkdir(parents=True, exist_ok=True)
    return path


def _configure_astropy() -> None:
    from astropy.utils import iers
    from astropy.utils.data import conf as data_conf

    iers.conf.auto_download = False
    iers.conf.auto_max_age = None
    iers.conf.iers_degraded_accuracy = "warn"
    data_conf.allow_internet = False


def casa_site_config() -> Path | None:
    """Write (if changed) and return the CASA site config, or None when casadata is not installed."""
    spec = importlib.util.find_spec("casadata")
    if spec is None or not spec.submodule_search_locations:
        return None
    datapath = os.path.join(list(spec.submodule_search_locations)[0], "__data__")
    root = cache_dir()
    (root / "casa").mkdir(exist_ok=True)
    text = (
        "# Written by eselake.offline: CASA data from the casadata package, never updated online.\n"
        f"measurespath = {datapath!r}\n"
        f"datapath = [{datapath!r}]\n"
        "measures_auto_update = False\n"
        "data_auto_update = False\n"
        "skipnetworkcheck = True\n"
        f"cachedir = {str(root / 'casa')!r}\n"
        f"logfile = {str(root / 'casa' / 'casa.log')!r}\n"
        "nologger = True\n"
        "nogui = True\n"
    )
    cfg = root / "casasiteconfig.py"
    if not cfg.exists() or cfg.read_text() != text:
        tmp = cfg.with_suffix(f".{os.getpid()}.tmp")
        tmp.write_text(text)
        os.replace(tmp, cfg)
    return cfg


def apply() -> None:
    """Apply the offline configuration (idempotent)."""
    global _applied
    if _applied:
        return
    cfg = casa_site_config()
    if cfg is not None:
        os.environ["CASASITECONFIG"] = str(cfg)
    _configure_astropy()
    _applied = True

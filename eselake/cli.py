"""The ``eselake`` command line (click). Thin: each command calls the library and prints the result."""
from __future__ import annotations

import sys
from pathlib import Path

import click
import duckdb
from rich.console import Console
from rich.markup import escape

from eselake.errors import EselakeError
from eselake.lake import Lake, default_lake_path
from eselake.output import FORMATS, write_frame

console = Console()
err_console = Console(stderr=True)


EXIT_CODES = """Exit status: 0 success; 1 a batch or check finished with failures (the failed items are
listed); 2 usage or input error (bad option, missing lake, unknown source, bad file); 3 internal error
(a bug: please report it; ESELAKE_DEBUG=1 shows the traceback)."""


def _fail(message: str, code: int) -> None:
    err_console.print(f"[bold red]error:[/bold red] {message}", highlight=False, soft_wrap=True, markup=True)
    sys.exit(code)


def _os_message(exc: OSError) -> str:
    where = f"{exc.filename}: " if getattr(exc, "filename", None) else ""
    return f"{where}{exc.strerror or exc}"


class _Group(click.Group):
    """One error style for every command: ``error: <message>`` on stderr, no traceback, and the exit status
    of EXIT_CODES."""

    def main(self, args=None, prog_name=None, complete_var=None, standalone_mode=True, **extra):
        if not standalone_mode:
            return super().main(args, prog_name, complete_var, standalone_mode=False, **extra)
        import os
        from rich.markup import escape
        try:
            rv = super().main(args, prog_name, complete_var, standalone_mode=False, **extra)
        except click.UsageError as exc:
            hint = f" (see '{exc.ctx.command_path} --help')" if exc.ctx is not None else ""
            _fail(escape(exc.format_message()) + hint, 2)
        except click.ClickException as exc:
            _fail(escape(exc.format_message()), 2)
        except click.Abort:
            _fail("aborted", 130)
        except duckdb.Error as exc:
            _fail(escape(_one_line(str(exc))), 2)
        except (EselakeError, ValueError) as exc:
            _fail(escape(str(exc)), 2)
        except OSError as exc:
            _fail(escape(_os_message(exc)), 2)
        except Exception as exc:                      # a bug: one line, the traceback only on request
            if os.environ.get("ESELAKE_DEBUG"):
                raise
            _fail(escape(f"internal error: {type(exc).__name__}: {exc} (ESELAKE_DEBUG=1 shows the traceback)"), 3)
        sys.exit(rv if isinstance(rv, int) else 0)


def _one_line(message: str) -> str:
    """A DuckDB message in one line: its lines up to the quoted SQL (LINE n: ... and the caret) joined."""
    lines = []
    for ln in message.splitlines():
        if ln.strip().startswith("LINE "):
            break
        if ln.strip():
            lines.append(ln.strip())
    return " ".join(lines) or message.strip()


# Commands that create the lake (or need none); every other command needs an existing lake and says so.
CREATES_LAKE = ("init", "catalog load", "photometry", "ingest", "demo", "simulate", "lake upgrade")


def _require_lake(lake: Lake) -> None:
    require = getattr(lake, "require", None)
    if require is not None:
        require()
    elif not lake.path.is_dir():
        raise EselakeError(f"no lake at {lake.path}; check --lake / ESELAKE_LAKE, or create one with "
                           "`eselake init` or a first ingest")


def pass_lake(f):
    """Pass the Lake of ``--lake`` as first argument; commands not in CREATES_LAKE need it to exist."""
    import functools

    @functools.wraps(f)
    def wrapper(*args, **kwargs):
        ctx = click.get_current_context()
        lake = ctx.find_object(Lake)
        names, c = [], ctx
        while c.parent is not None:              # the command's path below the root (whatever the program name)
            names.append(c.info_name)
            c = c.parent
        path = " ".join(reversed(names))
        if not any(path == c or path.startswith(c + " ") for c in CREATES_LAKE):
            _require_lake(lake)
        return f(lake, *args, **kwargs)
    return wrapper


@click.group(cls=_Group, epilog=EXIT_CODES)
@click.option("--lake", "lake_path", type=click.Path(path_type=Path), envvar="ESELAKE_LAKE",
              default=None, show_envvar=True, help="Lake folder [default: ./lake]")
@click.version_option(package_name="eselake")
@click.pass_context
def main(ctx: click.Context, lake_path: Path | None) -> None:
    """eselake: DSA-110 lightcurves and Extreme Scattering Event detection over a Parquet lake."""
    ctx.obj = Lake(lake_path if lake_path is not None else default_lake_path())


@main.command("init")
@pass_lake
def init_cmd(lake: Lake) -> None:
    """Create an empty lake at --lake (ESELAKE_LAKE, default ./lake); an existing lake is left as it is."""
    exists = lake.exists() if hasattr(lake, "exists") else lake.path.is_dir()
    if exists:
        console.print(f"{lake.path} is already a lake")
        return
    if hasattr(lake, "init"):
        lake.init()
    else:
        try:
            lake.path.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            raise EselakeError(f"cannot create lake folder {lake.path}: {exc.strerror}") from exc
    console.print(f"created an empty lake at {lake.path}")


def format_options(f):
    f = click.option("--output", "-o", type=click.Path(dir_okay=False), default=None,
                     help="Write to this file instead of the terminal")(f)
    f = click.option("--format", "fmt", type=click.Choice(FORMATS), default="table", show_default=True)(f)
    return f


def as_of_option(f):
    """``--as-of VERSION|TIME``: run the command on the lake as it was (reproduce a published result)."""
    import functools

    @click.option("--as-of", "as_of", default=None, metavar="VERSION|TIME",
                  help="The lake as it was: a version of the images table (see `lake history`) or an ISO time")
    @functools.wraps(f)
    def wrapper(lake, *args, as_of=None, **kwargs):
        if as_of is not None:
            lake = Lake(lake.path, as_of=as_of)
        return f(lake, *args, **kwargs)
    return wrapper


@main.command("sql")
@click.argument("query")
@format_options
@click.option("--unsafe", is_flag=True,
              help="Allow writes, ATTACH, INSTALL/LOAD and file access outside the lake (a full DuckDB console)")
@pass_lake
@as_of_option
def sql_cmd(lake: Lake, query: str, fmt: str, output: str | None, unsafe: bool) -> None:
    """Run a SQL QUERY over the lake's views (photometry, variability_stats, ese_candidates, ...).

    Read-only and sandboxed unless --unsafe: only SELECT/EXPLAIN/SET VARIABLE statements, no file access
    outside the lake, no extensions, no configuration changes."""
    import polars as pl

    from eselake.lake.connect import check_read_only
    from eselake.lake.lake import fetch_arrow

    if not unsafe:
        check_read_only(query)
    con = lake.connect(sandbox=not unsafe)
    try:
        frame = pl.from_arrow(fetch_arrow(con, query))
    finally:
        con.close()
    _warn_stale(lake)
    write_frame(frame, fmt, output)


def _warn_stale(lake: Lake) -> None:
    from eselake.faces import stale_note

    if getattr(lake, "stale", None):
        err_console.print(f"note: {stale_note(lake.stale)}", highlight=False)


@main.command("refresh")
@click.option("--full", is_flag=True, help="Re-derive the reference set and every derived dataset from scratch")
@pass_lake
def refresh_cmd(lake: Lake, full: bool) -> None:
    """Bring the derived datasets (gains, daily lightcurves, statistics, ESE search) up to date.

    Incremental by default: only the nights and sources that changed since the last refresh. Every ingest
    ends with one; run it by hand after an interrupted ingest, or with --full to re-derive the reference set."""
    from eselake.lake.derived import refresh

    res = refresh(lake, full=full, progress=lambda m: err_console.print(m, highlight=False))
    if res["mode"] == "current":
        console.print("derived data already current")
    elif res["mode"] == "none":
        console.print("nothing to refresh: the lake holds no images")
    else:
        console.print(f"{res['mode']} refresh: {res['images']} image(s), {res['sources']} source(s) in "
                      f"{res['seconds']:.1f} s")


@main.group("lake")
def lake_group() -> None:
    """Inspect and maintain the lake (Delta tables)."""


@lake_group.command("check")
@click.option("--full", is_flag=True, help="Also read every row of every file and compare it with the statistics "
                                           "the Delta log recorded (slow: reads the whole lake)")
@click.option("--fix", is_flag=True, help="Remove unreferenced files older than --min-age-s and rows of "
                                          "interrupted first measurements; set damaged or missing data files and a "
                                          "damaged newest commit aside (LAKE/quarantine), drop them from their table "
                                          "and rebuild derived data")
@click.option("--min-age-s", type=float, default=3600.0, show_default=True,
              help="Grace period: younger unreferenced files may belong to a commit in progress")
@format_options
@pass_lake
def lake_check(lake: Lake, full: bool, fix: bool, min_age_s: float, fmt: str, output: str | None) -> None:
    """Check the lake against its Delta logs: unreferenced files, referenced files missing, damaged (size, row
    count, statistics), unreadable or of the wrong schema, duplicate rows, two images of one observation."""
    import polars as pl

    from eselake.lake import maintain

    say = lambda m: err_console.print(m, highlight=False)  # noqa: E731
    findings = maintain.check(lake, full=full, progress=say)
    if fix:
        removed = maintain.fix(lake, findings, min_age_s, progress=say)
        repaired = any(f.kind in maintain.REPAIRS for f in findings)
        console.print("repaired:\n  " + "\n  ".join(removed) if repaired else f"removed {len(removed)} leftover(s)")
        findings = maintain.check(lake, full=full)
    errors = [f for f in findings if f.severity == "error"]
    if findings:
        write_frame(pl.DataFrame([f.__dict__ for f in findings]), fmt, output)
    if errors:
        console.print(f"[red]{len(errors)} error(s)[/red] in {lake.path}")
        sys.exit(1)
    leftovers = len(findings) - len(errors)
    console.print(f"lake {lake.path} is clean" + (f" ({leftovers} unreferenced file(s), invisible to queries; "
                                                  "--fix removes those older than --min-age-s)" if leftovers else ""))


@lake_group.command("compact")
@click.option("--target-mb", type=click.IntRange(1, 1 << 20), default=256, show_default=True,
              help="Target file size")
@pass_lake
def lake_compact(lake: Lake, target_mb: int) -> None:
    """Merge small files (Delta OPTIMIZE); photometry clustered by source_id. A transaction: results unchanged,
    concurrent ingests never lost."""
    from eselake.lake import maintain

    done = maintain.compact(lake, target_mb=target_mb)
    if not done:
        console.print("nothing to compact")
    for name, d in done.items():
        console.print(f"{name}: {d['removed']} file(s) rewritten as {d['added']}")


@lake_group.command("delete-image")
@click.argument("image_ids", nargs=-1, required=True)
@pass_lake
def lake_delete_image(lake: Lake, image_ids: tuple[str, ...]) -> None:
    """Remove images and their measurements (one transaction per table), then refresh the derived data."""
    known = set(lake.sql("SELECT image_id FROM images WHERE image_id IN (SELECT unnest(?))",
                         [list(image_ids)])["image_id"].to_list())
    missing = [i for i in image_ids if i not in known]
    if missing:
        raise EselakeError(f"no image {missing[0]!r} in the lake" + (f" (and {len(missing) - 1} more)"
                                                                     if len(missing) > 1 else ""))
    n = lake.delete_images(list(image_ids))
    console.print(f"removed {n} image(s) and their measurements")
    _refresh_after(lake)


@lake_group.command("vacuum")
@click.option("--retention-hours", type=float, default=168.0, show_default=True,
              help="Keep files that versions of this age still need (time travel further back ends)")
@click.option("--dry-run", is_flag=True)
@pass_lake
def lake_vacuum(lake: Lake, retention_hours: float, dry_run: bool) -> None:
    """Delete data files no recent version references (Delta VACUUM)."""
    from eselake.lake import maintain

    done = maintain.vacuum(lake, retention_hours=retention_hours, dry_run=dry_run)
    verb = "would delete" if dry_run else "deleted"
    console.print(f"{verb} {sum(done.values())} file(s)" + "".join(f"\n  {k}: {v}" for k, v in done.items()))


@lake_group.command("history")
@click.option("--limit", type=int, default=30, show_default=True)
@format_options
@pass_lake
def lake_history(lake: Lake, limit: int, fmt: str, output: str | None) -> None:
    """Versions of every table, newest first, and what wrote them (use with --as-of)."""
    import polars as pl

    from eselake.lake import maintain

    frame = pl.DataFrame(maintain.history(lake, limit))
    if fmt == "table" and frame.height:        # the commit details only in csv/json
        frame = frame.drop("detail")
    write_frame(frame, fmt, output)


@lake_group.command("upgrade")
@pass_lake
def lake_upgrade(lake: Lake) -> None:
    """Convert a lake of eselake 0.1's file layout to Delta tables (old files moved to _old_layout/)."""
    from eselake.lake import maintain
    from eselake.lake.derived import refresh

    counts = maintain.upgrade(lake)
    console.print("converted " + ", ".join(f"{v} {k} row(s)" for k, v in counts.items()))
    refresh(lake, full=True)
    console.print(f"old files kept in {lake.path / '_old_layout'}; delete that folder when satisfied")


@lake_group.command("info")
@format_options
@pass_lake
def lake_info(lake: Lake, fmt: str, output: str | None) -> None:
    """Per table: version, rows, files and size; derived datasets current, stale or missing."""
    if fmt == "table":
        console.print(f"lake: {lake.path}")
    write_frame(lake.info(), fmt, output)


# ------------------------------------------------------------------------------------------ catalogues
@main.group("catalog")
def catalog_group() -> None:
    """Load and list catalogues (NVSS, FIRST, VLASS, RACS, source lists)."""


@catalog_group.command("load")
@click.argument("catalog", type=click.Choice(["nvss", "first", "vlass", "racs", "sources"],
                                             case_sensitive=False))
@click.argument("file", type=click.Path(dir_okay=False, path_type=Path))
@pass_lake
def catalog_load(lake: Lake, catalog: str, file: Path) -> None:
    """Load CATALOG from FILE (FITS, VOTable or CSV), replacing an earlier load of that catalogue."""
    from eselake.ingest.catalogs.catalog import load_catalog_file

    import warnings

    from eselake.ingest.catalogs.catalog import CatalogWarning, catalog_checks

    with warnings.catch_warnings():
        warnings.simplefilter("ignore", CatalogWarning)        # reported below, with the counts
        table = load_catalog_file(file, catalog)
    lake.write_catalog(catalog, table)
    console.print(f"loaded {table.num_rows} {catalog.upper()} sources into {lake.path}")
    checks = {k: v for k, v in catalog_checks(table).items() if k != "rows" and v}
    if checks:
        err_console.print("[yellow]rows with missing values:[/yellow] "
                          + ", ".join(f"{v} {k.replace('_', ' ')}" for k, v in checks.items()), highlight=False)


@catalog_group.command("list")
@pass_lake
def catalog_list(lake: Lake) -> None:
    """Catalogues in the lake with their source counts and flux ranges."""
    write_frame(lake.sql("""
        SELECT catalog, count(*) AS n_sources, min(flux_mjy) AS min_flux_mjy, max(flux_mjy) AS max_flux_mjy,
               min(dec_deg) AS min_dec_deg, max(dec_deg) AS max_dec_deg, max(loaded_at) AS loaded_at
        FROM catalog_sources GROUP BY catalog ORDER BY catalog"""), "table", None)


# ------------------------------------------------------------------------------------------ photometry
@main.group("photometry")
def photometry_group() -> None:
    """Forced photometry of catalogue sources on FITS images, into the lake."""


def _scheduler_option(f):
    """--scheduler, shared by the ingest commands and photometry batch (jobs as Dask tasks)."""
    return click.option("--scheduler", default=None, envvar="ESELAKE_SCHEDULER", show_envvar=True, metavar="ADDRESS",
                        help="Run the jobs as tasks on a Dask distributed cluster: a scheduler address "
                             "(tcp://host:8786) or local:N for N local worker processes. Workers must see the "
                             "same lake and products folders. [default: a local pool of --workers]")(f)


def _beam_option(f):
    return click.option("--beam", nargs=3, type=float, default=None, metavar="BMAJ BMIN BPA",
                        help="Restoring beam in deg for images without BMAJ/BMIN/BPA keywords")(f)


def _mjd_option(f):
    return click.option("--mjd", type=float, default=None,
                        help="Observation mid-time (MJD, UTC) for images without DATE-OBS/MJD-OBS")(f)


def _plane_option(f):
    return click.option("--plane", type=int, default=None,
                        help="Plane (0-based) of a cube with several spectral planes")(f)


def _print_measured(result) -> None:
    console.print(f"{result.path.name}: measured {result.n_sources} sources "
                  f"({result.n_flagged} flagged) at MJD {result.mjd:.5f} -> image {result.image_id}")
    if not result.n_sources:
        err_console.print(f"warning: no catalogue source falls inside {result.path.name}; check its sky "
                          "position and the catalogue (eselake catalog list)", highlight=False)


@photometry_group.command("nvss")
@click.option("--fits", "fits_path", required=True, type=click.Path(dir_okay=False, path_type=Path))
@click.option("--min-mjy", type=float, default=10.0, show_default=True, help="Catalogue flux limit (mJy)")
@click.option("--catalog", default="nvss", show_default=True, help="Catalogue loaded in the lake")
@click.option("--noise-map", type=click.Path(dir_okay=False, path_type=Path), default=None)
@_plane_option
@_beam_option
@_mjd_option
@pass_lake
def photometry_nvss(lake, fits_path, min_mjy, catalog, noise_map, plane, beam, mjd) -> None:
    """Measure all catalogue (NVSS) sources in the field of view of one image."""
    from eselake.ingest.photometry.measure import measure_image

    _print_measured(measure_image(lake, fits_path, catalog=catalog, min_flux_mjy=min_mjy, beam=beam,
                                  noise_map=noise_map, plane=plane, mjd=mjd))
    _refresh_after(lake)


@photometry_group.command("mosaic")
@click.option("--fits", "fits_path", required=True, type=click.Path(dir_okay=False, path_type=Path))
@click.option("--radius-deg", type=float, default=1.5, show_default=True, help="Search radius from centre")
@click.option("--min-flux-mjy", type=float, default=5.0, show_default=True)
@click.option("--catalog", default="nvss", show_default=True)
@_plane_option
@_beam_option
@_mjd_option
@pass_lake
def photometry_mosaic(lake, fits_path, radius_deg, min_flux_mjy, catalog, plane, beam, mjd) -> None:
    """Measure catalogue sources within a radius of a mosaic's centre."""
    from eselake.ingest.photometry.measure import measure_image

    _print_measured(measure_image(lake, fits_path, catalog=catalog, min_flux_mjy=min_flux_mjy,
                                  radius_deg=radius_deg, beam=beam, kind="mosaic", plane=plane, mjd=mjd))
    _refresh_after(lake)


@photometry_group.command("batch")
@click.option("--source-list", type=click.Path(dir_okay=False, path_type=Path), default=None,
              help="CSV with name,ra,dec (or source_id,ra_deg,dec_deg); default: the --catalog in the lake")
@click.option("--catalog", default="nvss", show_default=True)
@click.option("--image-dir", required=True, type=click.Path(file_okay=False, path_type=Path))
@click.option("--pattern", default="*", show_default=True,
              help="File names to take (FITS names only: .fits/.fit/.fts, also .gz/.fz/.bz2)")
@click.option("--min-mjy", type=float, default=None)
@click.option("--workers", type=int, default=1, show_default=True)
@_scheduler_option
@click.option("--force", is_flag=True, help="Re-measure images already in the lake")
@click.option("--output", "-o", type=click.Path(dir_okay=False), default=None,
              help="Also write this run's measurements to a CSV file")
@_plane_option
@_beam_option
@pass_lake
def photometry_batch(lake, source_list, catalog, image_dir, pattern, min_mjy, workers, scheduler, force, output,
                     plane, beam) -> None:
    """Measure many sources on every image of a folder (skips psf/residual/model/pb images)."""
    from rich.progress import Progress

    from eselake.ingest.catalogs.catalog import load_catalog_file
    from eselake.ingest.photometry.measure import find_images, measure_batch

    images = find_images(image_dir, pattern)
    if not images:
        raise click.ClickException(f"no sky images matching {pattern} under {image_dir}")
    kwargs = dict(min_flux_mjy=min_mjy, beam=beam, skip_existing=not force, catalog=catalog, plane=plane)
    if source_list is not None:
        kwargs["sources"] = load_catalog_file(source_list, "sources")
    with Progress(console=err_console, transient=False) as progress:
        task = progress.add_task("photometry", total=len(images))

        def on_done(path, result, err):
            progress.advance(task)
            if err:
                progress.console.print(f"[red]failed[/red] {path}: {err}", highlight=False)

        done, errors = measure_batch(lake, images, workers=workers, scheduler=scheduler, on_done=on_done, **kwargs)
    _refresh_after(lake)
    skipped = sum(r.skipped for r in done)
    console.print(f"{len(done) - skipped} images measured, {skipped} already in the lake, "
                  f"{len(errors)} failed; {sum(r.n_sources for r in done)} measurements")
    if output:
        ids = [r.image_id for r in done]
        write_frame(lake.sql("SELECT * FROM photometry WHERE image_id IN (SELECT unnest(?)) "
                             "ORDER BY source_id, mjd", [ids]), "csv", output)
    if errors:
        sys.exit(1)


# ------------------------------------------------------------------------------------------ detection
PRESET_CHOICE = click.Choice(["conservative", "moderate", "sensitive"])


def _detection_options(f):
    """--preset, --min-sigma (and the seed's --use-composite-scoring); unset options take the detection's own
    defaults, the same for the CLI, Python, the ese_candidates view, the API and the page."""
    for opt in reversed([
        click.option("--preset", type=PRESET_CHOICE, default=None,
                     help="False-alarm target: conservative, moderate or sensitive [default: the detection's "
                          "default, the same in every face]"),
        click.option("--min-sigma", type=float, default=None,
                     help="Also require this Gaussian-equivalent significance"),
        click.option("--use-composite-scoring", "composite", is_flag=True, default=None,
                     help="The seed's option; the detection says what it does (retired: a note, no effect)"),
    ]):
        f = opt(f)
    return f


def _vertical(df, title: str):
    """A one-row frame as a two-column (field, value) table: readable at 80 columns."""
    from rich.table import Table

    from eselake.output import _cell

    table = Table(title=title, show_header=False, pad_edge=False)
    table.add_column("field", style="bold")
    table.add_column("value", overflow="fold")
    for name, value in df.row(0, named=True).items():
        table.add_row(name, _cell(value, name))
    return table


@main.command("ese-detect")
@_detection_options
@click.option("--source-id", default=None, help="One source: is it a candidate, and its scores either way")
@click.option("--status", type=click.Choice(["active", "investigated", "dismissed"]), default=None,
              help="Only candidates with this review status")
@click.option("--recompute", is_flag=True, hidden=True, help="Accepted for the seed; results are always fresh")
@format_options
@pass_lake
@as_of_option
def ese_detect(lake, preset, min_sigma, composite, source_id, status, recompute, fmt, output) -> None:
    """ESE candidates, best first (kept current by every ingest; --as-of reproduces an earlier list).

    With no options this is the same list as Python's detect_ese_candidates(lake), the ese_candidates SQL
    view, the API's /api/ese/candidates and the web page. --source-id gives that list's verdict on one source.
    """
    import polars as pl

    from eselake import faces

    opts = dict(preset=preset, min_sigma=min_sigma, use_composite_scoring=composite or None, status=status)
    what = faces.describe(**opts)
    notes: list[str] = []
    df = faces.detect(lake, notes=notes, source_id=source_id, **opts)
    for note in dict.fromkeys(notes):
        err_console.print(f"[yellow]note:[/yellow] {escape(note)}", highlight=False, soft_wrap=True)
    if source_id is None:
        write_frame(df, fmt, output, title=f"ESE candidates ({what})")
        return
    from eselake.source import Source

    is_candidate = df.height > 0
    if not is_candidate:
        scores = Source(source_id, lake).ese           # raises for an unknown source
        df = faces.order_candidates(pl.DataFrame([scores])) if scores else pl.DataFrame({"source_id": [source_id]})
    df = df.select(pl.col("source_id"), pl.lit(is_candidate).alias("candidate"), pl.exclude("source_id"))
    if fmt == "table" and not output:
        verdict = "is an ESE candidate" if is_candidate else "is not an ESE candidate"
        console.print(f"{source_id} {verdict} ({what})", highlight=False, markup=False, soft_wrap=True)
        console.print(_vertical(df, None))
        return
    write_frame(df, fmt, output)


@main.command("review")
@click.argument("source_id")
@click.option("--status", type=click.Choice(["active", "investigated", "dismissed"]), required=True)
@click.option("--notes", default="", help="Free text kept with the review")
@click.option("--reviewer", default=None, help="Reviewer name [default: login name]")
@pass_lake
def review_cmd(lake, source_id, status, notes, reviewer) -> None:
    """Record the review status of a candidate (kept in an append-only dataset)."""
    from eselake.detection import review

    review(lake, source_id, status, notes, reviewer)
    console.print(f"{source_id}: {status}" + (f" ({notes})" if notes else ""), highlight=False, markup=False)


@main.command("export")
@click.option("--source-id", required=True)
@click.option("--format", "fmt", type=click.Choice(["csv", "json", "votable", "parquet"]), default=None,
              help="csv, json, votable or parquet [default: from the --output extension, else csv]")
@click.option("--output", "-o", type=click.Path(dir_okay=False), default=None,
              help="Output file [default: stdout for csv, json and votable]")
@pass_lake
@as_of_option
def export_cmd(lake, source_id, fmt, output) -> None:
    """Export one source's lightcurve: source_id, position, catalogue flux and units in every format
    (VOTable FIELD units and UCDs, PARAMs for the source), ISO dates beside MJD."""
    from eselake.output import format_of, write_bytes_atomic
    from eselake.source import Source

    if fmt is None:
        fmt = format_of(output) if output else "csv"
    if fmt == "parquet" and not output:
        raise EselakeError("--format parquet is binary: give --output FILE")
    data = Source(source_id, lake).export(fmt)
    if output:
        write_bytes_atomic(output, data)
        err_console.print(f"wrote {output}", highlight=False)
    else:
        sys.stdout.write(data.decode())
        sys.stdout.flush()


# ------------------------------------------------------------------------------------------ charts
@main.group("plot")
def plot_group() -> None:
    """Charts (PNG, SVG, PDF, self-contained HTML or Vega-Lite JSON, by the output's extension)."""


@plot_group.command("lightcurve")
@click.argument("source_id")
@click.option("--output", "-o", required=True, type=click.Path(dir_okay=False))
@click.option("--raw", is_flag=True, help="Plot raw peak fluxes instead of normalised fluxes")
@click.option("--dip/--no-dip", default=None,
              help="Shade the dip and draw the fitted model [default: only when the source is a candidate]")
@pass_lake
def plot_lightcurve(lake, source_id, output, raw, dip) -> None:
    """Lightcurve of SOURCE_ID: error bars, calendar dates, and for ESE candidates the dip and its model."""
    from eselake.source import Source

    Source(source_id, lake).plot_lightcurve(use_normalized=not raw, highlight_ese_period=dip,
                                            highlight_baseline=dip, show_fit=dip, outfile=output)
    console.print(f"wrote {output}", highlight=False)


def _preset_chart_command(name: str, builder: str, doc: str):
    @plot_group.command(name, help=doc)
    @click.option("--output", "-o", required=True, type=click.Path(dir_okay=False))
    @_detection_options
    @pass_lake
    def command(lake, output, preset, min_sigma, composite) -> None:
        from eselake import charts

        chart = getattr(charts, builder)(lake, preset=preset, min_sigma=min_sigma,
                                         use_composite_scoring=composite or None)
        charts.save_chart(chart, output)
        console.print(f"wrote {output}", highlight=False)
    return command


plot_variability = _preset_chart_command("variability", "variability_chart",
                                         "eta-V diagram of all sources with ESE candidates highlighted.")
plot_candidates = _preset_chart_command("candidates", "candidates_chart",
                                        "Summary of the ESE candidates.")


# ------------------------------------------------------------------------------------------ server
@main.command("serve")
@click.option("--host", default="127.0.0.1", show_default=True, help="Interface to listen on")
@click.option("--port", type=click.IntRange(1, 65535), default=8000, show_default=True)
@click.option("--writable", is_flag=True, help="Accept reviews from the page and API (read-only otherwise)")
@click.option("--allow-host", "allow_hosts", multiple=True, metavar="NAME",
              help="Also accept requests whose Host header is NAME (repeatable; 127.0.0.1, localhost and "
                   "--host are always accepted)")
@pass_lake
def serve(lake, host, port, writable, allow_hosts) -> None:
    """Web pages at / (candidates, search, sources, eta-V, images) and the REST API (OpenAPI at /docs)."""
    import socket

    import uvicorn

    from eselake.api import create_app

    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    with socket.socket(family, socket.SOCK_STREAM) as probe:
        probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            probe.bind((host, port))
        except OSError as exc:
            raise EselakeError(f"cannot listen on {host}:{port}: {exc.strerror or exc}") from exc
    hosts = ["127.0.0.1", "localhost", "::1", host, *allow_hosts]
    app = create_app(lake, writable=writable, allowed_hosts=hosts)
    console.print(f"serving {lake.path} on http://{host}:{port}/ ({'writable' if writable else 'read-only'}; "
                  f"Host header allowed: {', '.join(dict.fromkeys(h for h in hosts if h not in ('0.0.0.0', '::')))})",
                  highlight=False, soft_wrap=True)
    uvicorn.run(app, host=host, port=port, log_level="warning")


# ------------------------------------------------------------------------------------------ radio chain
@main.command("simulate")
@click.option("--out", "-o", required=True, type=click.Path(file_okay=False, path_type=Path))
@click.option("--days", type=int, default=60, show_default=True)
@click.option("--tiles-per-day", type=int, default=1, show_default=True)
@click.option("--dec-deg", type=float, default=45.0, show_default=True)
@click.option("--antennas", "n_antennas", type=int, default=32, show_default=True)
@click.option("--channels", "nchan", type=int, default=4, show_default=True, help="Channels per subband (48 full)")
@click.option("--integrations", type=int, default=12, show_default=True, help="Per tile (24 full)")
@click.option("--sources", "n_sources", type=int, default=14, show_default=True)
@click.option("--no-ese", is_flag=True, help="Only stable sources")
@click.option("--seed", type=int, default=1, show_default=True)
def simulate_cmd(out, days, tiles_per_day, dec_deg, n_antennas, nchan, integrations, n_sources, no_ese, seed):
    """Simulate DSA-110 tiles (16 UVH5 subbands each), with the matching catalogue and calibrator list."""
    from rich.progress import Progress

    from eselake.sim.visibilities import SimConfig, simulate

    cfg = SimConfig(out=out, days=days, tiles_per_day=tiles_per_day, dec_deg=dec_deg, n_antennas=n_antennas,
                    nchan=nchan, n_integrations=integrations, n_sources=n_sources, ese=not no_ese, seed=seed)
    with Progress(console=err_console) as prog:
        task = prog.add_task("simulating tiles", total=days * tiles_per_day)
        simulate(cfg, progress=lambda k, n: prog.update(task, completed=k))
    console.print(f"wrote {days * tiles_per_day} tiles to {out / 'uvh5'}, catalogue {out / 'catalog.csv'}, "
                  f"calibrators {out / 'calibrators.csv'}")


@main.group("ingest")
def ingest_group() -> None:
    """Run the radio chain into the lake (UVH5 -> MS -> calibration -> image -> photometry)."""


def _ingest_summary(results, what: str) -> None:
    counts = {s: sum(r.stage == s for r in results) for s in ("done", "skipped", "failed")}
    console.print(f"{counts['done']} {what} ingested, {counts['skipped']} already in the lake, "
                  f"{counts['failed']} failed")
    if counts["failed"]:
        sys.exit(1)


def _print_tile(res, k, n) -> None:
    if res.stage == "failed":
        err_console.print(f"[red]tile {res.tile_id} failed[/red] {res.error}", highlight=False)


def _chain_options(f):
    """The options shared by the ingest commands that run calibration, imaging and photometry."""
    for opt in reversed([
        click.option("--products", type=click.Path(file_okay=False, path_type=Path), default=Path("products"),
                     show_default=True, help="Folder for Measurement Sets, calibration tables and images"),
        click.option("--calibrators", default=None, type=click.Path(dir_okay=False, path_type=Path),
                     help="Calibrator list: CSV (name,ra_deg,dec_deg,flux_jy) or the VLA calibrator list "
                          "(needed unless --skip-calibration)"),
        click.option("--catalog", default="nvss", show_default=True, help="Catalogue in the lake to measure"),
        click.option("--dec-deg", type=float, default=None,
                     help="Pointing declination, when the data do not record it"),
        click.option("--workers", type=int, default=1, show_default=True),
        _scheduler_option,
        click.option("--imager", type=click.Choice(["auto", "wsclean", "tclean"]), default="auto",
                     show_default=True),
        click.option("--fov-deg", type=float, default=3.0, show_default=True),
        click.option("--force", is_flag=True, help="Re-process what is already in the lake"),
    ]):
        f = opt(f)
    return f


def _refresh_after(lake: Lake) -> None:
    """Every ingest ends with one refresh of the derived datasets (once per batch)."""
    from eselake.lake.derived import refresh

    if lake.exists():
        res = refresh(lake)
        if res["mode"] not in ("current", "none"):
            err_console.print(f"derived data refreshed ({res['mode']}, {res['sources']} source(s), "
                              f"{res['seconds']:.1f} s)", highlight=False)


def _run_chain(ingest, inputs, what: str, lake: Lake | None = None, **options) -> None:
    """Run an ingest function with a progress bar, print failures as they come, refresh the derived data,
    then a summary."""
    from rich.progress import Progress

    with Progress(console=err_console) as prog:
        task = prog.add_task(what, total=None)

        def on_result(res, k, n):
            prog.update(task, completed=k, total=n)
            _print_tile(res, k, n)

        results = ingest(inputs, on_result=on_result, **options)
    if lake is not None:
        _refresh_after(lake)
    _ingest_summary(results, what)


@ingest_group.command("uvh5")
@click.argument("uvh5_dir", type=click.Path(file_okay=False, path_type=Path))
@_chain_options
@pass_lake
def ingest_uvh5_cmd(lake, uvh5_dir, **options):
    """Ingest every complete tile of UVH5_DIR not yet in the lake (resumable)."""
    from eselake.ingest.radio.pipeline import ingest_uvh5

    _run_chain(lambda d, **kw: ingest_uvh5(lake, d, kw.pop("products"), **kw), uvh5_dir, "tiles", lake=lake,
               **options)


@ingest_group.command("ms")
@click.argument("ms_paths", nargs=-1, required=True, type=click.Path(exists=True, file_okay=False, path_type=Path))
@_chain_options
@click.option("--telescope", default=None,
              help="Accept a Measurement Set of this telescope (not DSA-110); needs --no-pbcor")
@click.option("--pbcor/--no-pbcor", default=True, show_default=True,
              help="--no-pbcor: no DSA-110 primary-beam correction, measure the restored image as it is")
@click.option("--skip-calibration", is_flag=True, help="The data are calibrated: image CORRECTED_DATA (or DATA)")
@pass_lake
def ingest_ms_cmd(lake, ms_paths, **options):
    """Enter the chain with Measurement Sets: calibrate, image, measure (inputs are copied, not modified).
    DSA-110 data only, unless --telescope NAME --no-pbcor [--skip-calibration]."""
    from eselake.ingest.radio.pipeline import ingest_ms

    _run_chain(lambda ms, **kw: ingest_ms(lake, list(ms), kw.pop("products"), **kw), ms_paths,
               "measurement sets", lake=lake, **options)


@ingest_group.command("fits")
@click.argument("image_dir", type=click.Path(file_okay=False, path_type=Path))
@click.option("--catalog", default="nvss", show_default=True)
@click.option("--workers", type=int, default=1, show_default=True)
@_scheduler_option
@_plane_option
@_beam_option
@click.pass_context
def ingest_fits_cmd(ctx, image_dir, catalog, workers, scheduler, plane, beam):
    """Enter the chain with FITS images: forced photometry of the --catalog on every sky image."""
    ctx.invoke(photometry_batch, source_list=None, catalog=catalog, image_dir=image_dir, pattern="*",
               min_mjy=None, workers=workers, scheduler=scheduler, force=False, output=None, plane=plane, beam=beam)


@ingest_group.command("table")
@click.argument("file", type=click.Path(dir_okay=False, path_type=Path))
@click.option("--table", "table_name", default="photometry", show_default=True, help="Table of a SQLite file")
@pass_lake
def ingest_table_cmd(lake, file, table_name):
    """Import measurements made elsewhere: CSV, Parquet, or a SQLite products database (the seed's table
    photometry: source_id, mjd, peak_jyb, peak_err_jyb, image_path[, image_id, ra_deg, dec_deg, flags,
    local_rms_jyb, snr]). Idempotent; bad rows are rejected with counts and reasons."""
    from eselake.ingest.table import import_table

    res = import_table(lake, file, table=table_name, refresh=False)
    _refresh_after(lake)
    console.print(f"imported {res.rows} row(s) of {res.images} image(s) from {file}")
    for reason, n in res.rejected.items():
        err_console.print(f"rejected {n} row(s): {reason}", highlight=False)


@main.command("demo")
@click.option("--days", type=int, default=60, show_default=True)
@click.option("--out", type=click.Path(file_okay=False, path_type=Path), default=Path("demo-out"), show_default=True)
@click.option("--workers", type=int, default=2, show_default=True)
@click.option("--imager", type=click.Choice(["auto", "wsclean", "tclean"]), default="auto", show_default=True)
@click.pass_context
def demo_cmd(ctx, days, out, workers, imager):
    """Simulate a DSA-110 strip with one ESE, run the whole chain, print candidates, chart the best."""
    from eselake.demo import run_demo

    root = ctx.find_root()
    lake = root.obj if root.params.get("lake_path") is not None else None
    run_demo(out, days=days, workers=workers, lake=lake, imager=imager, console=console)


def run() -> None:
    """The ``eselake`` program: ``main``, then leave without the interpreter's teardown, where the native
    thread pools of Arrow and delta-rs can abort an already finished command ("terminate called without an
    active exception", delta-io/delta-rs#2184), turning its exit status into 134."""
    import os

    try:
        main()
        code = 0
    except SystemExit as exc:
        code = exc.code if isinstance(exc.code, int) else (0 if exc.code is None else 1)
        if isinstance(exc.code, str):
            print(exc.code, file=sys.stderr)
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(code)

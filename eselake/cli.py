"""The ``eselake`` command line (click). Thin: each command calls the library and prints the result."""
from __future__ import annotations

import sys
from pathlib import Path

import click
import duckdb
from rich.console import Console

from eselake.errors import EselakeError
from eselake.lake import Lake, default_lake_path
from eselake.output import FORMATS, write_frame

console = Console()
err_console = Console(stderr=True)


class _Group(click.Group):
    """Turns eselake's user-facing errors into one clear line and exit status 2."""

    def invoke(self, ctx):
        try:
            return super().invoke(ctx)
        except (EselakeError, duckdb.Error, ValueError) as exc:
            err_console.print(f"[bold red]error:[/bold red] {exc}", highlight=False, soft_wrap=True)
            sys.exit(2)


pass_lake = click.make_pass_decorator(Lake, ensure=False)


@click.group(cls=_Group)
@click.option("--lake", "lake_path", type=click.Path(path_type=Path), envvar="ESELAKE_LAKE",
              default=None, show_envvar=True, help="Lake folder [default: ./lake]")
@click.version_option(package_name="eselake")
@click.pass_context
def main(ctx: click.Context, lake_path: Path | None) -> None:
    """eselake: DSA-110 lightcurves and Extreme Scattering Event detection over a Parquet lake."""
    ctx.obj = Lake(lake_path if lake_path is not None else default_lake_path())


def format_options(f):
    f = click.option("--output", "-o", type=click.Path(dir_okay=False), default=None,
                     help="Write to this file instead of the terminal")(f)
    f = click.option("--format", "fmt", type=click.Choice(FORMATS), default="table", show_default=True)(f)
    return f


@main.command("sql")
@click.argument("query")
@format_options
@pass_lake
def sql_cmd(lake: Lake, query: str, fmt: str, output: str | None) -> None:
    """Run a SQL QUERY over the lake's views (photometry, variability_stats, ese_candidates, ...)."""
    write_frame(lake.sql(query), fmt, output)


@main.group("lake")
def lake_group() -> None:
    """Inspect and maintain the lake folder."""


@lake_group.command("check")
@click.option("--fix", is_flag=True, help="Remove leftovers of interrupted writes older than --min-age-s")
@click.option("--min-age-s", type=float, default=3600.0, show_default=True)
@pass_lake
def lake_check(lake: Lake, fix: bool, min_age_s: float) -> None:
    """Find orphan temp files, unreferenced files, duplicate rows and unreadable files."""
    import polars as pl

    from eselake.lake import maintain

    findings = maintain.check(lake)
    errors = [f for f in findings if f.severity == "error"]
    if findings:
        write_frame(pl.DataFrame([f.__dict__ for f in findings]), "table", None)
    if fix:
        removed = maintain.fix(lake, findings, min_age_s)
        console.print(f"removed {len(removed)} leftover file(s)")
    if errors:
        console.print(f"[red]{len(errors)} error(s)[/red] in {lake.path}")
        sys.exit(1)
    leftovers = len(findings) - len(errors)
    console.print(f"lake {lake.path} is clean" + (f" ({leftovers} leftover(s) of interrupted or superseded writes, "
                                                  "invisible to queries; --fix removes them)" if leftovers else ""))


@lake_group.command("compact")
@click.option("--night", "nights", multiple=True, help="Only these nights (YYYY-MM-DD) [default: all]")
@pass_lake
def lake_compact(lake: Lake, nights) -> None:
    """Merge each night's small files into one file sorted by source_id (atomic; results unchanged)."""
    from eselake.lake import maintain

    done = maintain.compact(lake, list(nights) or None)
    console.print(f"compacted {len(done)} night(s), {sum(done.values())} rows")


@lake_group.command("info")
@pass_lake
def lake_info(lake: Lake) -> None:
    """Rows, files and bytes per dataset."""
    console.print(f"lake: {lake.path}")
    write_frame(lake.info(), "table", None)


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

    table = load_catalog_file(file, catalog)
    lake.write_catalog(catalog, table)
    console.print(f"loaded {table.num_rows} {catalog.upper()} sources into {lake.path}")


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


def _beam_option(f):
    return click.option("--beam", nargs=3, type=float, default=None, metavar="BMAJ BMIN BPA",
                        help="Restoring beam in deg for images without BMAJ/BMIN/BPA keywords")(f)


def _print_measured(result) -> None:
    console.print(f"{result.path.name}: measured {result.n_sources} sources "
                  f"({result.n_flagged} flagged) at MJD {result.mjd:.5f} -> image {result.image_id}")


@photometry_group.command("nvss")
@click.option("--fits", "fits_path", required=True, type=click.Path(dir_okay=False, path_type=Path))
@click.option("--min-mjy", type=float, default=10.0, show_default=True, help="Catalogue flux limit (mJy)")
@click.option("--catalog", default="nvss", show_default=True, help="Catalogue loaded in the lake")
@click.option("--noise-map", type=click.Path(dir_okay=False, path_type=Path), default=None)
@_beam_option
@pass_lake
def photometry_nvss(lake, fits_path, min_mjy, catalog, noise_map, beam) -> None:
    """Measure all catalogue (NVSS) sources in the field of view of one image."""
    from eselake.ingest.photometry.measure import measure_image

    _print_measured(measure_image(lake, fits_path, catalog=catalog, min_flux_mjy=min_mjy, beam=beam,
                                  noise_map=noise_map))


@photometry_group.command("mosaic")
@click.option("--fits", "fits_path", required=True, type=click.Path(dir_okay=False, path_type=Path))
@click.option("--radius-deg", type=float, default=1.5, show_default=True, help="Search radius from centre")
@click.option("--min-flux-mjy", type=float, default=5.0, show_default=True)
@click.option("--catalog", default="nvss", show_default=True)
@_beam_option
@pass_lake
def photometry_mosaic(lake, fits_path, radius_deg, min_flux_mjy, catalog, beam) -> None:
    """Measure catalogue sources within a radius of a mosaic's centre."""
    from eselake.ingest.photometry.measure import measure_image

    _print_measured(measure_image(lake, fits_path, catalog=catalog, min_flux_mjy=min_flux_mjy,
                                  radius_deg=radius_deg, beam=beam, kind="mosaic"))


@photometry_group.command("batch")
@click.option("--source-list", type=click.Path(dir_okay=False, path_type=Path), default=None,
              help="CSV with name,ra,dec (or source_id,ra_deg,dec_deg); default: the --catalog in the lake")
@click.option("--catalog", default="nvss", show_default=True)
@click.option("--image-dir", required=True, type=click.Path(file_okay=False, path_type=Path))
@click.option("--pattern", default="*.fits", show_default=True)
@click.option("--min-mjy", type=float, default=None)
@click.option("--workers", type=int, default=1, show_default=True)
@click.option("--force", is_flag=True, help="Re-measure images already in the lake")
@click.option("--output", "-o", type=click.Path(dir_okay=False), default=None,
              help="Also write this run's measurements to a CSV file")
@_beam_option
@pass_lake
def photometry_batch(lake, source_list, catalog, image_dir, pattern, min_mjy, workers, force, output,
                     beam) -> None:
    """Measure many sources on every image of a folder (skips psf/residual/model/pb images)."""
    from rich.progress import Progress

    from eselake.ingest.catalogs.catalog import load_catalog_file
    from eselake.ingest.photometry.measure import find_images, measure_batch

    images = find_images(image_dir, pattern)
    if not images:
        raise click.ClickException(f"no sky images matching {pattern} under {image_dir}")
    kwargs = dict(min_flux_mjy=min_mjy, beam=beam, skip_existing=not force, catalog=catalog)
    if source_list is not None:
        kwargs["sources"] = load_catalog_file(source_list, "sources")
    with Progress(console=err_console, transient=False) as progress:
        task = progress.add_task("photometry", total=len(images))

        def on_done(path, result, err):
            progress.advance(task)
            if err:
                progress.console.print(f"[red]failed[/red] {path}: {err}", highlight=False)

        done, errors = measure_batch(lake, images, workers=workers, on_done=on_done, **kwargs)
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
@main.command("ese-detect")
@click.option("--preset", type=click.Choice(["conservative", "moderate", "sensitive"]), default="moderate",
              show_default=True)
@click.option("--min-sigma", type=float, default=None, help="Override the preset's sigma_deviation threshold")
@click.option("--use-composite-scoring", is_flag=True, help="Select by composite score (0-10) instead")
@click.option("--source-id", default=None, help="Show one source (its scores even if not a candidate)")
@click.option("--status", type=click.Choice(["active", "investigated", "dismissed"]), default=None)
@click.option("--recompute", is_flag=True, hidden=True, help="Accepted for the seed; results are always fresh")
@format_options
@pass_lake
def ese_detect(lake, preset, min_sigma, use_composite_scoring, source_id, status, recompute, fmt, output) -> None:
    """ESE candidates, computed fresh from the measurements, best first."""
    from eselake.detection import detect_ese_candidates

    df = detect_ese_candidates(lake, preset=preset, min_sigma=min_sigma, use_composite_scoring=use_composite_scoring,
                               source_id=source_id, status=status)
    if source_id is not None and df.height == 0:
        scores = lake.sql("SELECT * FROM ese_scores WHERE source_id = ?", [source_id])
        if scores.height == 0:
            raise click.ClickException(f"no measurements of source {source_id!r}")
        if fmt == "table":
            console.print(f"{source_id} is not a candidate under preset {preset}; its scores:")
        df = scores
    cols = ["source_id", "significance", "composite_score", "confidence", "status", "n_obs", "chi2_nu",
            "eta_metric", "dip_significance", "dip_depth", "dip_start_mjd", "dip_end_mjd"]
    shown = df.select([c for c in cols if c in df.columns]) if fmt == "table" else df
    write_frame(shown, fmt, output, title=f"ESE candidates ({preset}{', composite' if use_composite_scoring else ''})")


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
    console.print(f"{source_id}: {status}")


@main.command("export")
@click.option("--source-id", required=True)
@click.option("--format", "fmt", type=click.Choice(["csv", "json", "votable", "parquet"]), default="csv",
              show_default=True)
@click.option("--output", "-o", type=click.Path(dir_okay=False), default=None,
              help="Output file (csv/json may go to stdout)")
@pass_lake
def export_cmd(lake, source_id, fmt, output) -> None:
    """Export one source's lightcurve (all measurements with normalisation)."""
    from eselake.source import Source

    write_frame(Source(source_id, lake).measurements, fmt, output)
    if output:
        err_console.print(f"wrote {output}")


# ------------------------------------------------------------------------------------------ charts
@main.group("plot")
def plot_group() -> None:
    """Charts (PNG, SVG, PDF, self-contained HTML or Vega-Lite JSON, by the output's extension)."""


@plot_group.command("lightcurve")
@click.argument("source_id")
@click.option("--output", "-o", required=True, type=click.Path(dir_okay=False))
@click.option("--raw", is_flag=True, help="Plot raw peak fluxes instead of normalised fluxes")
@click.option("--no-dip", is_flag=True, help="Do not shade the detected dip or draw its model")
@pass_lake
def plot_lightcurve(lake, source_id, output, raw, no_dip) -> None:
    """Lightcurve of SOURCE_ID with error bars, baseline and dip shading."""
    from eselake.source import Source

    Source(source_id, lake).plot_lightcurve(use_normalized=not raw, highlight_ese_period=not no_dip,
                                            highlight_baseline=not no_dip, show_fit=not no_dip, outfile=output)
    console.print(f"wrote {output}")


def _preset_chart_command(name: str, builder: str, doc: str):
    @plot_group.command(name, help=doc)
    @click.option("--output", "-o", required=True, type=click.Path(dir_okay=False))
    @click.option("--preset", type=click.Choice(["conservative", "moderate", "sensitive"]), default="moderate")
    @pass_lake
    def command(lake, output, preset) -> None:
        from eselake import charts

        charts.save_chart(getattr(charts, builder)(lake, preset=preset), output)
        console.print(f"wrote {output}")
    return command


plot_variability = _preset_chart_command("variability", "variability_chart",
                                         "eta-V diagram of all sources with ESE candidates highlighted.")
plot_candidates = _preset_chart_command("candidates", "candidates_chart",
                                        "Summary of the ESE candidates (composite score, confidence).")


# ------------------------------------------------------------------------------------------ server
@main.command("serve")
@click.option("--host", default="127.0.0.1", show_default=True)
@click.option("--port", type=int, default=8000, show_default=True)
@click.option("--writable", is_flag=True, help="Accept review POSTs (read-only otherwise)")
@pass_lake
def serve(lake, host, port, writable) -> None:
    """REST API (OpenAPI at /docs) and the candidates web page at /."""
    import uvicorn

    from eselake.api import create_app

    console.print(f"serving {lake.path} on http://{host}:{port}/ ({'writable' if writable else 'read-only'})")
    uvicorn.run(create_app(lake, writable=writable), host=host, port=port, log_level="warning")


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
        click.option("--calibrators", required=True, type=click.Path(dir_okay=False, path_type=Path),
                     help="Calibrator list: CSV (name,ra_deg,dec_deg,flux_jy) or the VLA calibrator list"),
        click.option("--catalog", default="nvss", show_default=True, help="Catalogue in the lake to measure"),
        click.option("--dec-deg", type=float, default=None,
                     help="Pointing declination, when the data do not record it"),
        click.option("--workers", type=int, default=1, show_default=True),
        click.option("--imager", type=click.Choice(["auto", "wsclean", "tclean"]), default="auto",
                     show_default=True),
        click.option("--fov-deg", type=float, default=3.0, show_default=True),
        click.option("--force", is_flag=True, help="Re-process what is already in the lake"),
    ]):
        f = opt(f)
    return f


def _run_chain(ingest, inputs, what: str, **options) -> None:
    """Run an ingest function with a progress bar, print failures as they come, then a summary."""
    from rich.progress import Progress

    with Progress(console=err_console) as prog:
        task = prog.add_task(what, total=None)

        def on_result(res, k, n):
            prog.update(task, completed=k, total=n)
            _print_tile(res, k, n)

        results = ingest(inputs, on_result=on_result, **options)
    _ingest_summary(results, what)


@ingest_group.command("uvh5")
@click.argument("uvh5_dir", type=click.Path(file_okay=False, path_type=Path))
@_chain_options
@pass_lake
def ingest_uvh5_cmd(lake, uvh5_dir, **options):
    """Ingest every complete tile of UVH5_DIR not yet in the lake (resumable)."""
    from eselake.ingest.radio.pipeline import ingest_uvh5

    _run_chain(lambda d, **kw: ingest_uvh5(lake, d, kw.pop("products"), **kw), uvh5_dir, "tiles", **options)


@ingest_group.command("ms")
@click.argument("ms_paths", nargs=-1, required=True, type=click.Path(exists=True, file_okay=False, path_type=Path))
@_chain_options
@pass_lake
def ingest_ms_cmd(lake, ms_paths, **options):
    """Enter the chain with Measurement Sets: calibrate, image, measure (inputs are copied, not modified)."""
    from eselake.ingest.radio.pipeline import ingest_ms

    _run_chain(lambda ms, **kw: ingest_ms(lake, list(ms), kw.pop("products"), **kw), ms_paths,
               "measurement sets", **options)


@ingest_group.command("fits")
@click.argument("image_dir", type=click.Path(file_okay=False, path_type=Path))
@click.option("--catalog", default="nvss", show_default=True)
@click.option("--workers", type=int, default=1, show_default=True)
@click.pass_context
def ingest_fits_cmd(ctx, image_dir, catalog, workers):
    """Enter the chain with FITS images: forced photometry of the --catalog on every sky image."""
    ctx.invoke(photometry_batch, source_list=None, catalog=catalog, image_dir=image_dir, pattern="*.fits",
               min_mjy=None, workers=workers, force=False, output=None, beam=None)


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

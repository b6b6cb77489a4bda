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
            err_console.print(f"[bold red]error:[/bold red] {exc}", highlight=False)
            sys.exit(2)


def _lake(ctx: click.Context) -> Lake:
    return ctx.find_root().obj["lake"]


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


@lake_group.command("info")
@pass_lake
def lake_info(lake: Lake) -> None:
    """Rows, files and bytes per dataset."""
    console.print(f"lake: {lake.path}")
    write_frame(lake.info(), "table", None)

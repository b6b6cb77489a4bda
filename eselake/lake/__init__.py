"""The lake: partitioned Parquet datasets plus DuckDB views over them."""
from eselake.lake.lake import Lake, default_lake_path

__all__ = ["Lake", "default_lake_path"]

"""Ingest jobs: the radio chain (simulate, convert, calibrate, image) and forced photometry into the lake."""

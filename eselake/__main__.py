from eselake.cli import run

run()

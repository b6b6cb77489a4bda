from eselake.cli import main

main()

"""`python -m rotator` runs the CLI."""

from rotator.cli import console_main

console_main()

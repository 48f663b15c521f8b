"""`python -m loravc` is the `loravc` command."""

from loravc.cli import run

run()

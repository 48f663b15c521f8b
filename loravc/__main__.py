"""`python -m loravc` is the `loravc` command."""

from loravc.cli.main import run

run()

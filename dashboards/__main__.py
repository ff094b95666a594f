"""``python -m dashboards [build] [--check]``: regenerate the provisioned dashboards."""

import sys

from dashboards.cli import main

args = sys.argv[1:]
if not args or args[0] != "build":
    args = ["build", *args]
sys.exit(main(args))

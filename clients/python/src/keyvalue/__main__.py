"""Run the ``kv-py`` command as ``python -m keyvalue``."""

import sys

from keyvalue.cli import main

if __name__ == "__main__":
    sys.exit(main(prog="python -m keyvalue"))

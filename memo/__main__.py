"""`python -m memo ...`: the same command line as the `memo` script (see memo/_cli.py)."""

import sys

from ._cli import main

if __name__ == "__main__":
    sys.exit(main())

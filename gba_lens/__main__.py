"""``python -m gba_lens ...``: the same command line as ``gba-lens``."""

import sys

from gba_lens.cli import main

if __name__ == "__main__":
    sys.exit(main())

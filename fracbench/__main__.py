"""``python -m fracbench``: the ``fracbench`` command."""

import sys

from fracbench.cli import main

if __name__ == "__main__":
    sys.exit(main())

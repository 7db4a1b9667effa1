"""``python -m tmbmerge ...``: the ``tmbmerge`` command, for environments without the script on
PATH."""

import sys

from bindings.cli import main

if __name__ == "__main__":
    sys.exit(main())

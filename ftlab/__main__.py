"""`python -m ftlab ...` runs the `ftlab` command."""

import sys

try:
    from ftlab.cli import main
except KeyboardInterrupt:  # Ctrl-C while starting: as interrupted as later on
    sys.exit(130)

sys.exit(main())

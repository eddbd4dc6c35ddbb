"""`python -m ftlab ...` runs the `ftlab` command."""

import sys

from ftlab.cli import main

sys.exit(main())

"""`python -m coordinator ...` is the `hivegrid` command."""

import sys

from coordinator.cli import main

sys.exit(main())

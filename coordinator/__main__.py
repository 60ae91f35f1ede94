"""`python -m hivegrid.coordinator ...` is the `hivegrid` command."""

import sys

from hivegrid.coordinator.cli import main

sys.exit(main())

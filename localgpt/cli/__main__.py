"""`python -m localgpt.cli`: the same as the `localgpt` command."""

import sys

from localgpt.cli import main

sys.exit(main())

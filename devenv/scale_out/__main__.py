"""`python -m devenv.scale_out up|down|status` (scripts/scale-out)."""

import sys

from devenv.scale_out.commands import main

sys.exit(main())

"""`python -m lmshrink` (also what `accelerate launch -m lmshrink` runs)."""

import sys

from lmshrink.cli import main

sys.exit(main())

"""`python -m tests.sim`: run or replay simulation seeds (see tests/sim/run.py)."""

import sys

from tests.sim.run import main

sys.exit(main())

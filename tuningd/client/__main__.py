"""`python -m tuningd.client COMMAND ...`: the client commands alone."""

import sys

from tuningd.client.parser import main

sys.exit(main())

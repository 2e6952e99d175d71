"""`python -m agent ...` is `connvo-agent ...`."""

import sys

from agent.cli import main

sys.exit(main())

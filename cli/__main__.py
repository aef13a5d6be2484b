"""``python -m cli`` is ``jobctl``."""

import sys

from cli.jobctl import main

sys.exit(main())

"""``python -m cli`` is ``jobctl``."""

import sys

from cli.main import main

sys.exit(main())

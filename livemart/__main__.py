"""``python -m livemart`` is the ``livemart`` command."""

import sys

from livemart.app import main

sys.exit(main())

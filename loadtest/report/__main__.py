"""``python -m loadtest.report DIR``: see :mod:`loadtest.report.markdown`."""

import sys

from loadtest.report.markdown import main

sys.exit(main())

import sys

from loadtest.runner.cli import main

sys.exit(main())

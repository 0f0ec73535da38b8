"""``python -m tests.skewed_clock ARGS...``: ``python -m consumers ARGS...`` on a host whose wall
clock is off by ``TEST_CLOCK_OFFSET_S`` seconds (NTP not yet run, a VM just resumed).

Only the wall clock moves (``time.time``, ``time.time_ns``, and so logging and ``datetime``);
the monotonic clock and every timeout stay true, as on such a host. libfaketime would do this
from outside, but its build on Debian 12 hangs Python's ``threading.Event.wait``.
"""

import os
import sys
import time

offset_s = float(os.environ["TEST_CLOCK_OFFSET_S"])
_time, _time_ns = time.time, time.time_ns
time.time = lambda: _time() + offset_s
time.time_ns = lambda: _time_ns() + int(offset_s * 1e9)

from consumers.cli import main  # noqa: E402 (after the clock is set)

sys.exit(main(sys.argv[1:]))

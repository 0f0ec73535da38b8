"""The load test's ledger: its line format, read and written by every process that sends or
handles a message (:mod:`.records`), and the handler the daemons under test run
(:mod:`.handlers`)."""

"""The accounting and the report of a load-test run: every message accounted for by id
(:mod:`.accounting`, :mod:`.timing`, :mod:`.rows`), the checks the summary must pass
(:mod:`.checks`), and ``report.md`` with its plots (:mod:`.markdown`, :mod:`.rundir`,
:mod:`.plots`, :mod:`.comparison`, :mod:`.memory`, :mod:`.fmt`): ``python -m loadtest.report
DIR``. Only the report and its plots load matplotlib, not the accounting."""

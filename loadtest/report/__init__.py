"""The accounting and the report of a load-test run: every message accounted for by id
(:mod:`.accounting`, :mod:`.timing`), the checks the summary must pass (:mod:`.checks`), and
``report.md`` with its plots (:mod:`.markdown`, :mod:`.plots`, :mod:`.memory`, :mod:`.fmt`):
``python -m loadtest.report DIR``. Only :mod:`.markdown` and the plots load matplotlib."""

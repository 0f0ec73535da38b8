"""The scenario runner, ``python -m loadtest run``: the scenarios (:mod:`.scenarios`), the
processes of one (:mod:`.stack`, :mod:`.procs`), the faults (:mod:`.faults`), one scenario from
start to finish (:mod:`.run`), what it gathers afterwards (:mod:`.gather`, :mod:`.streams`,
:mod:`.memwatch`), and the command line (:mod:`.cli`). Never imports locust: it runs locust as a
subprocess."""

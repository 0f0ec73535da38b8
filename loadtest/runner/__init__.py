"""The scenario runner, ``python -m loadtest run``: what a scenario is (:mod:`.spec`) and the
scenarios (:mod:`.scenarios`); the processes of one (:mod:`.stack`, :mod:`.procs`) and its load
generator, locust as a subprocess (:mod:`.loadgen`); the faults (:mod:`.faults`); one scenario
from start to finish (:mod:`.run`) and what it gathers afterwards (:mod:`.gather`,
:mod:`.streams`, :mod:`.memwatch`); the command line (:mod:`.cli`). Never imports locust."""

"""The handlers section's hung handler: one message whose handler never returns
(``time.sleep(3600)``) among 50 good ones (a 20 ms sleep each), our worker at its default
concurrency with ``BUS_HANDLER_TIMEOUT_S=2`` and ``BUS_MAX_ATTEMPTS=3``.

The worker is started and registered first; the hung message and then the 50 appear in its
queue in one MULTI (``Producer.push_many``); the clock runs from there. Two figures: the time
until the 50 are handled (the job counter, polled every 5 ms), and the time until the hung
message is in the dead-letter list, at its last attempt (the entry's envelope is checked: its
payload and ``attempt`` = 3).
"""

from __future__ import annotations

import json
import time

from loadtest.bench import peer_tasks
from loadtest.bench.backlog import check_alive, running, shown
from loadtest.bench.common import POLL_S, PYTHON, ROOT, Result, Scale, clean_env, registered
from loadtest.harness.server import throwaway_server
from loadtest.harness.waits import wait_for
from producer import Producer
from producer.store import keys

TAG = "hung handler"
NAME = "bench-hung"
TIMEOUT_S, MAX_ATTEMPTS, GOOD = 2, 3, 50


def run(scale: Scale) -> list[Result]:
    """Two rows: seconds until the 50 good ones are handled, and until the hung one is dead."""
    queue = peer_tasks.QUEUE
    with throwaway_server() as server:
        client = server.plain_client()
        env = clean_env(BUS_REDIS_URL=server.url, BUS_HANDLER_TIMEOUT_S=str(TIMEOUT_S),
                        BUS_MAX_ATTEMPTS=str(MAX_ATTEMPTS), BUS_STOP_TIMEOUT_S="1",
                        PEER_REDIS_URL=server.url, PYTHONPATH=str(ROOT))  # fmt: skip
        argv = [PYTHON, "-m", "consumers", "worker", "--queue", queue, "--name", NAME,
                "--handler", f"{peer_tasks.__name__}:bus_hang_or_sleep",
                "--log-level", "WARNING"]  # fmt: skip
        with running(argv, env) as (proc, log):

            def up() -> bool:
                check_alive(proc, log, "our worker")
                return registered(client, queue, NAME)

            wait_for(up, 30, "our worker to register", POLL_S)
            with Producer(client, src="bench") as producer:
                started = time.perf_counter()
                producer.push_many([peer_tasks.HANG, *({"i": i} for i in range(GOOD))], queue)

            def good_done() -> bool:
                check_alive(proc, log, "our worker")
                return int(client.get(peer_tasks.COUNTER) or 0) >= GOOD

            wait_for(good_done, 60, "the 50 good messages", POLL_S)
            good_s = time.perf_counter() - started
            wait_for(lambda: client.llen(keys.dead(queue)) > 0, 60, "the hung one's dead letter",
                     POLL_S)  # fmt: skip
            dead_s = time.perf_counter() - started
            entry = json.loads(client.lindex(keys.dead(queue), 0) or b"{}")
    dead_env = json.loads(entry["raw"])
    if dead_env["payload"] != peer_tasks.HANG or dead_env["attempt"] != MAX_ATTEMPTS:
        raise RuntimeError(f"{TAG}: the dead letter is not the hung one's last attempt: {entry}")
    extra = {"worker": shown(argv), "good": GOOD, "dead_reason": entry["reason"],
             "env": f"BUS_HANDLER_TIMEOUT_S={TIMEOUT_S} BUS_MAX_ATTEMPTS={MAX_ATTEMPTS}",
             "timed": "the 51 pushed (one MULTI) to 50 counted, to the dead letter"}  # fmt: skip
    return [
        Result("handlers", f"{TAG}: {GOOD} good ones handled beside it", good_s, "s",
               higher_is_better=False, target="<= 10 s", extra=extra),
        Result("handlers", f"{TAG}: the hung one dead-lettered at attempt {MAX_ATTEMPTS}",
               dead_s, "s", higher_is_better=False,
               target=f"{MAX_ATTEMPTS} time limits of {TIMEOUT_S} s and the retries", extra=extra),
    ]  # fmt: skip

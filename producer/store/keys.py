"""The whole Redis key schema of the bus, in one place.

``{q}`` is a Redis Cluster hash tag: every key a queue touches lives in one slot, so the
BLMOVE and Lua scripts that span ``pending``, ``processing`` and ``dead`` work on a cluster too.
The stats share the tag ``{stats}`` (the script that adds to the totals spans several of them).

=================================  ======  ==============================  ====================
key                                type    written by                      read by
=================================  ======  ==============================  ====================
``bus:{q}:pending``                list    producers LPUSH (head)          workers pop the tail
``bus:{q}:pending:<p>``            list    producers: priority p (1-9)     workers, highest p
                                           messages (see below)            first
``bus:{q}:levels``                 string  whatever puts a message on a    pushes and claims:
                                           level (the gate; a claim that   levels are looked at
                                           finds them empty deletes it)    only while it exists
``bus:{q}:processing:<consumer>``  list    worker BLMOVE RIGHT->LEFT       worker ack, reaper
``bus:{q}:delayed``                zset    producers: message -> when it   the workers' mover
                                           is due (ms, Redis's clock)      (due ones -> pending)
``bus:{q}:consumers``              zset    worker: consumer -> heartbeat   reaper, /api/stats
                                           (ms, on Redis's clock)
``bus:{q}:dead``                   list    worker: ``{reason, raw, at}``   /api/stats, tools
                                           after max attempts or garbage
``bus:{q}:dead:dropped``           string  worker: how many dead letters   /api/stats, tools
                                           the cap trimmed (oldest first)
``bus:{q}:owner:<consumer>``       string  worker: its lease on its name   other workers of
                                           (a random token, expires)       the same name
``bus:{q}:settled:<consumer>``     string  worker: its last settled        the same worker,
                                           batch's token (1 day TTL)       after a lost reply
``bus:{q}:msg:<id>``               hash    a tracked message's record:     /api/messages/<id>,
                                           producers create it, the        ``consumers message``
                                           scripts that claim, settle,
                                           move and reap update it (TTL)
``bus:{q}:schedules``              hash    the schedulers (workers): each  the schedulers,
                                           schedule's last tick sent, its  /api/stats, status
                                           next one, when it fires
``bus:{q}:waiting``                zset    a push with ``after``: message  the workers' sweep,
                                           id -> when its prerequisites    /api/stats, the
                                           are next looked at (ms)         balance (after.py)
``bus:{q}:wait:<id>``              hash    the same push: ``raw`` (its     the resolve script:
                                           envelope), and a field per      pending once every
                                           prerequisite not handled yet    prerequisite is
                                           (its queue, LF, its id)         handled
``bus:{q}:then:<id>``              set     a push with ``after`` naming    the script that
                                           message <id> of q: the waiting  finishes <id>: an
                                           one (its queue, LF, its id)     outbox entry each
``bus:{q}:outbox``                 list    the script that finishes a      workers of q, after
                                           message others wait for: what   their settle and in
                                           to tell each (after.py)         the mover's pass
``bus:{q}:once:<key>``             hash    a push with an idempotency      later pushes with
                                           key: its fingerprint, envelope  the same key (TTL:
                                           and answer (once.py)            the key's window)
``bus:{q}:tracking``               string  producers of tracked messages:  those same scripts
                                           the records' TTL (ms); exists
                                           while any record may exist
``bus:{q}:counts``                 hash    the scripts that push, ack,     /api/stats, status,
                                           dead-letter, requeue and take   /metrics: the queue's
                                           (at-most-once) its messages     balance (counts.py)
``bus:ch:<channel>``               pubsub  producers PUBLISH               subscribers
``{bus:ch:<channel>}:once:<key>``  hash    a publish with an idempotency   later publishes with
                                           key: fingerprint, envelope,     the same key (TTL:
                                           receivers (once.py)             the key's window)
``bus:ch:<channel>:dead``          list    subscriber: garbage or failed   /api/stats
                                           handler (capped: BUS_DEAD_MAX)
``bus:{stats}:<role>:<id>``        hash    every daemon and web process,   /api/stats
                                           every ``stats_interval_s``,
                                           expires after ``stats_ttl_s``
``bus:{stats}:index``              zset    same writers: stats key -> ms   /api/stats (no SCAN)
``bus:{stats}:totals``             hash    same writers, through one       /metrics, /api/stats
                                           script: bus-wide counters that
                                           never go down (see below)
``bus:{stats}:applied:<role>:      hash    same: what that process already  the same script
<id>:<run>``                       added to the totals (1 day TTL)
``bus:{stats}:history``            list    same script, at most once a     /api/history (the
                                           second: JSON totals, 360 kept   dashboard's chart)
``bus:{stats}:history:tick``       string  same: the once-a-second guard   the same script
=================================  ======  ==============================  ====================

Priority levels: a message of priority p (1 to 9, in its envelope) waits in
``bus:{q}:pending:<p>``; one of priority 0, the default, in ``bus:{q}:pending``. A claim (a
Lua script) takes the highest level that holds a message first, the oldest first within a
level. An idle worker blocks on ``bus:{q}:pending`` alone, so a script that puts a message of
a level while ``bus:{q}:pending`` is empty moves the next message of the highest level there
(the herald, which wakes a blocked worker); that list holds at most one message of a level,
always at its consuming end (lua/lib/levels.lua). A producer that LPUSHes onto a level itself
also sets ``bus:{q}:levels``; if it does not, a worker's mover sets it within
``BUS_MOVER_INTERVAL_S`` (and wakes an idle worker for the message).

A field of ``bus:{stats}:totals`` is ``<counter>|<label>=<value>|...``, the values URL-quoted:
``pushed|role=web|queue=default``, ``handled|role=worker|queue=jobs|delivery=at-least-once``,
``lost|role=subscriber|channel=news``, ``lat_le_5|mode=prodcons`` (see producer/observe/totals.py).

Roles in stats keys: ``worker``, ``subscriber``, ``web``, ``locust`` (the load generator's
direct producer).
"""

from __future__ import annotations

PREFIX = "bus"
STATS = f"{PREFIX}:{{stats}}"  # one hash tag: on a cluster every stats key is on one node
STATS_INDEX = f"{STATS}:index"
STATS_TOTALS = f"{STATS}:totals"
STATS_HISTORY = f"{STATS}:history"
STATS_HISTORY_TICK = f"{STATS}:history:tick"


def pending(queue: str) -> str:
    """List that producers LPUSH to and workers pop from the tail."""
    return f"{PREFIX}:{{{queue}}}:pending"


def level(queue: str, priority: int) -> str:
    """The list where ``queue``'s messages of ``priority`` wait (0: :func:`pending`)."""
    return f"{PREFIX}:{{{queue}}}:pending:{priority}" if priority else pending(queue)


def schedules(queue: str) -> str:
    """The periodic schedules that send to ``queue`` (consumers/scheduler.py): ``<name>`` -> the
    last tick sent (ms), ``<name>:next`` -> the next one, ``<name>:spec`` -> when it fires."""
    return f"{PREFIX}:{{{queue}}}:schedules"


def waiting(queue: str) -> str:
    """Zset of ``queue``'s messages waiting for others (``after``), scored by when the sweep
    next looks at their prerequisites (ms, Redis's clock): producer/store/after.py."""
    return f"{PREFIX}:{{{queue}}}:waiting"


def wait(queue: str, msg_id: str) -> str:
    """Hash of waiting message ``msg_id``: ``raw`` (its envelope) and one field per prerequisite
    not handled yet (``<queue>\\n<id>``)."""
    return f"{PREFIX}:{{{queue}}}:wait:{msg_id}"


def then(queue: str, msg_id: str) -> str:
    """Set of the messages waiting for ``queue``'s tracked message ``msg_id``
    (``<queue>\\n<id>``): the script that finishes it writes one outbox entry for each."""
    return f"{PREFIX}:{{{queue}}}:then:{msg_id}"


def outbox(queue: str) -> str:
    """List of what finished among ``queue``'s messages that others wait for, not yet told to
    the waiting ones (on a cluster they may live on another node): producer/store/after.py."""
    return f"{PREFIX}:{{{queue}}}:outbox"


def levels_gate(queue: str) -> str:
    """Exists while a priority level of ``queue`` may hold a message (lua/lib/levels.lua): a
    queue without priorities costs a push or a claim one EXISTS."""
    return f"{PREFIX}:{{{queue}}}:levels"


def delayed(queue: str) -> str:
    """Zset of messages that wait until their score (ms on Redis's clock) to be pending."""
    return f"{PREFIX}:{{{queue}}}:delayed"


def processing(queue: str, consumer: str) -> str:
    """A worker's in-flight list: messages claimed but not yet acknowledged."""
    return f"{PREFIX}:{{{queue}}}:processing:{consumer}"


def processing_prefix(queue: str) -> str:
    """Prefix shared by every processing list of ``queue`` (for SCAN MATCH)."""
    return f"{PREFIX}:{{{queue}}}:processing:"


def consumers(queue: str) -> str:
    """Zset of workers of ``queue`` scored by their last heartbeat (ms)."""
    return f"{PREFIX}:{{{queue}}}:consumers"


def dead(queue: str) -> str:
    """Dead-letter list of ``queue``."""
    return f"{PREFIX}:{{{queue}}}:dead"


def dead_dropped(queue: str) -> str:
    """How many of ``queue``'s dead letters the cap (``BUS_DEAD_MAX``) has trimmed."""
    return f"{PREFIX}:{{{queue}}}:dead:dropped"


def record(queue: str, msg_id: str) -> str:
    """The status record of ``queue``'s tracked message ``msg_id`` (producer/store/tracking.py)."""
    return f"{PREFIX}:{{{queue}}}:msg:{msg_id}"


def once(queue: str, key: str) -> str:
    """A push's idempotency key: what its first push did (producer/store/once.py)."""
    return f"bus:{{{queue}}}:once:{key}"


def tracking(queue: str) -> str:
    """Exists while ``queue`` may have records; holds their TTL in ms. The scripts that move
    messages read it once per call: a queue without tracked messages costs them one GET."""
    return f"{PREFIX}:{{{queue}}}:tracking"


def counts(queue: str) -> str:
    """What entered and left ``queue``'s lists, counted by the scripts that move its messages
    (producer/store/counts.py): ``pushed``, ``requeued``, ``acked``, ``dead``, ``taken``."""
    return f"{PREFIX}:{{{queue}}}:counts"


def settled(queue: str, consumer: str) -> str:
    """The token of the last batch ``consumer`` settled (a day's TTL): a settle repeated after
    a lost reply moves nothing twice, even among identical envelopes."""
    return f"{PREFIX}:{{{queue}}}:settled:{consumer}"


def started(queue: str, consumer: str) -> str:
    """Set of the redelivered messages (attempt > 1) whose handler ``consumer`` started and has
    not settled: after a crash, one that never started is given back without an attempt."""
    return f"{PREFIX}:{{{queue}}}:started:{consumer}"


def owner(queue: str, consumer: str) -> str:
    """The lease of the one process consuming ``queue`` under the name ``consumer``."""
    return f"{PREFIX}:{{{queue}}}:owner:{consumer}"


def channel(name: str) -> str:
    """The pub/sub channel for ``name``."""
    return f"{PREFIX}:ch:{name}"


def channel_name(redis_channel: str) -> str:
    """Inverse of :func:`channel`: ``bus:ch:orders`` -> ``orders``."""
    head = f"{PREFIX}:ch:"
    return redis_channel[len(head) :] if redis_channel.startswith(head) else redis_channel


def channel_once(name: str, key: str) -> str:
    """A publish's idempotency key: its hash tag is the channel (on a cluster, the key lives in
    the slot of the channel's shard, where the publishing script runs)."""
    return f"{{{channel(name)}}}:once:{key}"


def channel_dead(name: str) -> str:
    """Capped list of pub/sub messages a subscriber could not decode or handle."""
    return f"{PREFIX}:ch:{name}:dead"


def stats(role: str, ident: str) -> str:
    """Stats hash of one process."""
    return f"{STATS}:{role}:{ident}"


def stats_applied(role: str, ident: str, run: str) -> str:
    """What one run of a process has added to ``bus:{stats}:totals`` so far, per field."""
    return f"{STATS}:applied:{role}:{ident}:{run}"

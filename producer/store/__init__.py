"""What the bus keeps in Redis and how it moves it: the key schema (:mod:`.keys`), the
envelope (:mod:`.envelope`), every Lua script (``lua/*.lua``, run through :mod:`.scripts`),
message records (:mod:`.tracking`), a queue's balance (:mod:`.counts`) and dead letters
(:mod:`.deadletters`)."""

"""``matchbox chaos``: the whole exchange under seeded faults and hostile clients, then checked.

One run starts a private exchange on this machine (:mod:`~matchbox.chaos.cluster`: an embedded
Valkey with AOF ``appendfsync always``, two engine candidates, two API instances, the persistence
and analytics consumers), drives seeded traffic through the APIs with API keys
(:mod:`~matchbox.chaos.traffic`, WebSocket subscribers that drop and resume in
:mod:`~matchbox.chaos.feeds`), mixes in hostile clients (:mod:`~matchbox.chaos.hostile`) and
injects faults at seeded times (:mod:`~matchbox.chaos.faults`). Then it stops the faults, waits
for quiet (:mod:`~matchbox.chaos.quiet`), reads what every part holds
(:mod:`~matchbox.chaos.state`) and checks the promises (:mod:`~matchbox.chaos.checks`), printing
each with its figures (:mod:`~matchbox.chaos.report`). :mod:`~matchbox.chaos.run` ties it up.

The same seed gives the same decisions (which fault when, which order next); the machine's
timing still differs between runs, so a failure names what it saw in enough detail to act on.
"""

"""The cold path's projections: the engine's output stream folded into SQL tables.

- :mod:`~matchbox.consumers.db` opens the database (SQLite by default, PostgreSQL by URL) and
  brings its schema to head with the migrations in ``migrations/``.
- :mod:`~matchbox.consumers.schema` declares the tables the code reads and writes.
- :mod:`~matchbox.consumers.persistence` and :mod:`~matchbox.consumers.analytics` are the two
  sinks (:class:`matchbox.consumers.runner.Sink`): markets, orders and trades; candles, last price
  and the top of the book.
- :mod:`~matchbox.consumers.queries` is the read side, for the HTTP API.
- :mod:`~matchbox.consumers.runner` feeds a sink from a consumer group on the output stream, and
  :mod:`~matchbox.consumers.process` is ``matchbox consume`` and ``matchbox replay`` around it.

Both sinks are exactly-once in effect: every batch commits its rows and the group's tracking row
in one transaction, and folding an event a second time, or out of order, changes nothing (see
each sink's docstring for how).
"""

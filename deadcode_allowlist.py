"""Names that look unused to vulture but are read by something it cannot see (``make test`` runs
``vulture``; see ``[tool.vulture]`` in pyproject.toml). Each line says who reads the name."""

# ruff: noqa
from matchbox.api import models
from matchbox.bench import pipeline
from matchbox.consumers import runner
from matchbox.consumers.process import SinkKind

models.FillOut.time_ms  # response fields: FastAPI writes them into the public JSON
models.TradeOut.time_ms
models.AccountTradeOut.time_ms
models.AccountInfoOut.created_ms
asyncapi.Fill.timestamp  # message fields: the AsyncAPI document describes them
models.EngineOut.committed_offset
models.EngineOut.state_hash_at
models.StatsOut.last_trade_ms
models.BookOut.sequence
models.TickerOut.sequence
pipeline.Figures.batch_max  # in the benchmark's JSON report (asdict)
runner.GroupLag.last_delivered_id  # a field of the lag report, compared whole by the tests
SinkKind.ANALYTICS  # chosen by value from the command line
_.isolation_level  # consumers/db.py: set on the sqlite3 driver's connection, which reads it
_.exc_type  # __exit__'s signature
_.pytestmark  # read by pytest
_Connection.connection_made  # loadgen.py: asyncio.Protocol's callbacks, called by the event loop
_Connection.data_received
_Connection.connection_lost
_Connection.on_body  # and httptools' callbacks, called by its parser
_Connection.on_message_complete
_Trivial.on_url  # bench/gateway.py: httptools' callback, called by its parser

"""Settings, from the environment (``MATCHBOX_*``, plus the usual ``REDIS_URL``) and CLI flags."""

from __future__ import annotations

from pathlib import Path

from pydantic import AliasChoices, Field
from pydantic_settings import BaseSettings, SettingsConfigDict

from matchbox.bus.durability import Durability
from matchbox.engine.ids import MAX_SHARDS


class Settings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="MATCHBOX_", extra="ignore", frozen=True)

    redis_url: str | None = Field(
        default=None,
        validation_alias=AliasChoices("REDIS_URL", "MATCHBOX_REDIS_URL"),
        description="A Redis >= 7 or Valkey to use; unset, `matchbox up` starts its own.",
    )
    data_dir: Path = Field(default=Path("data"), description="Where the embedded Valkey and SQLite keep their files.")
    cluster: bool = Field(
        default=False,
        description="REDIS_URL is a Valkey Cluster (one node, or several joined by commas): each shard's calls go "
        "to its slot's master.",
    )
    shard: int = Field(default=0, ge=0, lt=MAX_SHARDS, description="The shard an engine or a consumer runs for.")
    shards: int = Field(
        default=1, ge=1, le=MAX_SHARDS, description="How many shards the exchange has (0..shards-1); an API serves all."
    )
    durability: Durability = Field(
        default=Durability.ALWAYS,
        description=(
            "replicated: acknowledged once fsynced and held by a replica; always: once fsynced; "
            "everysec: up to ~1 s can be lost."
        ),
    )
    lock_ttl_ms: int = Field(default=3000, ge=200, description="The engine leader lock's TTL.")
    batch: int = Field(default=2000, ge=1, description="Input entries per engine commit, at most.")
    snapshot_every: int = Field(default=50_000, ge=1, description="Input entries between engine snapshots.")
    snapshot_seconds: float = Field(default=60.0, gt=0, description="Seconds between snapshots while busy.")
    snapshot_on_stop: bool = Field(
        default=True,
        description="A leader stopped cleanly snapshots at its last commit: a successor (an upgrade) replays nothing.",
    )
    snapshots_kept: int = Field(default=3, ge=1)
    trim_input: bool = Field(default=True, description="Trim the journal behind the oldest kept snapshot.")
    database_url: str | None = Field(
        default=None,
        validation_alias=AliasChoices("DATABASE_URL", "MATCHBOX_DATABASE_URL"),
        description="The consumers' SQL database (postgresql://…); unset, SQLite in the data folder.",
    )
    consumer_batch: int = Field(default=1000, ge=1, description="Events per consumer transaction, at most.")
    claim_idle_ms: int = Field(default=30_000, ge=10, description="Reclaim a dead consumer's entries after this.")
    max_deliveries: int = Field(default=5, ge=1, description="Deliveries before an entry is dead-lettered.")
    trim_events: bool = Field(
        default=False, description="Trim the output stream below what every group processed (no full replay then)."
    )
    admin_token: str | None = Field(default=None, description="Bearer token for admin endpoints; unset = disabled.")
    open_access: bool = Field(
        default=False,
        validation_alias=AliasChoices("MATCHBOX_OPEN", "open_access"),
        description="No API keys: anyone may trade as any account named in the request (local demos only).",
    )
    rate_limit: float = Field(default=50.0, ge=0, description="Requests per second per API key (0: no limit).")
    rate_burst: int = Field(default=100, ge=1, description="Requests a key may make at once before the limit.")
    key_cache_seconds: float = Field(
        default=5.0, ge=0, description="How long an instance trusts a key lookup (a revoked key works this long)."
    )
    ws_resume_events: int = Field(
        default=10_000, ge=0, description="How far back a WebSocket resume (?last_id=) reaches, in events."
    )
    default_market: str = Field(
        default="default", description="The market of orders that name none (the original README's)."
    )
    outcome_timeout: float = Field(default=1.0, gt=0, description="How long POST /orders waits for the engine.")
    startup_catch_up_seconds: float = Field(default=30.0, gt=0)
    host: str = Field(default="127.0.0.1")
    port: int = Field(default=8080, validation_alias=AliasChoices("PORT", "MATCHBOX_PORT"))
    log_level: str = Field(default="INFO")
    log_format: str = Field(default="text", pattern="^(text|json)$")
    metrics_port: int = Field(
        default=0, ge=0, le=65535, description="engines and consumers: serve /metrics here (0: no)"
    )
    metrics_host: str = Field(default="127.0.0.1", description="the interface the metrics port listens on")
    log_file: Path | None = Field(default=None, description="log here rather than to stderr, rotated by size")
    log_max_bytes: int = Field(default=10 * 1024 * 1024, ge=1024, description="a log file's size before it rotates")
    log_backups: int = Field(default=5, ge=1, description="rotated log files kept (<file>.1 the newest)")

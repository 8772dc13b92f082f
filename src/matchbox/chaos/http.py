"""One HTTP client for the whole run (aiohttp, as ``matchbox loadgen``): every answer is tallied
by status in :class:`~matchbox.chaos.records.Answers`, so no 5xx goes uncounted."""

from __future__ import annotations

import json
import time
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import aiohttp

from matchbox.chaos.records import Answers

TIMEOUT_S = 10.0


@dataclass(frozen=True, slots=True)
class Instance:
    name: str  # api-1, api-2: the cluster's child of that name
    url: str


@dataclass(frozen=True, slots=True)
class Reply:
    status: int | None  # None: no answer (refused, reset, timed out)
    body: Any  # the decoded JSON, else the text
    error: str = ""  # the exception's name when there was no answer
    seconds: float = 0.0

    def field(self, name: str) -> Any:
        return self.body.get(name) if isinstance(self.body, dict) else None


class Http:
    """Requests to the API instances, each answer counted."""

    def __init__(self, instances: list[Instance], admin_token: str, answers: Answers) -> None:
        self.instances = instances
        self.admin_token = admin_token
        self.answers = answers
        self.session: aiohttp.ClientSession | None = None

    def counting(self, answers: Answers) -> Http:
        """The same client and session, its answers tallied in ``answers`` instead."""
        other = Http(self.instances, self.admin_token, answers)
        other.session = self.session
        return other

    async def __aenter__(self) -> Http:
        connector = aiohttp.TCPConnector(limit=200, force_close=False)
        self.session = aiohttp.ClientSession(connector=connector, timeout=aiohttp.ClientTimeout(total=TIMEOUT_S))
        return self

    async def __aexit__(self, *exc: object) -> None:
        if self.session is not None:
            await self.session.close()

    def headers(self, key: str | None = None, *, admin: bool = False) -> dict[str, str]:
        token = self.admin_token if admin else key
        return {"authorization": f"Bearer {token}"} if token else {}

    async def call(
        self,
        instance: Instance,
        method: str,
        path: str,
        *,
        key: str | None = None,
        admin: bool = False,
        body: Any = None,
        data: Any = None,
        headers: Mapping[str, str] | None = None,
    ) -> Reply:
        """One request; the reply, never an exception for a missing or broken answer."""
        assert self.session is not None
        sent = {**self.headers(key, admin=admin), **(headers or {})}
        if body is not None:
            data = json.dumps(body)
            sent.setdefault("content-type", "application/json")
        started = time.perf_counter()
        try:
            async with self.session.request(method, instance.url + path, data=data, headers=sent) as response:
                raw = await response.read()
                status = response.status
        except (aiohttp.ClientError, TimeoutError) as exc:
            self.answers.add(instance.name, method, _route(path), None, type(exc).__name__, str(exc))
            return Reply(None, None, type(exc).__name__, time.perf_counter() - started)
        text = raw.decode(errors="replace")
        self.answers.add(instance.name, method, _route(path), status, "", text)
        try:
            decoded: Any = json.loads(text) if text else None
        except ValueError:
            decoded = text
        return Reply(status, decoded, "", time.perf_counter() - started)


def _route(path: str) -> str:
    """The path without its query, for the tally of 5xx answers."""
    return path.partition("?")[0]

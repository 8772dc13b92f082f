"""``matchbox up`` run as a user runs it, for the tests that need the whole stack (test_up,
test_client): the process, an HTTP client for its API, its admin token and keys."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import httpx

from conftest import wait_until
from matchbox.bus.server import free_port


class Up:
    """One ``python -m matchbox up`` process and an HTTP client for its API."""

    def __init__(
        self, data_dir: Path, port: int, valkey_port: int, log: Path, *options: str, command: tuple[str, ...] = ("up",)
    ) -> None:
        self.data_dir, self.port, self.valkey_port, self.log = data_dir, port, valkey_port, log
        self.options, self.command = options, command
        self.url = f"http://127.0.0.1:{port}"
        self.http = httpx.Client(base_url=self.url, timeout=10.0)
        self.process: subprocess.Popen[bytes] | None = None

    def start(self, **extra_env: str) -> None:
        env = {key: value for key, value in os.environ.items() if key not in ("REDIS_URL", "DATABASE_URL")}
        env |= extra_env
        argv = [sys.executable, "-m", "matchbox", *self.command, "--data-dir", str(self.data_dir)]
        argv += ["--port", str(self.port), "--valkey-port", str(self.valkey_port), *self.options]
        with self.log.open("ab") as out:
            self.process = subprocess.Popen(argv, env=env, stdin=subprocess.DEVNULL, stdout=out, stderr=out)
        wait_until(self.ready, timeout=90, message="matchbox up to be ready")

    def ready(self) -> bool:
        assert self.process is not None
        assert self.process.poll() is None, self.output()
        try:
            return self.http.get("/ready").status_code == 200
        except httpx.TransportError:
            return False

    def stop(self, signum: int = signal.SIGINT) -> int:
        assert self.process is not None
        self.process.send_signal(signum)
        return self.process.wait(60)

    def output(self) -> str:
        return self.log.read_text(errors="replace")

    def admin(self) -> dict[str, str]:
        return {"Authorization": f"Bearer {(self.data_dir / 'admin_token').read_text().strip()}"}

    def key_of(self, account: str) -> dict[str, str]:
        """A new API key for ``account`` (made on first use), as request headers."""
        made = self.http.post("/v1/admin/accounts", json={"account": account}, headers=self.admin())
        if made.status_code == 409:
            made = self.http.post(f"/v1/admin/accounts/{account}/keys", headers=self.admin())
        assert made.status_code == 201, made.text
        return {"Authorization": f"Bearer {made.json()['api_key']}"}

    def place(self, key: dict[str, str], **body: Any) -> dict[str, Any]:
        response = self.http.post("/v1/orders", json={"market_id": "rain"} | body, headers=key)
        assert response.status_code == 201, response.text
        answer: dict[str, Any] = response.json()
        return answer

    def your_key(self) -> str:
        """The key ``up`` made for the account ``you``, once its banner says so."""
        wait_until(lambda: "Dashboard as you: " in self.output(), timeout=30, message="the banner with the link")
        return (self.data_dir / "you.key").read_text().strip()

    def balance(self, key: str) -> dict[str, Any] | None:
        """``GET /account`` with ``key`` (None while over the key's rate limit: tests poll it)."""
        response = self.http.get("/v1/account", headers={"Authorization": f"Bearer {key}"})
        if response.status_code == 429:
            return None
        assert response.status_code == 200, response.text
        answer: dict[str, Any] = response.json()
        return answer

    def close(self) -> None:
        if self.process is not None and self.process.poll() is None:
            self.process.kill()  # a failed test: its children get SIGTERM from the kernel
            self.process.wait(10)
        self.http.close()


@contextmanager
def up(tmp_path: Path, *options: str) -> Iterator[Up]:
    running = Up(tmp_path / "data", free_port(), free_port(), tmp_path / "up.log", *options)
    try:
        yield running
    finally:
        running.close()

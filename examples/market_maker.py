"""A market maker on a binary market, on matchbox.client: a bid and an ask around the last price.

    .venv/bin/python examples/market_maker.py --url http://127.0.0.1:8080 --key-file data/you.key --market rain

It quotes ``--size`` contracts ``--spread`` cents either side of the last trade (50 before any),
and quotes again around the new price whenever a trade moves it. The dead-man switch is armed the
whole time: if the bot hangs or dies, its quotes go within 5 s; on Ctrl-C it cancels them itself.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import logging
from pathlib import Path

from matchbox.client import AsyncClient, MatchboxError, open_stream


async def make_market(url: str, key: str, market: str, spread: int, size: int, seconds: float | None) -> None:
    async with AsyncClient(url, key) as client, client.deadman(5000, markets=[market]):
        fair, quoted = 50, None
        async with open_stream(client, [f"trades:{market}"]) as feed:
            loop = asyncio.get_running_loop()
            deadline = None if seconds is None else loop.time() + seconds
            while deadline is None or loop.time() < deadline:
                if quoted != fair:  # (re)quote around the fair price: cancel, then a bid and an ask
                    await client.cancel_all(market)
                    with contextlib.suppress(MatchboxError):  # e.g. InsufficientFunds: quote the other side
                        await client.place_order(market, "buy", price=fair - spread, qty=size, post_only=True)
                    with contextlib.suppress(MatchboxError):
                        await client.place_order(market, "sell", price=fair + spread, qty=size, post_only=True)
                    quoted = fair
                    logging.info("quoting %s-%s around %s", fair - spread, fair + spread, fair)
                with contextlib.suppress(TimeoutError):
                    trade = await asyncio.wait_for(anext(feed), timeout=1.0)
                    if trade["type"] == "trade":
                        fair = min(max(int(trade["price"]), 1 + spread), 99 - spread)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--url", default="http://127.0.0.1:8080")
    parser.add_argument("--key-file", type=Path, default=Path("data/you.key"), help="the API key, in a file")
    parser.add_argument("--market", default="rain", help="a binary market")
    parser.add_argument("--spread", type=int, default=5, help="cents either side of the fair price")
    parser.add_argument("--size", type=int, default=10, help="contracts per quote")
    parser.add_argument("--seconds", type=float, default=None, help="stop after this long (default: Ctrl-C)")
    args = parser.parse_args()
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(message)s")
    key = args.key_file.read_text().strip()
    with contextlib.suppress(KeyboardInterrupt):
        asyncio.run(make_market(args.url, key, args.market, args.spread, args.size, args.seconds))


if __name__ == "__main__":
    main()

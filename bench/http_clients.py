"""Why callbacks go out on aiohttp: POSTs per second of httpx and aiohttp, each with one pooled
client, to the callback receiver (bench/callback_receiver.py) in a process of its own, at several
numbers of requests in flight. One line of JSON.

    python -m bench.http_clients [--requests 3000] [--concurrency 1,8,64]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import tempfile
import time
from collections.abc import Awaitable, Callable
from pathlib import Path

import aiohttp
import httpx

from bench.callbacks import receiver
from bench.queue_support import Processes
from bench.result_file import add_json_option, write_json

BODY = b'{"type":"job.succeeded","timestamp":"2026-12-03T00:00:00Z","data":{"job_id":"x"}}'


async def rate(post: Callable[[int], Awaitable[None]], requests: int, concurrency: int) -> float:
    gate = asyncio.Semaphore(concurrency)

    async def one(index: int) -> None:
        async with gate:
            await post(index)

    started = time.perf_counter()
    await asyncio.gather(*(one(index) for index in range(requests)))
    return round(requests / (time.perf_counter() - started), 1)


async def with_httpx(url: str, requests: int, concurrency: int) -> float:
    limits = httpx.Limits(max_connections=concurrency, max_keepalive_connections=concurrency)
    async with httpx.AsyncClient(limits=limits, trust_env=False) as client:

        async def post(index: int) -> None:
            response = await client.post(url, content=BODY, headers={"webhook-id": f"msg_{index}"})
            response.raise_for_status()

        return await rate(post, requests, concurrency)


async def with_aiohttp(url: str, requests: int, concurrency: int) -> float:
    connector = aiohttp.TCPConnector(limit=concurrency)
    async with aiohttp.ClientSession(connector=connector) as session:

        async def post(index: int) -> None:
            async with session.post(url, data=BODY, headers={"webhook-id": f"msg_{index}"}) as response:
                response.raise_for_status()
                await response.read()

        return await rate(post, requests, concurrency)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--requests", type=int, default=3000)
    parser.add_argument("--concurrency", default="1,8,64")
    add_json_option(parser)
    args = parser.parse_args()
    levels = [int(level) for level in args.concurrency.split(",")]
    results: dict[str, dict[str, float]] = {"httpx": {}, "aiohttp": {}}
    with tempfile.TemporaryDirectory() as tmp, Processes(Path(tmp)) as processes, receiver(processes) as base:
        url = f"{base}/hooks"
        for level in levels:
            results["httpx"][str(level)] = asyncio.run(with_httpx(url, args.requests, level))
            results["aiohttp"][str(level)] = asyncio.run(with_aiohttp(url, args.requests, level))
    report = {"bench": "http_clients", "requests": args.requests, "posts_per_s": results}
    write_json(args.json, report)
    print(json.dumps(report))


if __name__ == "__main__":
    main()

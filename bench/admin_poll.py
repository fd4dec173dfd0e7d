#!/usr/bin/env python3
"""What the admin API costs a running worker: its drain with and without a client polling it.

One ``eventproc run`` process (HTTP on a free loopback port, PostgreSQL,
ORDERING=none: the fastest drain, so the most sensitive to any overhead)
drains N published events; in the ``polling`` runs a client in this process
GETs every admin list endpoint (and /health) once a second, against that same
worker, for the whole drain, as a dashboard left open would. Runs alternate
quiet / polling; the report is events/s per mode (median [min-max]) and
their ratio, and the polling client's answer times.

With ``--split`` each round has a third run: the client polls a second
process on the same database that serves the API and never drains
(``eventproc run`` with ENABLE_POLLING=false), the deployment README.md
recommends for a dashboard left open on a busy worker: the worker then
pays only for the database's share.

    .venv/bin/python bench/admin_poll.py [--events 300000] [--runs 3] [--split]
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import os
import socket
import statistics
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import asyncpg
import httpx

sys.path.insert(0, str(Path(__file__).resolve().parent))

from common import TMP, VENV_BIN, drop_pg_db, fmt_med, pg_url, recreate_pg_db, table, worker_env

from eventproc import NewEvent
from eventproc.store import open_store

DB = "bench_admin_poll"
ENDPOINTS = (
    "/health",
    "/admin/v1/events?limit=50",
    "/admin/v1/events?state=pending&limit=50",
    "/admin/v1/events?outcome=dead_lettered&limit=50",
    "/admin/v1/dead-letters?limit=50",
    "/admin/v1/dead-letters/groups",
    "/admin/v1/handlers",
    "/admin/v1/workers",
    "/admin/v1/aggregates/blocked",
    "/admin/v1/operations",
    "/admin/v1/audit",
)


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


async def publish(n: int, db: str = DB) -> None:
    """N pending events, then ANALYZE, as autovacuum would have on a live database.

    This machine's server runs with autovacuum off; without statistics the
    planner takes the type's few rows for rare and answers the pending list
    with a scan and sort of all of them (90 ms on 50,000 pending events,
    against 5 ms with statistics): a cost of the bench's server, not of a
    dashboard in production.
    """
    store = open_store(pg_url(db))
    try:
        await store.migrate()
        for start in range(0, n, 2000):
            count = min(2000, n - start)
            await store.event_insert_many(
                [NewEvent("bench.noop", {"i": i}) for i in range(start, start + count)]
            )
    finally:
        await store.close()
    conn = await asyncpg.connect(pg_url(db))
    try:
        await conn.execute("ANALYZE")
    finally:
        await conn.close()


class LightClient:
    """HTTP/1.1 GETs on one keep-alive connection, with next to no client CPU.

    A dashboard's browser does not run on the worker's machine, but this
    bench's client does: httpx spent about 3.4 ms of CPU per request here,
    as much as the server answering it, on the same two cores as the drain.
    This client writes a fixed request and reads the answer by its
    Content-Length (uvicorn sends one with every JSON answer), so what the
    drain loses is the server's and the database's share.
    """

    def __init__(self, base: str) -> None:
        host, port = base.removeprefix("http://").rsplit(":", 1)
        self.host, self.port = host, int(port)
        self._reader: asyncio.StreamReader | None = None
        self._writer: asyncio.StreamWriter | None = None

    async def get(self, path: str) -> int:
        """The status code of ``GET path`` (its body read and dropped)."""
        try:
            return await self._get(path)
        except (asyncio.IncompleteReadError, ConnectionError):
            # uvicorn closes a connection idle for 5 s: open a new one, once.
            await self.close()
            return await self._get(path)

    async def _get(self, path: str) -> int:
        if self._writer is None:
            self._reader, self._writer = await asyncio.open_connection(self.host, self.port)
        assert self._reader is not None
        self._writer.write(f"GET {path} HTTP/1.1\r\nHost: {self.host}\r\n\r\n".encode())
        head = await self._reader.readuntil(b"\r\n\r\n")
        status = int(head.split(b" ", 2)[1])
        length = 0
        for line in head.split(b"\r\n"):
            if line[:15].lower() == b"content-length:":
                length = int(line[15:])
        await self._reader.readexactly(length)
        return status

    async def close(self) -> None:
        if self._writer is not None:
            self._writer, writer = None, self._writer
            writer.close()
            with contextlib.suppress(OSError):
                await writer.wait_closed()


async def poll(
    base: str, stop: asyncio.Event, answers: dict[str, list[float]], errors: list[str]
) -> None:
    client = LightClient(base)
    try:
        while not stop.is_set():
            started = time.monotonic()
            for path in ENDPOINTS:
                t0 = time.monotonic()
                status = await asyncio.wait_for(client.get(path), 10)
                answers.setdefault(path, []).append(time.monotonic() - t0)
                if status != 200:
                    errors.append(f"{path}: {status}")
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(stop.wait(), max(0.0, 1.0 - (time.monotonic() - started)))
    finally:
        await client.close()


MODES = {"quiet": "quiet", "polling": "polling the worker", "split": "polling an API process"}


async def one_run(n: int, mode: str) -> dict[str, Any]:
    """One drain of ``n`` events; ``mode``: a key of MODES."""
    await recreate_pg_db(DB)
    await publish(n)
    port = free_port()
    env = worker_env(
        pg_url(DB), TMP / "admin-poll.rec", PORT=str(port), ORDERING="none", LOG_LEVEL="warning"
    )
    env.pop("BENCH_RECORD_FILE")
    served = None
    if mode == "split":  # the API's own process: serves, never claims
        port = free_port()
        served = _start_worker({**env, "PORT": str(port), "ENABLE_POLLING": "false"}, "api")
        await _wait_answering(f"http://127.0.0.1:{port}")
    worker = _start_worker(env)
    conn = await asyncpg.connect(pg_url(DB))
    stop, errors = asyncio.Event(), []
    answers: dict[str, list[float]] = {}
    poller: asyncio.Task[None] | None = None
    try:
        base = f"http://127.0.0.1:{port}"
        started = await _wait_started(conn, n)
        if mode != "quiet":
            poller = asyncio.create_task(poll(base, stop, answers, errors))
        while await conn.fetchval("SELECT count(*) FROM events WHERE NOT processed"):  # noqa: ASYNC110 (the database's state)
            await asyncio.sleep(0.2)
        elapsed = time.monotonic() - started
    finally:
        stop.set()
        if poller is not None:
            await poller
        for process in (worker, served):
            if process is not None:
                process.terminate()
                process.wait(30)
        await conn.close()
        await drop_pg_db(DB)
    return {
        "mode": mode,
        "polling": mode != "quiet",
        "events_per_s": n / elapsed,
        "requests": sum(len(times) for times in answers.values()),
        "answer_ms_p50": statistics.median(flat) * 1000 if (flat := _flat(answers)) else None,
        "answer_ms_max": max(flat) * 1000 if flat else None,
        "per_path_ms_p50": {path: statistics.median(t) * 1000 for path, t in answers.items()},
        "errors": sorted(set(errors)),
    }


async def _wait_answering(base: str) -> None:
    async with httpx.AsyncClient(base_url=base, timeout=2) as client:
        for _ in range(300):
            with contextlib.suppress(httpx.HTTPError):
                if (await client.get("/health/ready")).status_code == 200:
                    return
            await asyncio.sleep(0.1)
    raise RuntimeError(f"the API process at {base} did not answer within 30 s")


def _flat(answers: dict[str, list[float]]) -> list[float]:
    return [t for times in answers.values() for t in times]


def _start_worker(env: dict[str, str], name: str = "worker") -> subprocess.Popen[bytes]:
    TMP.mkdir(parents=True, exist_ok=True)
    with open(TMP / f"admin-poll-{name}.log", "wb") as log:
        return subprocess.Popen(
            [str(VENV_BIN / "eventproc"), "run"], env=env, stdout=log, stderr=log
        )


async def _wait_started(conn: asyncpg.Connection, n: int) -> float:
    """The moment the worker processed its first events (the clock starts there)."""
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline:
        if await conn.fetchval("SELECT count(*) FROM events WHERE NOT processed") < n:
            return time.monotonic()
        await asyncio.sleep(0.05)
    raise RuntimeError("the worker did not start processing within 120 s")


async def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--events", type=int, default=300_000)
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--split", action="store_true", help="also poll an API-only process")
    args = parser.parse_args()
    modes = ["quiet", "polling", *(["split"] if args.split else [])]
    rounds: list[dict[str, dict[str, Any]]] = []
    for run in range(args.runs):
        rounds.append({})
        # Every other round runs its modes in reverse: a machine slowing down
        # over a round then weighs on each mode alike.
        for mode in modes if run % 2 == 0 else modes[::-1]:
            result = rounds[-1][mode] = await one_run(args.events, mode)
            print(f"run {run + 1} {mode}: {result['events_per_s']:,.0f} events/s", flush=True)
    _report(rounds, modes)


def _report(rounds: list[dict[str, dict[str, Any]]], modes: list[str]) -> None:
    """Events/s per mode, and each polled mode's rate over the same round's quiet one."""
    rows = []
    for mode in modes:
        rates = [round(r[mode]["events_per_s"]) for r in rounds]
        ratios = [r[mode]["events_per_s"] / r["quiet"]["events_per_s"] for r in rounds]
        answers = [a for r in rounds if (a := r[mode]["answer_ms_p50"])]
        rows.append(
            [
                MODES[mode],
                fmt_med(rates),
                "" if mode == "quiet" else fmt_med([round(x * 100, 1) for x in ratios], 1),
                fmt_med(answers, 1) if answers else "",
            ]
        )
    headers = ["mode", "events/s median [min-max]", "% of quiet, per round", "answer p50 ms"]
    print()
    print(table(headers, rows))
    for path in ENDPOINTS:
        per_run = [r["polling"]["per_path_ms_p50"][path] for r in rounds]
        print(f"  {path}: answer p50 {fmt_med(per_run, 1)} ms (polling the worker)")
    errors = sorted({e for r in rounds for result in r.values() for e in result["errors"]})
    if errors:
        print("non-200 answers:", ", ".join(errors))
    print(f"load average at the end: {os.getloadavg()[0]:.2f}")


if __name__ == "__main__":
    asyncio.run(main())

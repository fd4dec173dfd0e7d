"""MAX_BODY_BYTES: bodies over the cap answer 413 JSON after at most the cap has been read."""

import asyncio
import json
import uuid
from collections.abc import AsyncIterator
from urllib.parse import urlsplit

import httpx
import pytest

from eventproc.config import Settings
from eventproc.http import create_app
from eventproc.runtime import Runtime
from support.registries import make_registry
from support.served import serving

LIMIT = 4096
HUNDRED_MB = 100 * 1024 * 1024


@pytest.fixture
async def small(sqlite_url: str) -> AsyncIterator[str]:
    """A server whose body cap is LIMIT bytes."""
    settings = Settings(database_url=sqlite_url, max_body_bytes=LIMIT)
    runtime = Runtime(settings, registry=make_registry())
    await runtime.prepare(attempts=1)
    async with serving(create_app(runtime)) as url:
        yield url
    await runtime.store.close()


def test_default_is_small() -> None:
    assert Settings().max_body_bytes == 65_536


async def test_body_within_the_cap_is_read(small: str) -> None:
    body = {"event_id": str(uuid.uuid4()), "padding": "x" * (LIMIT - 100)}
    async with httpx.AsyncClient(base_url=small) as client:
        response = await client.post("/process-event", content=json.dumps(body).encode())
    assert response.status_code == 404  # read and parsed: the event does not exist


async def test_announced_oversize_body_is_refused_before_it_is_sent(small: str) -> None:
    """Content-Length over the cap: 413 at once, while the client has sent no body at all."""
    reader, writer = await _connect(small)
    writer.write(
        b"POST /process-event HTTP/1.1\r\nHost: test\r\nContent-Type: application/json\r\n"
        + f"Content-Length: {HUNDRED_MB}\r\n\r\n".encode()
    )
    status, headers, body = await asyncio.wait_for(_read_response(reader), 5)
    writer.close()
    assert status == 413
    assert headers["content-type"] == "application/json"
    assert json.loads(body) == {
        "error": f"Request body larger than {LIMIT} bytes",
        "maxBytes": LIMIT,
    }


async def test_chunked_oversize_body_is_cut_off_while_it_arrives(small: str) -> None:
    """No Content-Length: the server answers 413 and stops reading long before 100 MB."""
    reader, writer = await _connect(small)
    writer.write(
        b"POST /process-event HTTP/1.1\r\nHost: test\r\nContent-Type: application/json\r\n"
        b"Transfer-Encoding: chunked\r\n\r\n"
    )
    chunk = b"[" + b"1," * 8191 + b"1]"
    answer = asyncio.create_task(_read_response(reader))
    sent = 0
    while sent < HUNDRED_MB and not answer.done():
        writer.write(b"%x\r\n%s\r\n" % (len(chunk), chunk))
        sent += len(chunk)
        drained = asyncio.ensure_future(writer.drain())
        await asyncio.wait({drained, answer}, timeout=5, return_when=asyncio.FIRST_COMPLETED)
        if not drained.done():  # the server stopped reading: the socket buffers are full
            drained.cancel()
            break
    status, headers, body = await asyncio.wait_for(answer, 5)
    writer.close()
    assert status == 413 and headers["content-type"] == "application/json"
    assert json.loads(body)["maxBytes"] == LIMIT
    # What the socket buffers took before the server stopped reading, not 100 MB.
    assert sent < 32 * 1024 * 1024


async def test_oversize_body_is_413_on_every_route(small: str) -> None:
    async with httpx.AsyncClient(base_url=small) as client:
        response = await client.post("/process-batch", content=b"x" * (LIMIT + 1))
    assert response.status_code == 413
    assert response.json()["error"] == f"Request body larger than {LIMIT} bytes"


async def _connect(url: str) -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
    parts = urlsplit(url)
    assert parts.hostname is not None and parts.port is not None
    return await asyncio.open_connection(parts.hostname, parts.port)


async def _read_response(reader: asyncio.StreamReader) -> tuple[int, dict[str, str], bytes]:
    head = await reader.readuntil(b"\r\n\r\n")
    status_line, *lines = head.decode().split("\r\n")
    headers = {}
    for line in lines:
        if line:
            name, _, value = line.partition(":")
            headers[name.strip().lower()] = value.strip()
    body = await reader.readexactly(int(headers["content-length"]))
    return int(status_line.split()[1]), headers, body

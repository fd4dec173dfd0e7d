"""A loopback TCP proxy that can cut every connection, to take the database "away".

It also counts PostgreSQL round trips: every ReadyForQuery ('Z') message the
server sends ends one request of the client (a simple query, or an extended
query's Sync), whatever driver sent it. With ``drop_notifications`` it
forwards everything but the server's NotificationResponse ('A') messages, as
a transaction pooler loses them (LISTEN succeeds, nothing arrives). Needs a
plaintext connection (``sslmode=disable``).
"""

import asyncio
import contextlib
import struct


class Proxy:
    def __init__(
        self, target_host: str, target_port: int, *, drop_notifications: bool = False
    ) -> None:
        self.target = (target_host, target_port)
        self.port = 0
        self.round_trips = 0  # ReadyForQuery messages, start-up ones excluded
        self.drop_notifications = drop_notifications  # may be switched while running
        self.dropped = 0  # NotificationResponse messages not forwarded
        self._server: asyncio.Server | None = None
        self._writers: set[asyncio.StreamWriter] = set()

    async def start(self) -> None:
        self._server = await asyncio.start_server(self._serve, "127.0.0.1", self.port)
        self.port = self._server.sockets[0].getsockname()[1]

    async def cut(self) -> None:
        """Refuse new connections and reset the open ones (the server went down)."""
        if self._server is not None:
            self._server.close()
            await self._server.wait_closed()
            self._server = None
        for writer in list(self._writers):
            writer.transport.abort()
        self._writers.clear()

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            up_reader, up_writer = await asyncio.open_connection(*self.target)
        except OSError:
            writer.transport.abort()
            return
        self._writers.update((writer, up_writer))

        async def pipe(src: asyncio.StreamReader, dst: asyncio.StreamWriter) -> None:
            with contextlib.suppress(OSError, asyncio.CancelledError):
                while data := await src.read(65536):
                    dst.write(data)
                    await dst.drain()
            dst.transport.abort()

        async def pipe_counting(src: asyncio.StreamReader, dst: asyncio.StreamWriter) -> None:
            counter = _ReadyCounter()
            with contextlib.suppress(OSError, asyncio.CancelledError):
                while data := await src.read(65536):
                    self.round_trips += counter.feed(data)
                    for message in counter.take():
                        if self.drop_notifications and message[:1] == b"A":
                            self.dropped += 1
                        else:
                            dst.write(message)
                    await dst.drain()
            dst.transport.abort()

        await asyncio.gather(pipe(reader, up_writer), pipe_counting(up_reader, writer))
        self._writers.difference_update((writer, up_writer))


class _ReadyCounter:
    """Splits the server's byte stream into messages; counts 'Z' after the first.

    ``take`` hands back what ``feed`` was given, cut at message ends (the
    bytes of an unfinished message wait for the rest); a stream it cannot
    read (TLS) passes through as it comes.
    """

    def __init__(self) -> None:
        self._buffer = b""
        self._ready: list[bytes] = []
        self._started = False
        self._first_byte = True
        self._unreadable = False  # TLS, or not PostgreSQL: count nothing

    def take(self) -> list[bytes]:
        ready, self._ready = self._ready, []
        if self._unreadable and self._buffer:
            ready.append(self._buffer)
            self._buffer = b""
        return ready

    def feed(self, data: bytes) -> int:
        self._buffer += data
        if self._unreadable:
            return 0
        if self._first_byte:
            self._first_byte = False
            if self._buffer[:1] == b"S":  # TLS follows
                self._unreadable = True
                return 0
            if self._buffer[:1] == b"N":  # "no SSL", a lone byte
                self._ready.append(self._buffer[:1])
                self._buffer = self._buffer[1:]
        count = 0
        while len(self._buffer) >= 5:
            kind = self._buffer[:1]
            (length,) = struct.unpack("!i", self._buffer[1:5])
            if length < 4:
                self._unreadable = True
                return count
            if len(self._buffer) < 1 + length:
                break
            self._ready.append(self._buffer[: 1 + length])
            self._buffer = self._buffer[1 + length :]
            if kind == b"Z":
                if self._started:
                    count += 1
                self._started = True  # the first one ends the connection's start-up
        return count

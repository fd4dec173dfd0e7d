"""The deploy files as written: the Dockerfile's command run as a process, the rest checked.

No Docker daemon is needed: the image's ENTRYPOINT + CMD, USER, WORKDIR and
ENV are read from the Dockerfile, and that command runs with the venv's
``eventproc`` script, the image's environment and a PostgreSQL database of
its own. compose.yaml, the systemd unit and the Cloud Run guide are checked
against the settings eventproc really reads.
"""

import asyncio
import contextlib
import json
import os
import re
import shlex
import shutil
import signal
import socket
import subprocess
import sys
import uuid
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass, field
from pathlib import Path

import asyncpg
import httpx
import pytest
import yaml
from pydantic import AliasChoices

from eventproc.config import Settings
from eventproc.event import NewEvent
from eventproc.store import open_store
from eventproc.store.postgres.footprint import Footprint
from support.databases import _dsn, drop_database, make_database
from support.waiting import eventually

HERE = Path(__file__).resolve().parent
ROOT = HERE.parents[1]
DEPLOY = ROOT / "deploy"
VENV_BIN = Path(sys.executable).parent  # the venv whose `eventproc` script the image also has
CLOUD_RUN_KILL_AFTER = 10.0  # Cloud Run sends SIGKILL this long after SIGTERM
TOKEN = "deploy-test-token-" + uuid.uuid4().hex


def setting_names() -> set[str]:
    """Every environment variable name Settings reads (field names and their aliases)."""
    names = set()
    for name, info in Settings.model_fields.items():
        alias = info.validation_alias
        if isinstance(alias, AliasChoices):
            names.update(str(choice).upper() for choice in alias.choices)
        else:
            names.add(str(alias or name).upper())
    return names


SETTINGS = setting_names()


# -- the Dockerfile ----------------------------------------------------------


@dataclass
class Image:
    """The final stage of the Dockerfile, as `docker build` would read it."""

    base: str = ""
    entrypoint: list[str] = field(default_factory=list)
    cmd: list[str] = field(default_factory=list)
    user: str = ""
    workdir: str = ""
    healthcheck: str = ""
    env: dict[str, str] = field(default_factory=dict)
    runs: list[str] = field(default_factory=list)
    build_copies: list[str] = field(default_factory=list)  # sources COPYed from the context


def instructions(text: str) -> Iterator[tuple[str, str]]:
    """(INSTRUCTION, arguments), continuation lines joined, comments dropped."""
    logical = ""
    for line in text.splitlines():
        if line.lstrip().startswith("#"):
            continue
        if line.rstrip().endswith("\\"):
            logical += line.rstrip()[:-1] + " "
            continue
        logical += line
        if logical.strip():
            word, _, rest = logical.strip().partition(" ")
            yield word.upper(), rest.strip()
        logical = ""


def read_image(path: Path = ROOT / "Dockerfile") -> Image:
    image, copies = Image(), []
    for word, rest in instructions(path.read_text()):
        if word == "FROM":
            image = Image(base=rest.split()[0], build_copies=copies)
        elif word in ("ENTRYPOINT", "CMD"):
            setattr(image, word.lower(), json.loads(rest))  # exec form, or this fails
        elif word == "ENV":
            for pair in shlex.split(rest):
                key, _, value = pair.partition("=")
                image.env[key] = re.sub(r"\$(\w+)", lambda m: os.environ.get(m[1], ""), value)
        elif word == "COPY" and "--from=" not in rest:
            copies.extend(shlex.split(rest)[:-1])
        elif word in ("USER", "WORKDIR", "HEALTHCHECK"):
            setattr(image, word.lower(), rest)
        elif word == "RUN":
            image.runs.append(rest)
    return image


IMAGE = read_image()
GRACE = float(IMAGE.env["SHUTDOWN_GRACE_SECONDS"])


def test_dockerfile_runs_the_console_script_as_a_non_root_user() -> None:
    assert IMAGE.base.startswith("python:3.11-slim")
    # Exec form (JSON): eventproc is PID 1 and gets SIGTERM itself, no shell in between.
    assert IMAGE.entrypoint == ["eventproc"] and IMAGE.cmd == ["run"]
    uid = IMAGE.user.split(":")[0]
    assert uid and uid not in ("root", "0")
    assert IMAGE.env["HOST"] == "0.0.0.0" and IMAGE.env["PORT"] == "8080"
    assert IMAGE.env["PATH"].startswith("/opt/eventproc/bin:")
    # The drain, the release and the exit fit in Cloud Run's 10 s: the exit after the
    # grace took up to 3.5 s on a loaded 2-core machine.
    assert 0 < GRACE <= CLOUD_RUN_KILL_AFTER - 3
    assert IMAGE.healthcheck == "NONE"
    assert "DATABASE_URL" not in IMAGE.env
    ours = {name for name in IMAGE.env if name != "PATH" and not name.startswith("PYTHON")}
    assert ours <= SETTINGS, ours - SETTINGS
    # The SQLite default lands in WORKDIR: it must belong to the image's user.
    assert any(f"install -d -o {uid} " in run and IMAGE.workdir in run for run in IMAGE.runs)


def test_the_build_installs_the_project_from_its_own_files() -> None:
    build = read_image().build_copies
    assert sorted(build) == ["README.md", "pyproject.toml", "src"]
    for source in build:
        assert (ROOT / source).exists(), source
    lines = (ROOT / ".dockerignore").read_text().splitlines()
    ignore = [line.strip() for line in lines if line.strip() and not line.startswith("#")]
    assert ignore[0] == "*"  # nothing but what is let back in below
    assert {f"!{source}" for source in build} <= set(ignore)
    text = (ROOT / "Dockerfile").read_text()
    assert "pip install ." in text and "git+" not in text and "pip install eventproc" not in text


def image_env(**extra: str) -> dict[str, str]:
    """The image's ENV (its venv first on PATH: here, the test venv), plus the deployment's."""
    env = dict(IMAGE.env)
    env["PATH"] = f"{VENV_BIN}{os.pathsep}{os.environ.get('PATH', '')}"
    env.update(extra)
    return env


def image_argv() -> list[str]:
    script = VENV_BIN / IMAGE.entrypoint[0]
    assert script.exists(), f"{script}: the console script is not installed in this venv"
    return [str(script), *IMAGE.entrypoint[1:], *IMAGE.cmd]


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


async def test_the_image_refuses_a_public_bind_without_a_token(tmp_path: Path) -> None:
    env = image_env(DATABASE_URL=f"sqlite:///{tmp_path / 'x.db'}", PORT=str(free_port()))
    process = await asyncio.create_subprocess_exec(
        *image_argv(), env=env, cwd=tmp_path, stderr=asyncio.subprocess.PIPE
    )
    _, err = await asyncio.wait_for(process.communicate(), 30)
    assert process.returncode == 2
    assert err.decode().strip().splitlines() == [
        "error: HOST=0.0.0.0 is not a loopback address and no API token is set: "
        "set API_TOKEN or API_TOKENS (recommended) or ALLOW_UNAUTHENTICATED=true"
    ]


# -- the image's command as a process -----------------------------------------


@dataclass
class Served:
    process: asyncio.subprocess.Process
    port: int
    lines: list[str]

    async def healthy(self) -> None:
        """/health answers on PORT, then /health/ready (the schema is in place)."""
        async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{self.port}") as client:

            async def answers(path: str) -> bool:
                assert self.process.returncode is None, "\n".join(self.lines)
                with contextlib.suppress(httpx.TransportError):
                    return (await client.get(path)).status_code == 200
                return False

            await eventually(lambda: answers("/health"), within=20)
            await eventually(lambda: answers("/health/ready"), within=30)
            health = (await client.get("/health")).json()
        assert health["database"]["reachable"] is True and health["database"]["backend"]

    async def stop(self) -> tuple[int, float]:
        """SIGTERM; the exit code and how long it took."""
        loop = asyncio.get_running_loop()
        sent = loop.time()
        self.process.send_signal(signal.SIGTERM)
        code = await asyncio.wait_for(self.process.wait(), CLOUD_RUN_KILL_AFTER + 20)
        return code, loop.time() - sent


@contextlib.asynccontextmanager
async def image_command(env: dict[str, str], cwd: Path) -> AsyncIterator[Served]:
    process = await asyncio.create_subprocess_exec(
        *image_argv(), env=env, cwd=cwd, stderr=asyncio.subprocess.PIPE
    )
    lines: list[str] = []

    async def read() -> None:
        assert process.stderr is not None
        async for line in process.stderr:
            lines.append(line.decode().rstrip())

    reader = asyncio.create_task(read())
    try:
        yield Served(process, int(env["PORT"]), lines)
    finally:
        if process.returncode is None:
            process.kill()
            await process.wait()
        await reader


@pytest.fixture
def deploy_db() -> Iterator[str]:
    url = make_database("eventproc_deploy")
    yield url
    drop_database(url)


async def publish(url: str, events: list[NewEvent]) -> None:
    store = open_store(url)
    try:
        await store.event_insert_many(events)
    finally:
        await store.close()


async def rows(url: str) -> dict[uuid.UUID, asyncpg.Record]:
    connection = await asyncpg.connect(_dsn(url))
    try:
        found = await connection.fetch(
            "SELECT id, processed, outcome, attempts, locked_by,"
            " locked_until > now() AS leased FROM events"
        )
        for table in ("event_deliveries", "event_dead_letters"):
            assert await connection.fetchval(f"SELECT count(*) FROM {table}") == 0, table
    finally:
        await connection.close()
    return {row["id"]: row for row in found}


def marked(marks: Path, *names: str) -> bool:
    return all((marks / name).exists() for name in names)


def compose_healthcheck(port: int) -> int:
    """compose.yaml's healthcheck command for eventproc, run here against PORT."""
    test = compose()["services"]["eventproc"]["healthcheck"]["test"]
    assert test[0] == "CMD" and test[1] == "python"
    env = image_env(PORT=str(port))  # `python` found on the image's PATH: its venv's
    return subprocess.run(test[1:], env=env, timeout=30, capture_output=True).returncode


@pytest.mark.timeout(150)
async def test_the_image_command_serves_processes_and_drains_within_the_grace(
    deploy_db: str, tmp_path: Path
) -> None:
    marks, workdir = tmp_path / "marks", tmp_path / "workdir"
    marks.mkdir()
    workdir.mkdir()
    env = image_env(
        DATABASE_URL=deploy_db,
        PORT=str(free_port()),
        API_TOKEN=TOKEN,
        HANDLERS="deploy_handlers:registry",
        PYTHONPATH=str(HERE),
        DEPLOY_TEST_MARKS=str(marks),
    )
    quick = [NewEvent("deploy.quick", {}) for _ in range(20)]
    slow = NewEvent("deploy.slow", {"seconds": 2.5})
    outlast = NewEvent("deploy.outlast", {})
    async with image_command(env, workdir) as served:
        await served.healthy()
        assert await asyncio.to_thread(compose_healthcheck, served.port) == 0
        await publish(deploy_db, [*quick, slow, outlast])
        done = [f"{event.id}.done" for event in quick]
        started = [f"{slow.id}.started", f"{outlast.id}.started"]
        await eventually(lambda: asyncio.sleep(0, marked(marks, *done, *started)), within=30)
        code, took = await served.stop()
    logged = [json.loads(line) for line in served.lines if line.startswith("{")]
    assert code == 0, "\n".join(served.lines)
    assert any("SIGTERM received" in line["message"] for line in logged)
    # The outlasting handler kept the drain for the whole grace, and not a second past
    # what Cloud Run allows: the image's SHUTDOWN_GRACE_SECONDS was the one applied.
    assert GRACE <= took < CLOUD_RUN_KILL_AFTER, took
    assert await asyncio.to_thread(compose_healthcheck, served.port) != 0  # nothing listens
    assert marked(marks, f"{slow.id}.done")  # the running handler finished
    found = await rows(deploy_db)
    assert len(found) == len(quick) + 2
    for event in [*quick, slow]:
        assert (found[event.id]["processed"], found[event.id]["outcome"]) == (True, "succeeded")
    left = found[outlast.id]
    assert left["processed"] is False and left["locked_by"] is None and not left["leased"]
    assert left["attempts"] == 0  # given back, not spent
    await restart_finishes_what_was_given_back(env, workdir, deploy_db, marks, outlast)


async def restart_finishes_what_was_given_back(
    env: dict[str, str], workdir: Path, url: str, marks: Path, outlast: NewEvent
) -> None:
    async with image_command(env, workdir) as served:
        await served.healthy()
        await eventually(lambda: asyncio.sleep(0, marked(marks, f"{outlast.id}.done")), 30)

        async def all_done() -> bool:
            return all(row["processed"] for row in (await rows(url)).values())

        await eventually(all_done, within=30)
        code, took = await served.stop()
    assert code == 0 and took < GRACE, "\n".join(served.lines)
    for row in (await rows(url)).values():
        assert row["outcome"] == "succeeded" and not row["leased"]
    assert (await rows(url))[outlast.id]["attempts"] == 1


# -- compose.yaml -------------------------------------------------------------


def compose() -> dict[str, dict[str, dict[str, object]]]:
    loaded = yaml.safe_load((DEPLOY / "compose.yaml").read_text())
    assert isinstance(loaded, dict)
    return loaded


def seconds(text: str) -> float:
    match = re.fullmatch(r"(\d+)(s|m)", text)
    assert match, text
    return float(match[1]) * (60 if match[2] == "m" else 1)


def test_compose_file_sets_only_real_settings_and_waits_for_postgres() -> None:
    services = compose()["services"]
    assert services["postgres"]["image"] == "postgres:15"
    postgres_check = services["postgres"]["healthcheck"]
    assert isinstance(postgres_check, dict) and "pg_isready" in postgres_check["test"]
    for name in ("eventproc", "worker"):
        service = services[name]
        build = service["build"]
        assert isinstance(build, dict) and (DEPLOY / str(build["context"]) / "Dockerfile").exists()
        assert service["image"] == "eventproc:local"
        assert service["restart"] in ("unless-stopped", "always", "on-failure")
        assert service["depends_on"] == {"postgres": {"condition": "service_healthy"}}
        env = service["environment"]
        assert isinstance(env, dict) and set(env) <= SETTINGS, set(env) - SETTINGS
        assert "@postgres:5432/" in str(env["DATABASE_URL"])
        grace = float(str(env.get("SHUTDOWN_GRACE_SECONDS", GRACE)))
        assert service["stop_signal"] == "SIGTERM"
        assert seconds(str(service["stop_grace_period"])) > grace + 5
    assert services["eventproc"]["command"] == IMAGE.cmd
    assert services["worker"]["command"] == ["worker"]
    eventproc_env = services["eventproc"]["environment"]
    assert isinstance(eventproc_env, dict) and eventproc_env["API_TOKENS"]  # HOST=0.0.0.0
    assert services["eventproc"]["ports"] == ["127.0.0.1:8080:8080"]
    assert {"test", "interval", "retries"} <= set(services["eventproc"]["healthcheck"])


# -- the systemd unit ---------------------------------------------------------


def unit() -> dict[str, dict[str, str]]:
    sections: dict[str, dict[str, str]] = {}
    current: dict[str, str] = {}
    for line in (DEPLOY / "eventproc.service").read_text().splitlines():
        line = line.strip()
        if not line or line.startswith(("#", ";")):
            continue
        if line.startswith("["):
            current = sections.setdefault(line.strip("[]"), {})
            continue
        key, _, value = line.partition("=")
        assert key not in current, f"{key} given twice"
        current[key] = value
    return sections


def env_file(path: Path = DEPLOY / "eventproc.env.example") -> dict[str, str]:
    pairs = [line.split("=", 1) for line in path.read_text().splitlines()]
    return {pair[0]: pair[1] for pair in pairs if len(pair) == 2 and not pair[0].startswith("#")}


def test_systemd_unit_stops_within_its_timeout_as_a_dedicated_user() -> None:
    service = unit()["Service"]
    assert service["User"] == "eventproc" and service["Group"] == "eventproc"
    assert service["EnvironmentFile"] == "/etc/eventproc/eventproc.env"
    assert service["ExecStart"] == "/opt/eventproc/bin/eventproc run"  # the image's venv path
    assert service["Restart"] == "on-failure" and service["RestartPreventExitStatus"] == "2"
    assert service["KillSignal"] == "SIGTERM"
    grace = float(env_file().get("SHUTDOWN_GRACE_SECONDS", Settings().shutdown_grace_seconds))
    assert float(service["TimeoutStopSec"]) > grace + 5
    assert float(service["TimeoutStopSec"]) > Settings().shutdown_grace_seconds
    assert unit()["Install"]["WantedBy"] == "multi-user.target"


def test_systemd_unit_verifies(tmp_path: Path) -> None:
    """systemd-analyze verify, with ExecStart pointed at this venv (never skipped)."""
    analyze = shutil.which("systemd-analyze")
    assert analyze, "systemd-analyze is not installed (Debian: apt-get install systemd)"
    text = (DEPLOY / "eventproc.service").read_text()
    copy = tmp_path / "eventproc.service"
    copy.write_text(text.replace("/opt/eventproc/bin/eventproc", str(VENV_BIN / "eventproc")))
    checked = subprocess.run([analyze, "verify", str(copy)], capture_output=True, check=False)
    # verify exits 0 on unknown keys too: any warning at all is a failure here.
    assert checked.returncode == 0 and not checked.stderr and not checked.stdout, checked


def test_env_example_names_only_real_settings() -> None:
    names = set(env_file())
    assert {"DATABASE_URL", "SHUTDOWN_GRACE_SECONDS"} <= names
    assert names <= SETTINGS, names - SETTINGS
    settings = Settings(_env_file=None, **{k.lower(): v for k, v in env_file().items()})
    assert settings.shutdown_grace_seconds == 25


# -- the Cloud Run guide ------------------------------------------------------

GUIDE = (DEPLOY / "cloudrun.md").read_text()
NOT_SETTINGS = {"SIGTERM", "SIGKILL"}  # named in the guide, and not settings


def test_every_setting_the_cloud_run_guide_names_exists() -> None:
    named = {
        span.split("=")[0]
        for span in re.findall(r"`([^`\n]+)`", GUIDE)
        if re.fullmatch(r"[A-Z][A-Z0-9_]+(=\S*)?", span)
    }
    for flag in re.findall(r"--(?:set|update)-(?:env-vars|secrets)[ =](\S+)", GUIDE):
        named.update(pair.split("=")[0] for pair in flag.split(","))
    assert {"DATABASE_URL", "DATABASE_POOL_SIZE", "POOLER", "LISTEN"} <= named
    assert named - NOT_SETTINGS <= SETTINGS, (named - NOT_SETTINGS) - SETTINGS
    # The grace it names is the image's.
    for value in re.findall(r"SHUTDOWN_GRACE_SECONDS=(\d+)", GUIDE):
        assert float(value) == GRACE


def test_the_cloud_run_guides_connection_table_is_footprint_py() -> None:
    table = re.findall(r"^\| (\d+) \| 1 \+ (\d+) \+ (\d+) \| (\d+) \+ (\d+) \|$", GUIDE, re.M)
    assert len(table) >= 3
    for size, hot, pooled, hot_unlistened, pooled_unlistened in map(
        lambda row: [int(cell) for cell in row], table
    ):
        assert Footprint.of(size, listen=True) == Footprint(pooled, hot, 1)
        assert Footprint.of(size, listen=False) == Footprint(pooled_unlistened, hot_unlistened, 0)

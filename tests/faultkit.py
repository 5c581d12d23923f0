"""Helpers for the fault tests and benchmarks: private Redis servers, a TCP proxy that can be cut,
the real app behind a real HTTP server, `amoscore worker` subprocesses, fixture-shaped bodies.

Everything here starts its own processes on free loopback ports and kills them by pid; the
machine's own Postgres (5432) and Redis (6379) are never touched.
"""

from __future__ import annotations

import os
import select
import shutil
import signal
import socket
import subprocess
import threading
import time
from collections.abc import Iterator, Mapping
from contextlib import contextmanager, suppress
from pathlib import Path
from typing import Any
from urllib.parse import urlencode

ROOT = Path(__file__).resolve().parent.parent
ACCOUNT_ID = 32427762
SALES_PIPELINE = 9621010
BASE_UNIX = 1_748_268_669  # 2025-05-26, the fixtures' epoch


PG_ADMIN_URL = os.environ.get("AMOSCORE_TEST_PG", "postgresql+psycopg://postgres@127.0.0.1:5432/test")


def create_database(prefix: str, *, options: str = "") -> str:
    """A fresh, empty Postgres database beside PG_ADMIN_URL's; returns its URL. ``options``
    go after CREATE DATABASE (a collation, say)."""
    import uuid

    from sqlalchemy import create_engine, text

    name = f"{prefix}_{uuid.uuid4().hex[:10]}"
    admin = create_engine(PG_ADMIN_URL, isolation_level="AUTOCOMMIT")
    try:
        with admin.connect() as conn:
            conn.execute(text(f'CREATE DATABASE "{name}" {options}'))
    finally:
        admin.dispose()
    return PG_ADMIN_URL.rsplit("/", 1)[0] + "/" + name


def drop_database(url: str) -> None:
    """Drop a database made by create_database, ending whatever still holds it."""
    from sqlalchemy import create_engine, text

    name = url.rsplit("/", 1)[1]
    admin = create_engine(PG_ADMIN_URL, isolation_level="AUTOCOMMIT")
    try:
        with admin.connect() as conn:
            conn.execute(text("SELECT pg_terminate_backend(pid) FROM pg_stat_activity"
                              " WHERE datname = :name"), {"name": name})
            conn.execute(text(f'DROP DATABASE IF EXISTS "{name}"'))
    finally:
        admin.dispose()


@contextmanager
def temp_database(prefix: str) -> Iterator[str]:
    """create_database … drop_database around a block (the benches)."""
    url = create_database(prefix)
    try:
        yield url
    finally:
        drop_database(url)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def wait_port(port: int, timeout: float = 10.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        with suppress(OSError), socket.create_connection(("127.0.0.1", port), timeout=0.2):
            return
        time.sleep(0.02)
    raise TimeoutError(f"nothing listens on 127.0.0.1:{port} after {timeout} s")


# --- a private redis-server -------------------------------------------------------------------


class RedisServer:
    """``redis-server`` on its own port, no persistence; kill/freeze/restart it by pid."""

    def __init__(self, port: int | None = None) -> None:
        self.port = port or free_port()
        self.proc: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    def start(self) -> RedisServer:
        exe = shutil.which("redis-server")
        if exe is None:
            raise RuntimeError("redis-server is not installed")
        self.proc = subprocess.Popen(
            [exe, "--port", str(self.port), "--bind", "127.0.0.1", "--save", "",
             "--appendonly", "no", "--protected-mode", "no"],
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        wait_port(self.port)
        return self

    def kill(self) -> None:
        """SIGKILL: the server vanishes mid-conversation, as in a crash."""
        if self.proc is not None and self.proc.poll() is None:
            with suppress(ProcessLookupError):
                os.kill(self.proc.pid, signal.SIGCONT)  # a stopped process dies only once resumed
            self.proc.kill()
            self.proc.wait(5)
        self.proc = None

    def freeze(self) -> None:
        """SIGSTOP: connections are accepted by the kernel but nothing is ever answered."""
        assert self.proc is not None
        os.kill(self.proc.pid, signal.SIGSTOP)

    def thaw(self) -> None:
        assert self.proc is not None
        os.kill(self.proc.pid, signal.SIGCONT)


@contextmanager
def redis_server() -> Iterator[RedisServer]:
    server = RedisServer().start()
    try:
        yield server
    finally:
        server.kill()


# --- a TCP proxy that can be cut (the database "goes away") ----------------------------------


class TcpProxy:
    """Forwards 127.0.0.1:<port> to a target; ``cut()`` closes the listener and every open
    connection (clients see refused connects), ``restore()`` listens again on the same port.
    ``freeze()`` keeps every connection open but forwards nothing (a server that accepts and
    never answers), ``thaw()`` lets the held bytes through."""

    def __init__(self, target_host: str, target_port: int) -> None:
        self.target = (target_host, target_port)
        self.port = free_port()
        self._lock = threading.Lock()
        self._socks: set[socket.socket] = set()
        self._listener: socket.socket | None = None
        self._thread: threading.Thread | None = None
        self._flowing = threading.Event()
        self._flowing.set()

    def start(self) -> TcpProxy:
        listener = socket.socket()
        listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        listener.bind(("127.0.0.1", self.port))
        listener.listen(64)
        self._listener = listener
        self._thread = threading.Thread(target=self._accept, args=(listener,), daemon=True)
        self._thread.start()
        return self

    def _accept(self, listener: socket.socket) -> None:
        while True:
            try:
                client, _ = listener.accept()
            except OSError:
                return
            try:
                upstream = socket.create_connection(self.target, timeout=5)
            except OSError:
                client.close()
                continue
            with self._lock:
                self._socks |= {client, upstream}
            threading.Thread(target=self._pump, args=(client, upstream), daemon=True).start()

    def _pump(self, a: socket.socket, b: socket.socket) -> None:
        pair = {a: b, b: a}
        try:
            while a.fileno() >= 0 and b.fileno() >= 0:  # until cut() closes them
                if not self._flowing.wait(0.05):
                    continue  # frozen: the bytes wait in the kernel's buffers
                ready, _, _ = select.select([a, b], [], [], 0.05)
                for s in ready:
                    data = s.recv(65536)
                    if not data:
                        return
                    pair[s].sendall(data)
        except (OSError, ValueError):
            return
        finally:
            for s in (a, b):
                with suppress(OSError):
                    s.close()
            with self._lock:
                self._socks -= {a, b}

    def cut(self) -> None:
        if self._listener is not None:
            with suppress(OSError):
                self._listener.shutdown(socket.SHUT_RDWR)
            self._listener.close()
            self._listener = None
        with self._lock:
            socks, self._socks = set(self._socks), set()
        for s in socks:
            with suppress(OSError):
                s.shutdown(socket.SHUT_RDWR)
            with suppress(OSError):
                s.close()

    def restore(self) -> None:
        self.start()

    def freeze(self) -> None:
        self._flowing.clear()

    def thaw(self) -> None:
        self._flowing.set()


# --- the real app behind a real HTTP server -----------------------------------------------------


@contextmanager
def serve_app(app: Any) -> Iterator[str]:
    """The Flask app under werkzeug's threaded server on a free port; yields its base URL."""
    from werkzeug.serving import WSGIRequestHandler, make_server

    class Quiet(WSGIRequestHandler):
        def log_request(self, *args: Any, **kwargs: Any) -> None:
            return None

    server = make_server("127.0.0.1", 0, app, threaded=True, request_handler=Quiet)
    thread = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.05},
                              daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_port}"
    finally:
        server.shutdown()
        server.server_close()
        thread.join(5)


# --- `amoscore worker` subprocesses ------------------------------------------------------------


def worker_env(database_url: str, redis_url: str, secret: str, **extra: str) -> dict[str, str]:
    env = dict(os.environ)
    env.update({"DATABASE_URL": database_url, "REDIS_URL": redis_url,
                "AMOSCORE_CONFIG": str(ROOT / "config" / "account.example.yaml"),
                "AMOSCORE_WEBHOOK_SECRET": secret, "AMOCRM_LONG_LIVED_TOKEN": "test-token",
                "AMOSCORE_FERNET_KEY": "x" * 43 + "="})
    env.update(extra)
    return env


def start_worker(env: Mapping[str, str], *, burst: bool = False,
                 log: Path | None = None) -> subprocess.Popen[bytes]:
    exe = ROOT / ".venv" / "bin" / "amoscore"
    args = [str(exe), "worker"] + (["--burst"] if burst else [])
    if log is None:
        return subprocess.Popen(args, cwd=ROOT, env=dict(env), stdout=subprocess.DEVNULL,
                                stderr=subprocess.STDOUT, start_new_session=True)
    with open(log, "wb") as out:  # the child keeps its own copy of the descriptor
        return subprocess.Popen(args, cwd=ROOT, env=dict(env), stdout=out,
                                stderr=subprocess.STDOUT, start_new_session=True)


def children_of(pid: int) -> list[int]:
    """Every descendant of ``pid`` (RQ's work horse calls setsid, so a group kill misses it)."""
    parents: dict[int, list[int]] = {}
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            with open(f"/proc/{entry}/stat") as fh:
                stat = fh.read()
        except OSError:
            continue
        ppid = int(stat.rsplit(")", 1)[1].split()[1])
        parents.setdefault(ppid, []).append(int(entry))
    out, todo = [], [pid]
    while todo:
        for child in parents.get(todo.pop(), []):
            out.append(child)
            todo.append(child)
    return out


def kill_tree(proc: subprocess.Popen[bytes]) -> None:
    """SIGKILL a process we started and all its descendants, by pid."""
    if proc.poll() is None:
        pids = [proc.pid, *children_of(proc.pid)]
        for pid in reversed(pids):
            with suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)
    with suppress(subprocess.TimeoutExpired):
        proc.wait(5)


# --- fixture-shaped bodies ---------------------------------------------------------------------


def _form(pairs: list[tuple[str, object]]) -> bytes:
    pairs = pairs + [("account[subdomain]", "acme"), ("account[id]", ACCOUNT_ID),
                     ("account[_links][self]", "https://acme.amocrm.ru")]
    return urlencode([(k, str(v)) for k, v in pairs]).encode("ascii")


def status_body(deal_id: int, at: int, status_id: int, old_status_id: int) -> bytes:
    """A ``leads[status]`` delivery like tests/fixtures/webhooks/leads__status_won.txt."""
    p = "leads[status][0]"
    return _form([(f"{p}[id]", deal_id), (f"{p}[name]", f"Ворота №{deal_id}"),
                  (f"{p}[status_id]", status_id), (f"{p}[old_status_id]", old_status_id),
                  (f"{p}[pipeline_id]", SALES_PIPELINE), (f"{p}[price]", 100_000 + deal_id % 1000),
                  (f"{p}[responsible_user_id]", 10000698), (f"{p}[last_modified]", at),
                  (f"{p}[created_at]", BASE_UNIX), (f"{p}[updated_at]", at),
                  (f"{p}[account_id]", ACCOUNT_ID)])


def message_body(message_id: str, deal_id: int, at: int) -> bytes:
    """A ``message[add]`` delivery like tests/fixtures/webhooks/message__incoming.txt."""
    p = "message[add][0]"
    return _form([(f"{p}[id]", message_id), (f"{p}[chat_id]", f"chat-{deal_id}"),
                  (f"{p}[talk_id]", deal_id), (f"{p}[contact_id]", 90_000_000 + deal_id),
                  (f"{p}[text]", "Здравствуйте! Сколько стоит монтаж?"), (f"{p}[created_at]", at),
                  (f"{p}[element_type]", 2), (f"{p}[entity_type]", "lead"),
                  (f"{p}[element_id]", deal_id), (f"{p}[entity_id]", deal_id),
                  (f"{p}[type]", "incoming"), (f"{p}[origin]", "telegram")])


def distinct_bodies(n: int, start: int = 0) -> list[tuple[str, int, int, bytes]]:
    """``n`` distinct deliveries alternating stage changes and incoming messages.

    Each item is (kind, deal id, unix instant, body); what each must leave in the ledger follows
    from its construction (one StageChange or one Interaction), not from the code under test."""
    out = []
    for i in range(start, start + n):
        deal_id = 40_000_000 + i
        at = BASE_UNIX + 60 * i
        if i % 2 == 0:
            out.append(("stage", deal_id, at, status_body(deal_id, at, 76789231, 76789230)))
        else:
            out.append(("message", deal_id, at, message_body(f"m-{i:08d}", deal_id, at)))
    return out

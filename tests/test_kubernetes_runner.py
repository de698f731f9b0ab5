"""The Kubernetes runner's bookkeeping, through the real Kubernetes client, against FakeKubernetesAPI: which Jobs it
makes and when, how it tells the controller of tries that ended (pods added as a Job controller and a kubelet would
have left them), how a restarted server finds its Jobs by label, and what cancelling deletes. The fake runs no pod:
this is not a cluster test (tests/test_kubernetes_cluster.py is)."""

import pytest
from kubernetes import client as k8s

from fake_kube_api import FakeKubernetesAPI
from kube_models import as_api
from pfs.core import kube
from pfs.core.errors import Unavailable
from pfs.core.model import JobInfo, ShardInfo, ShardState, Transform
from server.pps.kubernetes import runner as runner_module
from server.pps.kubernetes.runner import KubernetesRunner
from server.pps.kubernetes.specs import Workers
from server.pps.runners import Ended

NS = "pfs-test"
JOB = "0123456789abcdef0123456789abcdef"
ADDRESS = "pfs.pfs-test.svc:30650"


@pytest.fixture
def api(tmp_path, monkeypatch):
    fake = fake_api(tmp_path, monkeypatch)
    yield fake
    fake.close()


def fake_api(tmp_path, monkeypatch, drops: tuple[str, ...] = ()) -> FakeKubernetesAPI:
    """A FakeKubernetesAPI that $KUBECONFIG names, dropping the Job spec fields DROPS."""
    fake = FakeKubernetesAPI(drops)
    fake.kubeconfig(tmp_path / "kubeconfig", NS)
    monkeypatch.setenv("KUBECONFIG", str(tmp_path / "kubeconfig"))
    monkeypatch.delenv("KUBERNETES_SERVICE_HOST", raising=False)
    monkeypatch.setattr(runner_module, "POLL_EVERY", 0.0)  # each poll looks
    return fake


@pytest.fixture
def runner(api):
    r = KubernetesRunner(ADDRESS, Workers(NS, "server-a"))
    yield r
    r.close()


def job_info(shards: int, launched: int) -> JobInfo:
    """A job of SHARDS shards, the first LAUNCHED of them at try 1 (as launch_shard leaves it)."""
    return JobInfo(JOB, Transform(("sh", "-c", "true"), image="pfs/job-shim:latest"), (), shards, "p", pipeline="p",
                   shards=tuple(ShardInfo(i, ShardState.RUNNING if i < launched else ShardState.PENDING, 1 if i < launched
                                          else 0) for i in range(shards)), max_attempts=3)


def worker_pod(job_name: str, shard: int, attempt: int, status: k8s.V1PodStatus, name: str, retry: bool = False) -> dict:
    """The pod a Job controller made for SHARD of Job JOB_NAME, with the status its kubelet gave it."""
    labels = {kube.PART_OF: "pfs", kube.COMPONENT: kube.WORKER, kube.SERVER_LABEL: "server-a", kube.JOB_LABEL: JOB,
              kube.ATTEMPT_LABEL: str(attempt), "job-name": job_name, **({kube.SHARD_LABEL: str(shard)} if retry else {})}
    return as_api(k8s.V1Pod(api_version="v1", kind="Pod", metadata=k8s.V1ObjectMeta(
        name=name, uid=f"uid-{name}", labels=labels,
        annotations=None if retry else {kube.INDEX_ANNOTATION: str(shard)}), status=status))


def ended(code: int, message: str | None, reason: str = "Completed", phase: str = "Succeeded") -> k8s.V1PodStatus:
    return k8s.V1PodStatus(phase=phase, container_statuses=[k8s.V1ContainerStatus(
        name="worker", image="i", image_id="", ready=False, restart_count=0, state=k8s.V1ContainerState(
            terminated=k8s.V1ContainerStateTerminated(exit_code=code, reason=reason, message=message)))])


def pull_failed() -> k8s.V1PodStatus:
    return k8s.V1PodStatus(phase="Pending", container_statuses=[k8s.V1ContainerStatus(
        name="worker", image="i", image_id="", ready=False, restart_count=0, state=k8s.V1ContainerState(
            waiting=k8s.V1ContainerStateWaiting(reason="ImagePullBackOff", message='Back-off pulling image "i"')))])


RUNNING = k8s.V1PodStatus(phase="Running")


def created(api: FakeKubernetesAPI) -> list[str]:
    return [path.rsplit("/", 1)[-1] for method, path, _ in api.requests if method == "POST"]


def test_the_first_try_is_one_indexed_job_made_at_the_last_launch(api, runner):
    for shard in range(3):
        assert created(api) == []  # no pod may ask for a shard whose try is not recorded yet
        runner.launch(job_info(3, shard + 1), shard, 1, ADDRESS, "token")
    assert [name for _, name in api.jobs] == [f"pfs-{JOB}"]
    made = api.jobs[NS, f"pfs-{JOB}"]
    assert (made["spec"]["completionMode"], made["spec"]["completions"]) == ("Indexed", 3)
    assert runner.running(JOB) == {0: 1, 1: 1, 2: 1}
    assert runner.jobs() == {JOB}
    assert runner.poll() == []  # no pod yet: on their way


def test_tries_end_as_their_pods_say(api, runner):
    for shard in range(3):
        runner.launch(job_info(3, shard + 1), shard, 1, ADDRESS, "token")
    indexed = f"pfs-{JOB}"
    api.add_pod(worker_pod(indexed, 0, 1, ended(0, "0\n"), "pfs-j-0-aaaaa"), NS)
    api.add_pod(worker_pod(indexed, 1, 1, pull_failed(), "pfs-j-1-bbbbb"), NS)
    api.add_pod(worker_pod(indexed, 2, 1, RUNNING, "pfs-j-2-ccccc"), NS)
    got = sorted(runner.poll(), key=lambda e: e.shard)
    assert got == [Ended(JOB, 0, 1, 0, ""),
                   Ended(JOB, 1, 1, -1, "", 'could not start (ImagePullBackOff: Back-off pulling image "i")')]
    assert runner.running(JOB) == {2: 1}
    assert runner.poll() == []  # each told once

    # the controller tries shard 1 again: a Job of its own, whose pod dies for memory before job-shim reports
    runner.launch(job_info(3, 3), 1, 2, ADDRESS, "token")
    retry = f"pfs-{JOB}-1-2"
    assert created(api)[-1] == "jobs" and (NS, retry) in api.jobs
    assert runner.running(JOB) == {1: 2, 2: 1}
    api.add_pod(worker_pod(retry, 1, 2, ended(137, None, "OOMKilled", "Failed"), "pfs-j-1-2-ddddd", retry=True), NS)
    api.logs["pfs-j-1-2-ddddd"] = "".join(f"line {i}\n" for i in range(100))
    [e] = runner.poll()
    assert (e.job, e.shard, e.attempt, e.code) == (JOB, 1, 2, -1)
    assert e.reason == "was killed for using more memory than its limit (OOMKilled)"
    assert e.tail.splitlines() == [f"line {i}" for i in range(50, 100)]  # the pod's own log's last lines
    [(_, _, log_query)] = [r for r in api.requests if r[1].endswith("/log")]
    assert log_query["container"] == "worker"


def test_a_restarted_server_finds_its_jobs_by_label_and_carries_on(api, runner):
    for shard in range(2):
        runner.launch(job_info(2, shard + 1), shard, 1, ADDRESS, "token")
    runner.launch(job_info(2, 2), 0, 2, ADDRESS, "token")  # shard 0 at its second try
    runner.close()  # the server stops: its workers go on
    assert len(api.jobs) == 2 and not any(method == "DELETE" for method, _, _ in api.requests)

    other = KubernetesRunner(ADDRESS, Workers(NS, "server-b"))  # another server sees none of them
    again = KubernetesRunner(ADDRESS, Workers(NS, "server-a"))
    try:
        assert other.poll() == [] and other.jobs() == set()
        assert again.poll() == []
        assert again.running(JOB) == {0: 2, 1: 1}  # each shard's latest try
        assert again.jobs() == {JOB}
        api.add_pod(worker_pod(f"pfs-{JOB}", 1, 1, ended(0, "0\n"), "pfs-j-1-aaaaa"), NS)
        assert again.poll() == [Ended(JOB, 1, 1, 0, "")]
        # its job done, the controller cancels it: every Job of it deleted, pods first
        again.cancel(JOB)
        deletes = [(path.rsplit("/", 1)[-1], q) for method, path, q in api.requests if method == "DELETE"]
        assert sorted(deletes) == [(f"pfs-{JOB}", {"propagationPolicy": "Foreground"}),
                                   (f"pfs-{JOB}-0-2", {"propagationPolicy": "Foreground"})]
        assert api.jobs == {} and api.pods == {}
        assert again.running(JOB) == {} and again.jobs() == set()
    finally:
        other.close()
        again.close()


def test_a_pod_deleted_before_it_ended_ends_its_try(api, runner):
    """A drained node's pod is deleted, and the Indexed Job makes another at the same try: that one must not carry
    on with what the first left staged, so the try counts as failed once its pod is gone."""
    runner.launch(job_info(1, 1), 0, 1, ADDRESS, None)
    api.add_pod(worker_pod(f"pfs-{JOB}", 0, 1, RUNNING, "pfs-j-0-aaaaa"), NS)
    assert runner.poll() == []
    del api.pods[NS, "pfs-j-0-aaaaa"]
    assert runner.poll() == [Ended(JOB, 0, 1, -1, "", "lost its pod (deleted before it ended)")]


def test_a_job_that_cannot_be_made_is_a_try_that_could_not_start(api, runner):
    api.jobs[NS, f"pfs-{JOB}-0-2"] = {"metadata": {"name": "taken"}}  # a name in use: 409, taken as made
    runner.launch(job_info(1, 1), 0, 2, ADDRESS, None)
    assert runner.running(JOB) == {0: 2}
    api.close()  # the API away: the launch fails, in one line naming it, and leaves no try behind
    with pytest.raises(Unavailable) as err:
        runner.launch(job_info(1, 1), 0, 3, ADDRESS, None)
    assert str(err.value).startswith(f"kubernetes runner: cannot create Job pfs-{JOB}-0-3: cannot reach the "
                                     f"Kubernetes API at {api.url}: "), str(err.value)
    assert "\n" not in str(err.value)
    assert runner.running(JOB) == {}
    with pytest.raises(Unavailable):  # nor can the cluster be looked at: the controller waits
        runner.poll()


def test_an_indexed_job_goes_once_none_of_its_shards_is_at_its_try(api, runner):
    """A shard's pod OOMKilled whole is a failed try, retried as a Job of its own; the Indexed Job is deleted once
    its other shards' tries have ended too, and with it goes what Kubernetes would make in that pod's place."""
    for shard in range(2):
        runner.launch(job_info(2, shard + 1), shard, 1, ADDRESS, "token")
    indexed = f"pfs-{JOB}"
    api.add_pod(worker_pod(indexed, 0, 1, ended(137, None, "OOMKilled", "Failed"), "pfs-j-0-aaaaa"), NS)
    api.add_pod(worker_pod(indexed, 1, 1, RUNNING, "pfs-j-1-bbbbb"), NS)
    [e] = runner.poll()
    assert (e.shard, e.attempt, e.reason) == (0, 1, "was killed for using more memory than its limit (OOMKilled)")
    assert not deleted(api)  # shard 1 still runs in it
    runner.launch(job_info(2, 2), 0, 2, ADDRESS, "token")
    api.add_pod(worker_pod(indexed, 1, 1, ended(0, "0\n"), "pfs-j-1-bbbbb"), NS)
    assert runner.poll() == [Ended(JOB, 1, 1, 0, "")]
    assert deleted(api) == [(indexed, {"propagationPolicy": "Foreground"})]
    assert set(api.jobs) == {(NS, f"pfs-{JOB}-0-2")} and runner.jobs() == {JOB}  # the retry runs on
    assert runner.running(JOB) == {0: 2}
    assert runner.poll() == [] and len(deleted(api)) == 1  # deleted once


def test_a_one_shard_job_whose_pod_died_goes_at_once(api, runner):
    runner.launch(job_info(1, 1), 0, 1, ADDRESS, "token")
    api.add_pod(worker_pod(f"pfs-{JOB}", 0, 1, ended(137, None, "OOMKilled", "Failed"), "pfs-j-0-aaaaa"), NS)
    [e] = runner.poll()
    assert (e.shard, e.attempt, e.code) == (0, 1, -1)
    assert deleted(api) == [(f"pfs-{JOB}", {"propagationPolicy": "Foreground"})] and api.jobs == {}


@pytest.mark.parametrize("drops, said", [
    ((), "keeps backoffLimitPerIndex"),
    (("backoffLimitPerIndex",), "drops backoffLimitPerIndex (Kubernetes before 1.29, or its feature gate off)")])
def test_the_runner_says_whether_the_cluster_keeps_backoff_limit_per_index(tmp_path, monkeypatch, caplog, drops,
                                                                           said):
    """FakeKubernetesAPI(drops=...) stands for an API server that does not serve the field (a fake, named so)."""
    fake = fake_api(tmp_path, monkeypatch, drops)
    r = KubernetesRunner(ADDRESS, Workers(NS, "server-a"))
    try:
        with caplog.at_level("INFO", logger=runner_module.__name__):
            r.launch(job_info(1, 1), 0, 1, ADDRESS, None)
            r.launch(job_info(1, 1), 0, 2, ADDRESS, None)  # a retry's Job has no such field: nothing more said
    finally:
        r.close()
        fake.close()
    told = [m for m in caplog.messages if "backoffLimitPerIndex" in m]
    assert len(told) == 1 and said in told[0], caplog.messages
    assert ("backoffLimitPerIndex" in fake.jobs[NS, f"pfs-{JOB}"]["spec"]) == (not drops)


def deleted(api: FakeKubernetesAPI) -> list[tuple[str, dict]]:
    return [(path.rsplit("/", 1)[-1], q) for method, path, q in api.requests if method == "DELETE"]

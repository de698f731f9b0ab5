"""The Kubernetes runner's decisions (server/pps/kubernetes/statuses.py): how a try ended, from its Job's and pods'
statuses as the API returns them. Each status is built with the Kubernetes client's own models (V1Pod, V1Job) and
written as the API's JSON by the client, so its field names and shapes are the API's: data, not a cluster."""

from datetime import datetime, timedelta, timezone

import pytest
from kubernetes import client as k8s

from kube_models import as_api
from pfs.core import kube
from server.pps.kubernetes.statuses import Outcome, pod_outcome, shard_of, try_outcome

T0 = datetime(2024, 5, 1, 12, 0, tzinfo=timezone.utc)
JOB = "0123456789abcdef0123456789abcdef"


def pod(phase: str, state: k8s.V1ContainerState | None = None, *, shard: int = 0, attempt: int = 1,
        retry: bool = False, reason: str | None = None, message: str | None = None, age: int = 0,
        name: str = "pfs-job-0-abcde") -> dict:
    """A worker pod as the API returns it: of an Indexed Job (its index in Kubernetes' annotation) or a retry (its
    shard in a label)."""
    labels = {kube.JOB_LABEL: JOB, kube.ATTEMPT_LABEL: str(attempt), **({kube.SHARD_LABEL: str(shard)} if retry else {})}
    annotations = {} if retry else {kube.INDEX_ANNOTATION: str(shard)}
    statuses = None if state is None else [k8s.V1ContainerStatus(
        name="worker", image="pfs/job-shim:latest", image_id="", ready=False, restart_count=0, state=state)]
    model = k8s.V1Pod(
        api_version="v1", kind="Pod",
        metadata=k8s.V1ObjectMeta(name=name, uid=f"uid-{name}", labels=labels, annotations=annotations or None,
                                  creation_timestamp=T0 + timedelta(seconds=age)),
        status=k8s.V1PodStatus(phase=phase, reason=reason, message=message, container_statuses=statuses))
    return as_api(model)


def terminated(exit_code: int, reason: str, message: str | None = None) -> k8s.V1ContainerState:
    return k8s.V1ContainerState(terminated=k8s.V1ContainerStateTerminated(
        exit_code=exit_code, reason=reason, message=message, started_at=T0, finished_at=T0 + timedelta(seconds=5)))


def waiting(reason: str, message: str | None = None) -> k8s.V1ContainerState:
    return k8s.V1ContainerState(waiting=k8s.V1ContainerStateWaiting(reason=reason, message=message))


RUNNING = k8s.V1ContainerState(running=k8s.V1ContainerStateRunning(started_at=T0))


def job(*conditions: tuple[str, str, str]) -> dict:
    return as_api(k8s.V1Job(
        api_version="batch/v1", kind="Job", metadata=k8s.V1ObjectMeta(name=f"pfs-{JOB}"),
        status=k8s.V1JobStatus(conditions=[k8s.V1JobCondition(type=t, status="True", reason=r, message=m)
                                           for t, r, m in conditions] or None)))


def test_the_statuses_are_the_apis():
    p = pod("Succeeded", terminated(0, "Completed", "0\n"))
    assert p["status"]["containerStatuses"][0]["state"]["terminated"] == {
        "exitCode": 0, "reason": "Completed", "message": "0\n", "startedAt": "2024-05-01T12:00:00+00:00",
        "finishedAt": "2024-05-01T12:00:05+00:00"}
    assert p["metadata"]["annotations"] == {"batch.kubernetes.io/job-completion-index": "0"}


@pytest.mark.parametrize("p, outcome", [
    # job-shim ended and left its status: 0 succeeded, 1 its command failed (both reported by job-shim)
    (pod("Succeeded", terminated(0, "Completed", "0\n")), Outcome(0)),
    (pod("Succeeded", terminated(0, "Completed", "1\n")), Outcome(1)),
    # 2: job-shim could not do its part, and may not have reached the server: its log may say why
    (pod("Succeeded", terminated(0, "Completed", "2\n")), Outcome(2, "", True)),
    # the user's command killed for memory: job-shim reported it (status 1); the container says OOMKilled
    (pod("Succeeded", terminated(0, "OOMKilled", "1\n")),
     Outcome(1, "was killed for using more memory than its limit (OOMKilled)")),
    # the whole container killed for memory, job-shim with it: no status left
    (pod("Failed", terminated(137, "OOMKilled")),
     Outcome(-1, "was killed for using more memory than its limit (OOMKilled)", True)),
    # job-pod never ran: an image without it
    (pod("Failed", terminated(127, "StartError", 'exec: "job-pod": executable file not found in $PATH')),
     Outcome(-1, 'ended with exit code 127 (StartError: exec: "job-pod": executable file not found in $PATH)',
             True)),
    (pod("Failed", terminated(137, "Error")), Outcome(-1, "ended with exit code 137 (Error)", True)),
    # the node's doing
    (pod("Failed", reason="Evicted", message="The node was low on resource: memory. Container worker was using "
                                             "2Gi, which exceeds its request of 0. "),
     Outcome(-1, "was evicted (Evicted: The node was low on resource: memory. Container worker was using 2Gi, "
                 "which exceeds its request of 0.)")),
    (pod("Failed", terminated(143, "Error"), reason="Shutdown", message="Pod was terminated in response to "
                                                                        "imminent node shutdown."),
     Outcome(-1, "was stopped by its node (Shutdown: Pod was terminated in response to imminent node shutdown.)")),
    # never started
    (pod("Pending", waiting("ErrImagePull", 'rpc error: code = NotFound desc = failed to pull and unpack image '
                                            '"docker.io/library/nope:1": not found')),
     Outcome(-1, 'could not start (ErrImagePull: rpc error: code = NotFound desc = failed to pull and unpack image '
                 '"docker.io/library/nope:1": not found)')),
    (pod("Pending", waiting("ImagePullBackOff", 'Back-off pulling image "nope:1"')),
     Outcome(-1, 'could not start (ImagePullBackOff: Back-off pulling image "nope:1")')),
    (pod("Pending", waiting("ErrImageNeverPull", 'Container image "nope:1" is not present with pull policy of '
                                                 'Never')),
     Outcome(-1, 'could not start (ErrImageNeverPull: Container image "nope:1" is not present with pull policy of '
                 'Never)')),
    # still on its way: not an outcome
    (pod("Pending"), None),  # not scheduled yet (no room on the nodes): Kubernetes schedules it when it can
    (pod("Pending", waiting("ContainerCreating")), None),
    (pod("Running", RUNNING), None),
    (pod("Unknown"), None),  # its node stopped answering
])
def test_how_a_pod_ended(p, outcome):
    assert pod_outcome(p) == outcome


def test_a_status_message_stays_one_short_line():
    p = pod("Pending", waiting("ErrImagePull", "line one\nline two " + "x" * 1000))
    reason = pod_outcome(p).reason
    assert "\n" not in reason and len(reason) < 400 and reason.startswith("could not start (ErrImagePull: line one "
                                                                          "line two xxx")


def test_a_try_ends_with_its_first_pod_to_end():
    """An Indexed Job's pod that Kubernetes counted failed (evicted) is replaced at the same try: the eviction
    decides, not the replacement (which the server refuses once the shard moved on)."""
    evicted = pod("Failed", reason="Evicted", message="low on memory", name="pfs-j-0-aaaaa")
    replacement = pod("Running", RUNNING, age=30, name="pfs-j-0-bbbbb")
    outcome = try_outcome(job(), [replacement, evicted], had_pod=True)
    assert (outcome.reason, outcome.pod) == ("was evicted (Evicted: low on memory)", "pfs-j-0-aaaaa")
    finished = pod("Succeeded", terminated(0, "Completed", "0"), age=60, name="pfs-j-0-ccccc")
    assert try_outcome(job(), [finished, replacement], had_pod=True) == Outcome(0, pod="pfs-j-0-ccccc")


@pytest.mark.parametrize("k8s_job, pods, had_pod, reason", [
    (None, [], False, "lost its Kubernetes Job (deleted by someone else, or never made)"),
    (None, [], True, "lost its Kubernetes Job (deleted by someone else, or never made)"),
    (job(("Failed", "BackoffLimitExceeded", "Job has reached the specified backoff limit")), [], True,
     "had its Kubernetes Job fail (BackoffLimitExceeded: Job has reached the specified backoff limit)"),
    (job(), [], True, "lost its pod (deleted before it ended)"),  # a node drained, say
    (job(("Complete", None, None)), [], False, "lost its pod (deleted before it ended)"),
    (job(), [], False, None),  # made a moment ago: its pod is on its way
    (job(), [pod("Pending")], False, None),
    (job(("Failed", "BackoffLimitExceeded", "")), [pod("Running", RUNNING)], True, None),  # its pod is stopping
])
def test_a_try_without_an_ended_pod(k8s_job, pods, had_pod, reason):
    outcome = try_outcome(k8s_job, pods, had_pod)
    assert (outcome and outcome.reason) == reason
    assert outcome is None or (outcome.code, outcome.logged) == (-1, False)


def test_a_pods_shard_is_its_completion_index_or_its_label():
    assert shard_of(pod("Running", RUNNING, shard=7)) == 7  # an Indexed Job's pod: Kubernetes' annotation
    assert shard_of(pod("Running", RUNNING, shard=3, attempt=2, retry=True)) == 3  # a retry's: pfs.shard
    stray = pod("Running", RUNNING)
    del stray["metadata"]["annotations"]
    assert shard_of(stray) is None

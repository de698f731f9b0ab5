"""The Kubernetes Jobs that run a pfs job's workers, as the API takes them: plain JSON-able dicts, so that this
module needs no client, and what it makes can be checked field by field and loaded by the client's own models.

A job's first try at its shards is one Indexed Job: completions = parallelism = the job's shards (at most its
parallelism: an input cut into fewer parts makes fewer shards), each pod's JOB_COMPLETION_INDEX its shard (job-shim
reads it), every pod at try 1. A later try at one shard (the controller retries a failed shard) is a Job of one pod,
its shard and try in PFS_SHARD and PFS_ATTEMPT.

Kubernetes never retries a try itself, and no shard's failure may fail the Job, which would stop every other
shard's pod: the pod's entrypoint (job-pod) exits 0 whatever job-shim did and leaves job-shim's exit status in the
container's termination message, and the controller decides what to try again, as with every runner. So the
Indexed Job's backoffLimit is as high as the API allows, a retry's 0.

A pod that Kubernetes itself counts failed (OOMKilled whole, evicted, deleted) is a failed try to the runner, which
starts the next as a Job of its own; the Indexed Job must not make another pod for that index. Its
backoffLimitPerIndex of 0 says so: the index fails, the other shards run on. Servers before 1.29 (and 1.29 without
its alpha feature gate) drop that field, as every API server drops a field it does not serve; there Kubernetes
replaces the pod, with a back-off from 10 s doubling to 6 min, at the same try. The server refuses that pod's claim
once the shard has moved on (job-pod then exits 0 and the index is done), so what is left is a pod that dies before
it asks (killed for memory as it starts): the runner deletes the Indexed Job as soon as none of its shards is at
its try any more (runner.py), which ends such a loop then. podFailurePolicy (1.26) adds nothing here: its
actions Ignore and Count replace the pod too, FailJob stops every shard, and FailIndex needs backoffLimitPerIndex.
"""

from dataclasses import dataclass
from typing import Any

from pfs.core import kube
from pfs.core.kube import FUSE_MODES
from pfs.core.model import JobInfo, Resources
from server.pps.runners import STOP_TIMEOUT

CONTAINER = "worker"
NEVER_FAIL = 2**31 - 1  # the Indexed Job's backoffLimit: the most the API takes
FINISHED_TTL = 86400  # seconds a finished Job stays (the runner deletes it once its job has ended, if it still can)
APPARMOR = f"container.apparmor.security.beta.kubernetes.io/{CONTAINER}"  # FUSE's mount(2) is not AppArmor's default
QUANTITIES = {"cpu": "cpu", "memory": "memory", "disk": "ephemeral-storage"}  # Resources field -> Kubernetes name


@dataclass(frozen=True)
class Workers:
    """How one server's workers run on its cluster."""

    namespace: str
    server: str  # the server's id: its Jobs carry it, so that it finds them again when it restarts
    fuse: str = "privileged"  # one of kube.FUSE_MODES, or a device plugin's resource name
    host_network: bool = False  # on the node's network (a cluster without a pod network)
    pull_policy: str = "IfNotPresent"  # images imported into the nodes need IfNotPresent or Never
    tls_ca: str = ""  # the CA certificate (PEM) workers trust the servers by; '' for servers without TLS


def job_name(job_id: str, shard: int | None, attempt: int) -> str:
    """The Kubernetes Job of the first try at every shard of JOB_ID (SHARD None), or of try ATTEMPT at SHARD."""
    return f"pfs-{job_id}" if shard is None else f"pfs-{job_id}-{shard}-{attempt}"


def worker_job(job: JobInfo, shard: int | None, attempt: int, address: str, token: str | None,
               workers: Workers) -> dict[str, Any]:
    """The Job running try ATTEMPT at SHARD of JOB, or (SHARD None) try 1 at all its shards, whose workers report to
    ADDRESS (the servers' Service) with TOKEN (the job's)."""
    indexed = shard is None
    shards = len(job.shards) if indexed else 1
    labels, annotations = _labels(job, shard, attempt, workers)
    pod_annotations = {**annotations, **({APPARMOR: "unconfined"} if workers.fuse != "privileged" else {})}
    return {
        "apiVersion": "batch/v1",
        "kind": "Job",
        "metadata": {"name": job_name(job.id, shard, attempt), "namespace": workers.namespace, "labels": labels,
                     **({"annotations": annotations} if annotations else {})},
        "spec": {
            "completionMode": "Indexed" if indexed else "NonIndexed",
            "completions": shards,
            "parallelism": shards,
            "backoffLimit": NEVER_FAIL if indexed else 0,
            **({"backoffLimitPerIndex": 0} if indexed else {}),
            "ttlSecondsAfterFinished": FINISHED_TTL,
            "template": {
                "metadata": {"labels": labels, **({"annotations": pod_annotations} if pod_annotations else {})},
                "spec": _pod(job, shard, attempt, address, token, workers),
            },
        },
    }


def _labels(job: JobInfo, shard: int | None, attempt: int, workers: Workers) -> tuple[dict, dict]:
    """The labels of a worker's Job and pods, and the annotations that hold what a label could not."""
    named = {kube.SERVER_LABEL: workers.server, kube.PIPELINE_LABEL: job.pipeline, kube.JOB_LABEL: job.id}
    labels = {kube.PART_OF: "pfs", kube.COMPONENT: kube.WORKER,
              **{k: kube.label_value(v) for k, v in named.items()}, kube.ATTEMPT_LABEL: str(attempt)}
    if shard is not None:  # an Indexed Job's pods share a template: theirs is INDEX_ANNOTATION
        labels[kube.SHARD_LABEL] = str(shard)
    annotations = {k: v for k, v in named.items() if labels[k] != v}
    return labels, annotations


def _pod(job: JobInfo, shard: int | None, attempt: int, address: str, token: str | None,
         workers: Workers) -> dict[str, Any]:
    fuse = ({"privileged": True} if workers.fuse == "privileged"
            else {"capabilities": {"add": ["SYS_ADMIN"]}})  # what mount(2) needs
    container = {
        "name": CONTAINER,
        "image": job.transform.image,
        "imagePullPolicy": workers.pull_policy,
        "command": [kube.WORKER_ENTRYPOINT],
        "env": _env(job, shard, attempt, address, token, workers),
        "securityContext": fuse,
        "terminationMessagePath": kube.TERMINATION_LOG,
        "terminationMessagePolicy": "File",
    }
    device = {workers.fuse: "1"} if workers.fuse not in FUSE_MODES else {}
    resources = {k: v for k, v in (("requests", _resources(job.transform.resource_requests)),
                                   ("limits", {**_limits(job.transform.resource_requests,
                                                         job.transform.resource_limits), **device})) if v}
    if resources:
        container["resources"] = resources
    pod: dict[str, Any] = {
        "restartPolicy": "Never",
        "automountServiceAccountToken": False,  # a worker has no business with the cluster's API
        "enableServiceLinks": False,
        "terminationGracePeriodSeconds": int(STOP_TIMEOUT),
        "containers": [container],
    }
    if workers.fuse == "hostpath":
        container["volumeMounts"] = [{"name": "fuse", "mountPath": "/dev/fuse"}]
        pod["volumes"] = [{"name": "fuse", "hostPath": {"path": "/dev/fuse", "type": "CharDevice"}}]
    if workers.host_network:
        pod |= {"hostNetwork": True, "dnsPolicy": "ClusterFirstWithHostNet"}
    return pod


def _env(job: JobInfo, shard: int | None, attempt: int, address: str, token: str | None,
         workers: Workers) -> list[dict[str, str]]:
    """The manifest's env, then what job-shim needs: the servers, the job, the try, the shard of a retry (an
    Indexed Job's pod has JOB_COMPLETION_INDEX), the job's token, the servers' CA. The names job-shim reads are the
    runner's alone here; the command still gets the manifest's, from job-shim, as on every runner."""
    own = {"PFS_ADDRESS": address, "PFS_JOB": job.id, "PFS_ATTEMPT": str(attempt)}
    if shard is not None:
        own["PFS_SHARD"] = str(shard)
    if token is not None:
        own["PFS_TOKEN"] = token
    if workers.tls_ca:
        own[kube.CA_PEM_ENV] = workers.tls_ca
    env = {**{k: v for k, v in job.transform.env if not _shims(k)}, **own}
    return [{"name": k, "value": v} for k, v in env.items()]


def _shims(name: str) -> bool:
    """Whether job-shim reads variable NAME."""
    return name.startswith("PFS_") or name == "JOB_COMPLETION_INDEX"


def _resources(r: Resources) -> dict[str, str]:
    return {name: getattr(r, field) for field, name in QUANTITIES.items() if getattr(r, field)}


def _limits(requests: Resources, limits: Resources) -> dict[str, str]:
    """LIMITS, with the GPUs either gives: Kubernetes takes devices as limits only (their request is the limit)."""
    gpus = limits if limits.gpu else requests
    return {**_resources(limits), **({gpus.gpu_type: str(gpus.gpu)} if gpus.gpu else {})}

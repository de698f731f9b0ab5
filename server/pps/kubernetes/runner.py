"""The Kubernetes runner (`pfs server --runner kubernetes`): a job's workers as Kubernetes Jobs in one namespace.

The controller launches one try per shard, as with every runner. The first try at a job's shards is one Indexed
Job for all of them, made when the last of them is launched (so that no pod asks for its shard before the
controller has recorded its try); each later try at a shard is a Job of its own (specs.py). Each poll lists this
server's Jobs and pods by label, and a try has ended when statuses.py says so: the controller hears of it as of a
worker process that ended, with the reason its pod gives and, for a pod that died before job-shim reported, its own
log's last lines. Workers outlive their server: a restarted server (the same id, its data dir kept) finds its Jobs
by label and carries on with them. Cancelling a job deletes its Jobs, and Kubernetes their pods; an Indexed Job
goes as soon as none of its shards is at its try any more, so that a cluster that replaces a failed index's pod
(before Kubernetes 1.29: specs.py) stops doing so once that try has been counted.

What it needs of the cluster is exactly what `pfs deploy kubernetes` grants its service account: Jobs (create,
get, list, watch, delete) and pods and pods/log (get, list, watch), in its namespace.
"""

import json
import logging
import threading
import time
from collections import defaultdict
from dataclasses import dataclass, field
from typing import Any

import urllib3
from kubernetes import client
from kubernetes.client.exceptions import ApiException

from pfs.core import kube
from pfs.core.errors import FailedPrecondition, PfsError, Unavailable
from pfs.core.model import JobInfo, ShardState
from server.pps.kubernetes import specs, statuses
from server.pps.kubernetes.specs import Workers
from server.pps.runners import ERROR_TAIL, Ended, Runner, require_image

log = logging.getLogger(__name__)

POLL_EVERY = 2.0  # seconds between two looks at the cluster, however often the controller turns
REQUEST_TIMEOUT = 15  # seconds an API call may take
LOG_LINES = 50  # of a pod that died before job-shim reported


@dataclass
class _Try:
    """A try this runner launched or found, not yet seen to end."""

    attempt: int
    pods: set[str] = field(default_factory=set)  # the uids of its pods seen so far


class KubernetesRunner(Runner):
    name = "kubernetes"

    def __init__(self, address: str, workers: Workers) -> None:
        super().__init__(address)  # where workers reach the servers: their Service
        self.workers = workers
        self._api = kube.api_client()
        self._batch = client.BatchV1Api(self._api)
        self._core = client.CoreV1Api(self._api)
        self._selector = f"{kube.COMPONENT}={kube.WORKER},{kube.SERVER_LABEL}={kube.label_value(workers.server)}"
        self._lock = threading.Lock()
        self._tries: dict[tuple[str, int], _Try] = {}  # (job, shard) -> its try
        self._jobs: dict[str, dict[str, Any]] = {}  # this server's Jobs by name: as of the last poll, or made since
        self._synced = False  # whether the tries of the Jobs found at the first poll are known
        self._next_poll = 0.0
        self._failure: PfsError | None = None  # why the last look at the cluster failed
        self._per_index: bool | None = None  # whether the cluster keeps backoffLimitPerIndex (None: not seen yet)
        self._closed = False

    # -- what the controller and the servicers ask

    def check_tools(self) -> None:
        self._call(f"cannot list Jobs in namespace {self.workers.namespace}", self._batch.list_namespaced_job,
                   self.workers.namespace, limit=1)

    def check(self, image: str) -> None:
        super().check(image)
        require_image(image, self.name)

    def capacity(self) -> int:
        """1: counting the nodes takes a ClusterRole, and the runner's Role is its namespace's only; a COEFFICIENT
        parallelism is then the coefficient itself, rounded."""
        return 1

    def launch(self, job: JobInfo, shard: int, attempt: int, address: str, token: str | None) -> None:
        with self._lock:
            if self._closed:
                raise Unavailable("the server is stopping")
            self._tries[(job.id, shard)] = _Try(attempt)
        try:
            if attempt > 1:
                self._create(specs.worker_job(job, shard, attempt, address, token, self.workers))
            elif (not any(s.state == ShardState.PENDING for s in job.shards)
                  and specs.job_name(job.id, None, 1) not in self._jobs):
                self._create(specs.worker_job(job, None, 1, address, token, self.workers))
        except BaseException:
            with self._lock:
                self._tries.pop((job.id, shard), None)
            raise

    def running(self, job_id: str) -> dict[int, int]:
        with self._lock:
            return {shard: t.attempt for (job, shard), t in self._tries.items() if job == job_id}

    def jobs(self) -> set[str]:
        """The jobs with Jobs or tries here: a job that ended while its Jobs were left is cancelled (again)."""
        with self._lock:
            return {j["metadata"]["labels"][kube.JOB_LABEL] for j in self._jobs.values()} | {
                job for job, _ in self._tries}

    def poll(self) -> list[Ended]:
        """The tries seen to end since the last poll. The cluster is looked at every POLL_EVERY seconds at most; a
        look that failed fails every poll until the next one (the controller waits: it cannot know its workers)."""
        now = time.monotonic()
        if self._closed:
            return []
        if now < self._next_poll:
            if self._failure is not None:
                raise self._failure
            return []
        self._next_poll, self._failure = now + POLL_EVERY, None
        try:
            listed_jobs = self._list("list_namespaced_job", self._batch)
            listed_pods = self._list("list_namespaced_pod", self._core)
        except PfsError as err:
            self._failure = err
            raise
        jobs = {j["metadata"]["name"]: j for j in listed_jobs if not j["metadata"].get("deletionTimestamp")}
        pods: dict[tuple[str, int, int], list[dict]] = defaultdict(list)
        for pod in listed_pods:
            labels, shard = pod["metadata"].get("labels") or {}, statuses.shard_of(pod)
            if shard is not None and labels.get(kube.ATTEMPT_LABEL, "").isdigit():
                pods[labels.get(kube.JOB_LABEL, ""), shard, int(labels[kube.ATTEMPT_LABEL])].append(pod)
        ended = []
        with self._lock:
            self._jobs = jobs
            if not self._synced:
                self._found(jobs)
            for (job_id, shard), t in list(self._tries.items()):
                its = pods.get((job_id, shard, t.attempt), [])
                name = specs.job_name(job_id, None if t.attempt == 1 else shard, t.attempt)
                outcome = statuses.try_outcome(jobs.get(name), its, bool(t.pods))
                t.pods.update(p["metadata"]["uid"] for p in its)
                if outcome is not None:
                    del self._tries[(job_id, shard)]
                    ended.append((job_id, shard, t.attempt, outcome))
            first = {job_id for (job_id, _), t in self._tries.items() if t.attempt == 1}
            spent = [n for n, j in jobs.items() if kube.SHARD_LABEL not in j["metadata"]["labels"]
                     and j["metadata"]["labels"][kube.JOB_LABEL] not in first]
        reported = [Ended(job_id, shard, attempt, o.code, self._log_tail(o.pod) if o.logged else "", o.reason)
                    for job_id, shard, attempt, o in ended]
        for name in spent:  # after the log tails: its pods go with it
            self._delete(name)
        return reported

    def cancel(self, job_id: str) -> None:
        """Deletes JOB_ID's Jobs, their pods first (Foreground: the Job goes once its pods have); one that cannot be
        deleted now stays in jobs(), which the controller cancels again at its next turn."""
        with self._lock:
            self._tries = {k: t for k, t in self._tries.items() if k[0] != job_id}
            names = [n for n, j in self._jobs.items() if j["metadata"]["labels"][kube.JOB_LABEL] == job_id]
        for name in names:
            self._delete(name)

    def close(self) -> None:
        """No worker starts after it. The workers carry on: this server, restarted, finds them again (or, if it
        does not come back, another reports their tries lost and the server refuses what they report)."""
        with self._lock:
            self._closed = True
        self._api.close()

    # -- the cluster

    def _found(self, jobs: dict[str, dict]) -> None:
        """The tries of the Jobs this server left running before it restarted: each shard's latest."""
        for j in jobs.values():
            labels = j["metadata"]["labels"]
            attempt = int(labels[kube.ATTEMPT_LABEL])
            shards = [int(labels[kube.SHARD_LABEL])] if kube.SHARD_LABEL in labels else range(j["spec"]["completions"])
            for shard in shards:
                known = self._tries.get((labels[kube.JOB_LABEL], shard))
                if known is None or known.attempt < attempt:
                    self._tries[(labels[kube.JOB_LABEL], shard)] = _Try(attempt)
        if jobs:
            log.info("kubernetes runner: carrying on with %d Jobs of this server in namespace %s", len(jobs),
                     self.workers.namespace)
        self._synced = True

    def _create(self, manifest: dict[str, Any]) -> None:
        name = manifest["metadata"]["name"]
        # 409: made already, by this server before it restarted
        reply = self._call(f"cannot create Job {name}", self._batch.create_namespaced_job, self.workers.namespace,
                           manifest, allow=(409,), _preload_content=False)
        with self._lock:
            self._jobs[name] = manifest
        if reply is not None and "backoffLimitPerIndex" in manifest["spec"] and self._per_index is None:
            self._per_index = "backoffLimitPerIndex" in json.loads(reply.data)["spec"]
            log.info("kubernetes runner: the cluster %s", "keeps backoffLimitPerIndex: a shard's pod that fails is "
                     "not replaced" if self._per_index else "drops backoffLimitPerIndex (Kubernetes before 1.29, or "
                     "its feature gate off): it replaces a shard's pod that fails until its Indexed Job is deleted")

    def _delete(self, name: str) -> None:
        """Deletes Job NAME, its pods first (Foreground: the Job goes once its pods have). One that cannot be deleted
        now is still listed at the next poll, and deleted then."""
        try:  # 404: gone already
            self._call(f"cannot delete Job {name}", self._batch.delete_namespaced_job, name, self.workers.namespace,
                       propagation_policy="Foreground", allow=(404,))
        except PfsError as err:
            log.warning("%s", err)
            return
        with self._lock:
            self._jobs.pop(name, None)

    def _list(self, method: str, api: Any) -> list[dict[str, Any]]:
        """This server's worker Jobs or pods, as the API returns them (JSON: no model objects to build)."""
        reply = self._call(f"cannot list {method.split('_')[-1]}s in namespace {self.workers.namespace}",
                           getattr(api, method), self.workers.namespace, label_selector=self._selector,
                           _preload_content=False)
        return json.loads(reply.data)["items"]

    def _log_tail(self, pod: str) -> str:
        """The last lines POD printed ('' if they cannot be had: the run goes on without them)."""
        if not pod:
            return ""
        try:
            text = self._call(f"cannot read the log of pod {pod}", self._core.read_namespaced_pod_log, pod,
                              self.workers.namespace, container=specs.CONTAINER, tail_lines=LOG_LINES)
        except PfsError as err:
            log.warning("%s", err)
            return ""
        return text[-ERROR_TAIL:].strip()

    def _call(self, what: str, method: Any, *args: Any, allow: tuple[int, ...] = (), **kwargs: Any) -> Any:
        """METHOD(*ARGS, **KWARGS) of the API (None if it answered with a status in ALLOW); a domain error saying
        WHAT failed and why, in one line, if it failed."""
        try:
            return method(*args, _request_timeout=REQUEST_TIMEOUT, **kwargs)
        except ApiException as err:
            if err.status in allow:
                return None
            said = _message(err)
            kind = Unavailable if err.status is None or err.status >= 500 or err.status == 429 else FailedPrecondition
            raise kind(f"kubernetes runner: {what}: {err.status} {err.reason}{f': {said}' if said else ''}") from None
        except (urllib3.exceptions.HTTPError, OSError) as err:
            cause = err.reason if isinstance(err, urllib3.exceptions.MaxRetryError) and err.reason else err
            said = str(cause).rsplit("): ", 1)[-1]  # not urllib3's repr of its connection first
            raise Unavailable(f"kubernetes runner: {what}: cannot reach the Kubernetes API at "
                              f"{self._api.configuration.host}: {said}".splitlines()[0]) from None


def _message(err: ApiException) -> str:
    """The message of the Status an API error carries, if it does."""
    try:
        return " ".join(str(json.loads(err.body).get("message", "")).split())
    except (TypeError, ValueError, AttributeError):
        return ""

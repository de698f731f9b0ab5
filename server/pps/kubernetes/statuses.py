"""How a worker's try ended, read from its Job's and pods' statuses as the API returns them (JSON objects): the
runner's decisions, kept apart from the calls that fetch them so that each can be checked on statuses of every kind.

A try has ended when one of its pods has: job-shim's exit status is the container's termination message (job-pod
leaves it there), or the pod died before job-shim could leave one (killed for lack of memory, evicted, or it never
started: its image could not be pulled). A try whose Job is gone, or failed with no pod left, has ended too. A pod
still pending for want of room on the nodes has not: Kubernetes schedules it when it can.
"""

import dataclasses
from dataclasses import dataclass
from typing import Any

from pfs.core import kube
from server.pps.kubernetes.specs import CONTAINER

# a container waiting for one of these will not start by itself (or only once its image appears); the try fails
NOT_STARTING = ("ErrImagePull", "ImagePullBackOff", "ErrImageNeverPull", "InvalidImageName", "RegistryUnavailable",
                "CreateContainerConfigError", "CreateContainerError", "RunContainerError")
MESSAGE_CHARS = 300  # of a status message, in a try's reason
REPORTED = (0, 1)  # job-shim's exit statuses after it reported (success, the command failed): its log adds nothing


@dataclass(frozen=True)
class Outcome:
    """How a try ended: job-shim's exit status (-1 where it left none); REASON, how its pod ended where that says
    more than the status ('' : job-shim exited by itself); LOGGED, whether the pod's own log may tell why."""

    code: int
    reason: str = ""
    logged: bool = False
    pod: str = ""  # the pod that ended ('' : none did)


def try_outcome(job: dict[str, Any] | None, pods: list[dict[str, Any]], had_pod: bool) -> Outcome | None:
    """How the try that JOB's PODS (those of one shard and try, any order) run ended, or None while it runs or
    waits. JOB None: its Job is gone. HAD_POD: a pod of this try was seen before; if none is left, it was deleted
    (its node drained, say), and the pod Kubernetes makes in its place must not carry on with what it left."""
    for pod in sorted(pods, key=lambda p: p["metadata"].get("creationTimestamp") or ""):
        outcome = pod_outcome(pod)
        if outcome is not None:  # the first pod to end decides; a replacement runs a try the server refuses
            return dataclasses.replace(outcome, pod=pod["metadata"]["name"])
    if job is None:
        return Outcome(-1, "lost its Kubernetes Job (deleted by someone else, or never made)")
    if pods:
        return None
    failed = _condition(job, "Failed")
    if failed is not None:
        return Outcome(-1, f"had its Kubernetes Job fail ({_said(failed)})")
    if had_pod or _condition(job, "Complete") is not None:
        return Outcome(-1, "lost its pod (deleted before it ended)")
    return None


def pod_outcome(pod: dict[str, Any]) -> Outcome | None:
    """How the worker in POD ended, or None while it runs or waits."""
    status = pod.get("status") or {}
    phase = status.get("phase")
    container = next((c for c in status.get("containerStatuses") or () if c.get("name") == CONTAINER), {})
    state = container.get("state") or {}
    if phase == "Failed" and status.get("reason"):  # the node's doing: Evicted, Shutdown, DeadlineExceeded...
        how = "was evicted" if status["reason"] == "Evicted" else "was stopped by its node"
        return Outcome(_status(state.get("terminated")), f"{how} ({_said(status)})")
    if "terminated" in state and phase in ("Succeeded", "Failed"):
        return _terminated(state["terminated"])
    waiting = state.get("waiting") or {}
    if phase == "Pending" and waiting.get("reason") in NOT_STARTING:
        return Outcome(-1, f"could not start ({_said(waiting)})")
    return None


def _terminated(t: dict[str, Any]) -> Outcome:
    code = _status(t)
    if t.get("reason") == "OOMKilled":
        return Outcome(code, "was killed for using more memory than its limit (OOMKilled)", code not in REPORTED)
    if _shim_status(t) is not None:  # job-shim ended and said how
        return Outcome(code, "", code not in REPORTED)
    # job-pod itself died, or never ran (no job-pod in the image, say)
    return Outcome(code, f"ended with exit code {t.get('exitCode')} ({_said(t)})", True)


def _status(terminated: dict[str, Any] | None) -> int:
    """job-shim's exit status in TERMINATED (a container's state), or -1 where job-pod left none."""
    shim = _shim_status(terminated or {})
    return -1 if shim is None else shim


def _shim_status(terminated: dict[str, Any]) -> int | None:
    """What job-pod wrote to kube.TERMINATION_LOG: job-shim's exit status; None if it wrote nothing."""
    try:
        return int((terminated.get("message") or "").strip())
    except ValueError:
        return None


def _condition(job: dict[str, Any], kind: str) -> dict[str, Any] | None:
    return next((c for c in (job.get("status") or {}).get("conditions") or ()
                 if c.get("type") == kind and c.get("status") == "True"), None)


def _said(status: dict[str, Any]) -> str:
    """A status's reason and message, in one line."""
    message = " ".join((status.get("message") or "").split())
    message = message if len(message) <= MESSAGE_CHARS else message[:MESSAGE_CHARS] + "..."
    return ": ".join(x for x in (status.get("reason") or "", message) if x) or "no reason given"


def shard_of(pod: dict[str, Any]) -> int | None:
    """The shard POD works on: its label (a retry's pod), else its Indexed Job's completion index."""
    meta = pod["metadata"]
    text = (meta.get("labels") or {}).get(kube.SHARD_LABEL) or (meta.get("annotations") or {}).get(
        kube.INDEX_ANNOTATION)
    return int(text) if text and text.isdigit() else None

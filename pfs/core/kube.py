"""What the servers' deployment (`pfs deploy kubernetes`), their Kubernetes runner and the worker pod's entrypoint
agree on: labels, names, the worker's contract with its pod; and the one way both sides reach a cluster's API.

The Kubernetes client (pip install 'pfs[kubernetes]') is imported only by api_client(), so that this module costs
nothing to a server or CLI that never uses a cluster.
"""

import hashlib
import os
import pathlib
import re
from argparse import ArgumentTypeError
from typing import Any

from pfs.core.errors import FailedPrecondition
from pfs.core.specs import RESOURCE_NAME

PORT = 30650  # the servers' port, in their pods and on their Service
SERVICE = "pfs"  # the servers' Service: where clients and workers reach any server
PART_OF = "app.kubernetes.io/part-of"  # every object of a deployment carries PART_OF: pfs
COMPONENT = "app.kubernetes.io/component"
WORKER = "worker"  # the COMPONENT of the Jobs and pods of pipeline workers
# the labels of a worker's Job and pod: whose server made it, for which pipeline, job, shard and try
SERVER_LABEL, PIPELINE_LABEL, JOB_LABEL, SHARD_LABEL, ATTEMPT_LABEL = (
    "pfs.server", "pfs.pipeline", "pfs.job", "pfs.shard", "pfs.attempt")
INDEX_ANNOTATION = "batch.kubernetes.io/job-completion-index"  # an Indexed Job's pod's index (1.21 and later)
WORKER_ENTRYPOINT = "job-pod"  # the worker pod's command (shim/pod.py), which runs job-shim
TERMINATION_LOG = "/dev/termination-log"  # where job-pod leaves job-shim's exit status for the runner to read
CA_PEM_ENV = "PFS_TLS_CA_PEM"  # the servers' CA certificate itself (PEM), which job-pod gives job-shim as a file
EXTRA = "pip install 'pfs[kubernetes]'"
# How a worker gets FUSE: a privileged container (which sees the node's devices); the node's /dev/fuse as a hostPath
# and SYS_ADMIN (where the runtime lets a container open it: not under cgroup v1's device controller, which
# refuses with EPERM); or, given a device plugin's resource name (smarter-devices/fuse, say), a device from it,
# which opens the device cgroup too, and SYS_ADMIN
FUSE_MODES = ("privileged", "hostpath")
PULL_POLICIES = ("IfNotPresent", "Always", "Never")
IN_CLUSTER_NAMESPACE = pathlib.Path("/var/run/secrets/kubernetes.io/serviceaccount/namespace")
_LABEL_VALUE = re.compile(r"([A-Za-z0-9]([-A-Za-z0-9_.]{0,61}[A-Za-z0-9])?)?")
_DNS_LABEL = re.compile(r"[a-z0-9]([-a-z0-9]{0,61}[a-z0-9])?")


def fuse_mode(text: str) -> str:
    """TEXT if it is one of FUSE_MODES or a device plugin's resource name (DOMAIN/NAME); the refusal argparse
    prints otherwise (`pfs server --worker-fuse` and `pfs deploy kubernetes --worker-fuse` take it)."""
    if text not in FUSE_MODES and not RESOURCE_NAME.fullmatch(text):
        raise ArgumentTypeError(f"{text!r} is not {', '.join(FUSE_MODES)} or a device plugin's resource (such as "
                         "smarter-devices/fuse)")
    return text


def label_value(text: str) -> str:
    """TEXT as a label's value: itself where Kubernetes allows it, else a digest of it (the text itself then goes
    in an annotation of the same key)."""
    if _LABEL_VALUE.fullmatch(text):
        return text
    return "h-" + hashlib.blake2b(text.encode(), digest_size=12).hexdigest()


def check_namespace(namespace: str) -> str:
    """NAMESPACE if Kubernetes allows it as a namespace's name; one line saying why not otherwise."""
    if not _DNS_LABEL.fullmatch(namespace):
        raise FailedPrecondition(f"{namespace!r} is not a Kubernetes namespace: use lower-case letters, digits and "
                                 "'-', at most 63")
    return namespace


def api_client() -> Any:
    """A client of the cluster this process runs in (its service account), else of the one $KUBECONFIG (or
    ~/.kube/config) names; FailedPrecondition, one line, if there is neither. ModuleNotFoundError if the
    Kubernetes client is not installed (EXTRA)."""
    from kubernetes import client, config

    configuration = client.Configuration()
    try:
        if os.environ.get("KUBERNETES_SERVICE_HOST"):
            config.load_incluster_config(client_configuration=configuration)
        else:
            config.load_kube_config(kubeconfig(), client_configuration=configuration)
    except (config.ConfigException, OSError) as err:
        raise FailedPrecondition(f"no Kubernetes cluster to use: {str(err).splitlines()[0]} (set KUBECONFIG, or "
                                 "run in a pod)") from None
    configuration.retries = 1  # a call that fails is made again at the next turn of whoever made it
    return client.ApiClient(configuration)


def kubeconfig() -> str:
    """The kubeconfig files to read, as of now (the client reads $KUBECONFIG once, when it is imported)."""
    return os.environ.get("KUBECONFIG") or os.path.expanduser("~/.kube/config")


def default_namespace() -> str:
    """The namespace of this process's pod, else the current context's of $KUBECONFIG, else 'default'."""
    if IN_CLUSTER_NAMESPACE.exists():
        return IN_CLUSTER_NAMESPACE.read_text().strip()
    try:
        from kubernetes import config
        _, context = config.list_kube_config_contexts(kubeconfig())
    except Exception:  # noqa: BLE001 - no kubeconfig, or none readable: the default one
        return "default"
    return (context or {}).get("context", {}).get("namespace") or "default"

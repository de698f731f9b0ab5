"""Applying a deployment's objects to the cluster $KUBECONFIG names (`pfs deploy kubernetes --apply`), and removing
them (`pfs undeploy`), through the Kubernetes client (pfs[kubernetes]).

Objects are applied server-side (as `kubectl apply --server-side` does, field manager pfs-deploy), so a second
deploy changes only what changed; the Secret of credentials is made only if it is missing, so that a deploy
never replaces the root token that clients hold. Undeploy deletes what carries app.kubernetes.io/part-of=pfs,
the workers' Jobs with their pods too, and the StatefulSets' volumes (their data) only when asked.
"""

import json
from collections.abc import Callable
from typing import Any

from pfs.core import kube
from pfs.core.errors import FailedPrecondition, Unavailable
from pfs.deploy.manifests import CREDENTIALS

FIELD_MANAGER = "pfs-deploy"
TIMEOUT = 30  # seconds an API call may take
# what undeploy deletes, in this order (the servers first, so that none makes a Job meanwhile)
KINDS = [("apps/v1", "Deployment"), ("batch/v1", "Job"), ("apps/v1", "StatefulSet"), ("v1", "Service"),
         ("rbac.authorization.k8s.io/v1", "RoleBinding"), ("rbac.authorization.k8s.io/v1", "Role"),
         ("v1", "ServiceAccount"), ("v1", "Secret")]
VOLUMES = ("v1", "PersistentVolumeClaim")


class Cluster:
    """The cluster $KUBECONFIG names (or the one this process runs in)."""

    def __init__(self) -> None:
        from kubernetes.dynamic import DynamicClient

        self._api = kube.api_client()
        self._dynamic = self._call("cannot read the API's resources", DynamicClient, self._api)

    def close(self) -> None:
        self._api.close()

    def apply(self, objects: list[dict[str, Any]], say: Callable[[str], None]) -> None:
        """Applies OBJECTS in order, saying what became of each."""
        for obj in objects:
            kind, name, namespace = obj["kind"], obj["metadata"]["name"], obj["metadata"].get("namespace")
            resource = self._resource(obj["apiVersion"], kind)
            if kind == "Secret" and name == CREDENTIALS:
                made = self._call(f"cannot create Secret {name}", resource.create, body=obj, namespace=namespace,
                                  allow=(409,), _request_timeout=TIMEOUT)
                say(f"secret/{name} {'created' if made is not None else 'kept (it exists: its root token stays)'}")
                continue
            self._call(f"cannot apply {kind} {name}", resource.server_side_apply, body=obj, name=name,
                       namespace=namespace, field_manager=FIELD_MANAGER, force_conflicts=True,
                       _request_timeout=TIMEOUT)
            say(f"{kind.lower()}/{name} applied")

    def remove(self, namespace: str, volumes: bool, say: Callable[[str], None]) -> None:
        """Deletes the deployment's objects in NAMESPACE (and its volumes, if VOLUMES), saying each."""
        for api_version, kind in [*KINDS, *([VOLUMES] if volumes else [])]:
            resource = self._resource(api_version, kind)
            found = self._call(f"cannot list {kind}s in {namespace}", resource.get, namespace=namespace,
                               label_selector=f"{kube.PART_OF}=pfs", _request_timeout=TIMEOUT)
            for item in found.items:
                name = item.metadata.name
                self._call(f"cannot delete {kind} {name}", resource.delete, name=name, namespace=namespace,
                           body={"propagationPolicy": "Foreground"}, allow=(404,), _request_timeout=TIMEOUT)
                say(f"{kind.lower()}/{name} deleted")

    def _resource(self, api_version: str, kind: str) -> Any:
        return self._call(f"the API has no {kind} ({api_version})", self._dynamic.resources.get,
                          api_version=api_version, kind=kind)

    def _call(self, what: str, method: Any, *args: Any, allow: tuple[int, ...] = (), **kwargs: Any) -> Any:
        """METHOD(*ARGS, **KWARGS) (None if it answered with a status in ALLOW); one line saying WHAT failed and
        why, if it failed."""
        import urllib3
        from kubernetes.client.exceptions import ApiException
        from kubernetes.dynamic.exceptions import ResourceNotFoundError

        try:
            return method(*args, **kwargs)
        except ResourceNotFoundError:
            raise FailedPrecondition(what) from None
        except ApiException as err:
            if err.status in allow:
                return None
            raise FailedPrecondition(f"{what}: {err.status} {_message(err.body) or err.reason}") from None
        except (urllib3.exceptions.HTTPError, OSError) as err:
            cause = err.reason if isinstance(err, urllib3.exceptions.MaxRetryError) and err.reason else err
            raise Unavailable(f"{what}: cannot reach the Kubernetes API at {self._api.configuration.host}: "
                              f"{str(cause).rsplit('): ', 1)[-1]}".splitlines()[0]) from None


def _message(body: Any) -> str:
    """The message of the Status an API error carries, if it does."""
    try:
        return " ".join(str(json.loads(body).get("message", "")).split())
    except (TypeError, ValueError, AttributeError):
        return ""

"""`pfs deploy kubernetes` (print the manifests, or apply them with --apply) and `pfs undeploy`."""

import contextlib
import json
import os
import sys
from collections.abc import Iterator
from typing import Any

from pfs.core import kube
from pfs.core.errors import FailedPrecondition
from pfs.deploy import manifests
from pfs.deploy.manifests import CREDENTIALS, Options


def cmd_deploy_kubernetes(args, client):
    options = Options(namespace=args.namespace, replicas=args.replicas, image=args.image, storage=args.storage or "",
                      meta=args.meta or "", s3_endpoint=args.s3_endpoint or "", local=args.local,
                      tls_secret=args.tls_secret or "", host_network=args.host_network,
                      worker_address=args.worker_address or "", registry=args.registry or "",
                      api_address=args.api_address or "",
                      worker_fuse=args.worker_fuse,
                      pull_policy=args.pull_policy, seaweedfs_image=args.seaweedfs_image,
                      postgres_image=args.postgres_image, volume_size=args.volume_size,
                      local_host=args.local_host or "")
    objects = manifests.manifests(options, manifests.credentials(options, os.environ))
    if not args.apply:
        json.dump(manifests.listed(objects), sys.stdout, indent=2)
        print()
        return
    with _cluster() as cluster:
        cluster.apply(objects, say)
    say(f"pfs is deploying in namespace {options.namespace}; its root token: kubectl -n {options.namespace} get "
        f"secret {CREDENTIALS} -o jsonpath='{{.data.root-token}}' | base64 -d")


def cmd_undeploy(args, client):
    with _cluster() as cluster:
        cluster.remove(args.namespace, args.delete_data, say)


def say(line: str) -> None:
    print(line, file=sys.stderr, flush=True)


@contextlib.contextmanager
def _cluster() -> Iterator[Any]:
    """The cluster $KUBECONFIG names, for the time of a with block; one line naming pfs[kubernetes] without it."""
    from pfs.deploy.cluster import Cluster  # imports the Kubernetes client only when it is used

    try:
        cluster = Cluster()
    except ModuleNotFoundError as err:
        if err.name != "kubernetes":
            raise
        raise FailedPrecondition(f"talking to a cluster needs the Kubernetes client: {kube.EXTRA} (or print the "
                                 "manifests, without --apply, for kubectl)") from None
    try:
        yield cluster
    finally:
        cluster.close()

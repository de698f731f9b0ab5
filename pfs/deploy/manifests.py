"""The objects of pfs on a Kubernetes cluster (`pfs deploy kubernetes`), as the API takes them: plain JSON-able dicts,
printed for kubectl or applied by pfs.deploy.cluster, and checked by the Kubernetes client's own models in the tests.

- pfs servers: a Deployment (--replicas) and its Service `pfs` (port 30650: a NodePort, so clients outside reach
  any node's 30650; on the nodes' network the servers hold that port themselves). Each server runs the
  Kubernetes runner, its probes ask the standard gRPC health service (--health-port), its root token and its
  backends' credentials come from the Secret `pfs-credentials`, and its TLS certificate (if any) from a Secret of
  type kubernetes.io/tls that the user made (--tls-secret).
- What the runner needs, exactly: a ServiceAccount with a Role on its namespace (Jobs: create, get, list, watch,
  delete; pods and pods/log: get, list, watch) and their RoleBinding.
- With --local, a self-contained cluster as `pachctl deploy local` made: SeaweedFS (S3) and PostgreSQL as
  StatefulSets with PersistentVolumeClaims, and their Services.
Every object carries app.kubernetes.io/part-of=pfs, by which `pfs undeploy` finds it. The namespace is labelled
to allow privileged pods (Pod Security): a worker needs /dev/fuse and SYS_ADMIN.
"""

import json
import re
import secrets
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from pfs.core import kube
from pfs.core.errors import InvalidArgument

SERVER = "pfs-server"  # the servers' Deployment, ServiceAccount, Role and RoleBinding
CREDENTIALS = "pfs-credentials"  # the Secret of the root token and the backends' credentials
SEAWEEDFS, POSTGRES = "pfs-seaweedfs", "pfs-postgres"
HEALTH_PORT = kube.PORT + 1
S3_PORT, POSTGRES_PORT = 8333, 5432
DATA_DIR = "/var/lib/pfs"  # a server's own data dir: its cache, its id (kept while its pod lives)
SECRETS, TLS = "/etc/pfs/credentials", "/etc/pfs/tls"
BUCKET = "pfs"  # --local: SeaweedFS's bucket of chunks
DEFAULT_IMAGE = "pfs/server:latest"  # `make server-image`: the worker image with pfs[cluster]
DEFAULT_SEAWEEDFS_IMAGE = "chrislusf/seaweedfs:4.48"
DEFAULT_POSTGRES_IMAGE = "postgres:15"
# exactly what the Kubernetes runner calls (server/pps/kubernetes/runner.py), in its namespace only
RUNNER_RULES = [
    {"apiGroups": ["batch"], "resources": ["jobs"], "verbs": ["create", "get", "list", "watch", "delete"]},
    {"apiGroups": [""], "resources": ["pods", "pods/log"], "verbs": ["get", "list", "watch"]},
]
# the servers' environment variables taken from the Secret, and the Secret's key of each
SECRET_ENV = {"AWS_ACCESS_KEY_ID": "aws-access-key-id", "AWS_SECRET_ACCESS_KEY": "aws-secret-access-key",
              "AWS_REGION": "aws-region", "PGPASSWORD": "pgpassword"}
LOCAL_REGION = "us-east-1"  # SeaweedFS takes any
_HOST_PORT = re.compile(r"[^\s:/]+:[0-9]{1,5}")
_HOST = re.compile(r"[^\s:/@]+")
# --local: weed serves S3 with the keys of the Secret; its bucket is made once it answers (a second time, weed
# says it exists); SIGTERM reaches weed (sh, as a container's first process, would ignore it)
SEAWEEDFS_SCRIPT = """
weed mini -dir=/data -ip=127.0.0.1 -ip.bind=0.0.0.0 -s3.port={s3} -master.telemetry=false \\
  -s3.autoCreateBucket=false -s3.allowDeleteBucketNotEmpty=false -admin.ui=false -webdav=false \\
  -s3.port.iceberg=0 -s3.port.lance=0 -s3.config=/etc/seaweedfs/s3.json &
weed=$!
trap 'kill -TERM $weed' TERM INT
until echo 's3.bucket.create -name {bucket}' | weed shell -master=127.0.0.1:9333 -filer=127.0.0.1:8888 2>&1 \\
    | grep -Eq 'created bucket|already exists'; do
  kill -0 $weed || exit 1
  sleep 1
done
wait $weed
wait $weed
""".strip()


@dataclass(frozen=True)
class Options:
    """What `pfs deploy kubernetes` was told."""

    namespace: str = "pfs"
    replicas: int = 1
    image: str = DEFAULT_IMAGE
    storage: str = ""  # s3://BUCKET/PREFIX, or '' with local
    meta: str = ""  # postgresql://..., or '' with local
    s3_endpoint: str = ""  # an S3-compatible server's URL ('' : AWS)
    local: bool = False  # SeaweedFS and PostgreSQL in the cluster
    tls_secret: str = ""  # a kubernetes.io/tls Secret with tls.crt, tls.key and ca.crt; '' : no TLS
    host_network: bool = False  # every pod on its node's network (a cluster without a pod network)
    worker_address: str = ""  # where workers reach the servers ('' : the Service)
    registry: str = ""  # where `create-pipeline --push-images` pushes an image that names none: the nodes' registry
    api_address: str = ""  # HOST:PORT where the servers reach the Kubernetes API ('' : the Service `kubernetes`)
    worker_fuse: str = "privileged"
    pull_policy: str = "IfNotPresent"
    seaweedfs_image: str = DEFAULT_SEAWEEDFS_IMAGE
    postgres_image: str = DEFAULT_POSTGRES_IMAGE
    volume_size: str = "10Gi"  # of each --local StatefulSet's PersistentVolumeClaim
    local_host: str = ""  # where the servers reach the --local backends ('' : their Services' names)

    def check(self) -> "Options":
        """SELF if its backends are given one way; InvalidArgument, one line, otherwise."""
        kube.check_namespace(self.namespace)
        if self.local == bool(self.storage or self.meta):
            raise InvalidArgument("give --storage s3://... and --meta postgresql://... (backends of your own), or "
                                  "--local (SeaweedFS and PostgreSQL in the cluster)")
        if not self.local and not (self.storage.startswith("s3://") and self.meta.startswith(("postgresql://",
                                                                                               "postgres://"))):
            raise InvalidArgument("--storage must be s3://BUCKET[/PREFIX] and --meta postgresql://USER@HOST:PORT/DB")
        if self.replicas < 1:
            raise InvalidArgument(f"--replicas {self.replicas}: give 1 or more servers")
        if self.local_host and not self.local:
            raise InvalidArgument("--local-host goes with --local: it is where the servers reach its backends")
        if self.local_host and not _HOST.fullmatch(self.local_host):
            raise InvalidArgument(f"--local-host {self.local_host}: give a host name or address, such as 127.0.0.1")
        if self.api_address and not _HOST_PORT.fullmatch(self.api_address):
            raise InvalidArgument(f"--api-address {self.api_address}: give HOST:PORT, such as 127.0.0.1:6443")
        return self


def credentials(options: Options, environ: Mapping[str, str]) -> dict[str, str]:
    """The Secret's data: a new root token; with --local, new keys for SeaweedFS and a new PostgreSQL password;
    else the deployer's AWS_* and PGPASSWORD where set (a backend may need none: an IAM role, ~/.pgpass)."""
    data = {"root-token": secrets.token_hex(32)}
    if options.local:
        key, secret = secrets.token_hex(10), secrets.token_hex(20)
        data |= {"aws-access-key-id": key, "aws-secret-access-key": secret, "aws-region": LOCAL_REGION,
                 "pgpassword": secrets.token_hex(16),
                 "seaweedfs-s3.json": json.dumps({"identities": [{
                     "name": "pfs", "credentials": [{"accessKey": key, "secretKey": secret}],
                     "actions": ["Admin", "Read", "List", "Tagging", "Write"]}]})}
    else:
        data |= {key: environ[name] for name, key in SECRET_ENV.items() if environ.get(name)}
        if "aws-region" not in data and environ.get("AWS_DEFAULT_REGION"):
            data["aws-region"] = environ["AWS_DEFAULT_REGION"]
    return data


def manifests(options: Options, secret: dict[str, str]) -> list[dict[str, Any]]:
    """Every object of the deployment, in the order they are applied (what a pod needs before it)."""
    o = options.check()
    objects = [_namespace(o), _secret(o, secret), *_rbac(o), _service(o, SERVER, kube.SERVICE, kube.PORT)]
    if o.local:
        objects += [_service(o, SEAWEEDFS, SEAWEEDFS, S3_PORT), _seaweedfs(o),
                    _service(o, POSTGRES, POSTGRES, POSTGRES_PORT), _postgres(o)]
    return [*objects, _servers(o)]


def listed(objects: list[dict[str, Any]]) -> dict[str, Any]:
    """OBJECTS as one v1 List, which `kubectl apply -f -` takes."""
    return {"apiVersion": "v1", "kind": "List", "items": objects}


def labels(name: str) -> dict[str, str]:
    return {kube.PART_OF: "pfs", "app.kubernetes.io/name": name}


def _meta(o: Options, name: str, **more: Any) -> dict[str, Any]:
    return {"name": name, "namespace": o.namespace, "labels": labels(name), **more}


def _namespace(o: Options) -> dict[str, Any]:
    return {"apiVersion": "v1", "kind": "Namespace", "metadata": {
        "name": o.namespace, "labels": {kube.PART_OF: "pfs", "pod-security.kubernetes.io/enforce": "privileged"}}}


def _secret(o: Options, data: dict[str, str]) -> dict[str, Any]:
    return {"apiVersion": "v1", "kind": "Secret", "metadata": _meta(o, CREDENTIALS), "type": "Opaque",
            "stringData": data}


def _rbac(o: Options) -> list[dict[str, Any]]:
    rbac = "rbac.authorization.k8s.io"
    return [
        {"apiVersion": "v1", "kind": "ServiceAccount", "metadata": _meta(o, SERVER)},
        {"apiVersion": f"{rbac}/v1", "kind": "Role", "metadata": _meta(o, SERVER), "rules": RUNNER_RULES},
        {"apiVersion": f"{rbac}/v1", "kind": "RoleBinding", "metadata": _meta(o, SERVER),
         "roleRef": {"apiGroup": rbac, "kind": "Role", "name": SERVER},
         "subjects": [{"kind": "ServiceAccount", "name": SERVER, "namespace": o.namespace}]},
    ]


def _service(o: Options, app: str, name: str, port: int) -> dict[str, Any]:
    """APP's Service NAME on PORT; the servers' is a NodePort of the same number, unless they hold it on their
    nodes themselves."""
    node_port = app == SERVER and not o.host_network
    return {"apiVersion": "v1", "kind": "Service", "metadata": _meta(o, name), "spec": {
        "type": "NodePort" if node_port else "ClusterIP", "selector": labels(app),
        "ports": [{"name": "grpc" if app == SERVER else "main", "port": port, "targetPort": port,
                   **({"nodePort": port} if node_port else {})}]}}


def _pod_network(o: Options) -> dict[str, Any]:
    return {"hostNetwork": True, "dnsPolicy": "ClusterFirstWithHostNet"} if o.host_network else {}


def _secret_env(keys: Mapping[str, str]) -> list[dict[str, Any]]:
    """Environment variables from the Secret's KEYS, each optional (a backend may need none)."""
    return [{"name": name, "valueFrom": {"secretKeyRef": {"name": CREDENTIALS, "key": key, "optional": True}}}
            for name, key in keys.items()]


def _server_args(o: Options) -> list[str]:
    if o.local:  # their Services' names need the cluster's DNS; --local-host where there is none
        s3_host, pg_host = (o.local_host, o.local_host) if o.local_host else (
            f"{SEAWEEDFS}.{o.namespace}.svc", f"{POSTGRES}.{o.namespace}.svc")
        storage, endpoint = f"s3://{BUCKET}/chunks", f"http://{s3_host}:{S3_PORT}"
        meta = f"postgresql://pfs@{pg_host}:{POSTGRES_PORT}/pfs"
    else:
        storage, endpoint, meta = o.storage, o.s3_endpoint, o.meta
    tls = (["--tls-cert", f"{TLS}/tls.crt", "--tls-key", f"{TLS}/tls.key"] if o.tls_secret
           else ["--insecure"])  # the cluster's network; every call still needs a token
    return ["pfs", "server", "--data-dir", DATA_DIR, "--listen", "0.0.0.0", "--port", str(kube.PORT),
            "--health-port", str(HEALTH_PORT), "--root-token-file", f"{SECRETS}/root-token", *tls,
            "--storage", storage, *(["--s3-endpoint", endpoint] if endpoint else []), "--meta", meta,
            "--runner", "kubernetes", "--namespace", o.namespace, "--worker-fuse", o.worker_fuse,
            "--worker-pull-policy", o.pull_policy, *(["--worker-host-network"] if o.host_network else []),
            *(["--worker-address", o.worker_address] if o.worker_address else []),
            *(["--registry", o.registry] if o.registry else [])]


def _servers(o: Options) -> dict[str, Any]:
    probe = {"grpc": {"port": HEALTH_PORT}}
    mounts = [{"name": "data", "mountPath": DATA_DIR},
              {"name": "credentials", "mountPath": SECRETS, "readOnly": True}]
    volumes = [{"name": "data", "emptyDir": {}},
               {"name": "credentials", "secret": {"secretName": CREDENTIALS, "defaultMode": 0o400,
                                                  "items": [{"key": "root-token", "path": "root-token"}]}}]
    env = _secret_env(SECRET_ENV)
    if o.api_address:  # what the kubelet sets from the Service `kubernetes`, which the client reads
        host, port = o.api_address.rsplit(":", 1)
        env += [{"name": "KUBERNETES_SERVICE_HOST", "value": host}, {"name": "KUBERNETES_SERVICE_PORT", "value": port}]
    if o.tls_secret:
        mounts.append({"name": "tls", "mountPath": TLS, "readOnly": True})
        volumes.append({"name": "tls", "secret": {"secretName": o.tls_secret, "defaultMode": 0o400}})
        env.append({"name": "PFS_TLS_CA", "value": f"{TLS}/ca.crt"})  # what the workers trust the servers by
    server = {
        "name": "server", "image": o.image, "imagePullPolicy": o.pull_policy, "command": _server_args(o),
        "env": env,
        "ports": [{"name": "grpc", "containerPort": kube.PORT}, {"name": "health", "containerPort": HEALTH_PORT}],
        "readinessProbe": {**probe, "periodSeconds": 5},
        "livenessProbe": {**probe, "initialDelaySeconds": 10, "periodSeconds": 10, "failureThreshold": 6},
        "volumeMounts": mounts,
    }
    return {"apiVersion": "apps/v1", "kind": "Deployment", "metadata": _meta(o, SERVER), "spec": {
        "replicas": o.replicas, "selector": {"matchLabels": labels(SERVER)},
        # on the nodes' network a new server cannot start where the old one holds the port
        **({"strategy": {"type": "Recreate"}} if o.host_network else {}),
        "template": {"metadata": {"labels": labels(SERVER)}, "spec": {
            "serviceAccountName": SERVER, **_pod_network(o), "containers": [server], "volumes": volumes}}}}


def _stateful_set(o: Options, name: str, container: dict[str, Any], mount: str,
                  volumes: list[dict[str, Any]]) -> dict[str, Any]:
    container = {**container, "imagePullPolicy": o.pull_policy,
                 "volumeMounts": [{"name": "data", "mountPath": mount}, *container.get("volumeMounts", [])]}
    return {"apiVersion": "apps/v1", "kind": "StatefulSet", "metadata": _meta(o, name), "spec": {
        "serviceName": name, "replicas": 1, "selector": {"matchLabels": labels(name)},
        "template": {"metadata": {"labels": labels(name)}, "spec": {
            **_pod_network(o), "containers": [container], **({"volumes": volumes} if volumes else {})}},
        "volumeClaimTemplates": [{"metadata": {"name": "data", "labels": labels(name)}, "spec": {
            "accessModes": ["ReadWriteOnce"], "resources": {"requests": {"storage": o.volume_size}}}}]}}


def _seaweedfs(o: Options) -> dict[str, Any]:
    container = {
        "name": "seaweedfs", "image": o.seaweedfs_image,
        "command": ["sh", "-c", SEAWEEDFS_SCRIPT.format(s3=S3_PORT, bucket=BUCKET)],
        "ports": [{"name": "s3", "containerPort": S3_PORT}],
        "readinessProbe": {"tcpSocket": {"port": S3_PORT}, "periodSeconds": 5},
        "volumeMounts": [{"name": "config", "mountPath": "/etc/seaweedfs", "readOnly": True}],
    }
    config = {"name": "config", "secret": {"secretName": CREDENTIALS,
                                           "items": [{"key": "seaweedfs-s3.json", "path": "s3.json"}]}}
    return _stateful_set(o, SEAWEEDFS, container, "/data", [config])


def _postgres(o: Options) -> dict[str, Any]:
    container = {
        "name": "postgres", "image": o.postgres_image,
        "env": [{"name": "POSTGRES_USER", "value": "pfs"}, {"name": "POSTGRES_DB", "value": "pfs"},
                # a subdirectory: the volume's root may hold lost+found, which initdb refuses
                {"name": "PGDATA", "value": "/var/lib/postgresql/data/pgdata"},
                {"name": "POSTGRES_PASSWORD",
                 "valueFrom": {"secretKeyRef": {"name": CREDENTIALS, "key": "pgpassword"}}}],
        "ports": [{"name": "postgres", "containerPort": POSTGRES_PORT}],
        "readinessProbe": {"exec": {"command": ["pg_isready", "-h", "127.0.0.1", "-U", "pfs", "-d", "pfs"]},
                           "periodSeconds": 5},
    }
    return _stateful_set(o, POSTGRES, container, "/var/lib/postgresql/data", [])

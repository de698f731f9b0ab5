"""`pfs deploy kubernetes`: the manifests, checked field by field and loaded by the Kubernetes client's own models;
the Role grants exactly what the runner calls; the servers' command is one `pfs server` takes. No cluster here:
tests/test_kubernetes_cluster.py applies them to one."""

import json
import os
import time

import pytest

from conftest import assert_one_line_error, run_pfs
from kube_models import load, round_trip
from pfs.deploy import manifests
from pfs.deploy.manifests import Options
from server import main as server_main
from server.access import server_token

OWN = Options(namespace="data-team", replicas=3, image="registry.local:5000/pfs/server:1",
              storage="s3://chunks-bucket/pfs", meta="postgresql://pfs@db.example:5432/pfs",
              s3_endpoint="https://s3.example")
LOCAL = Options(local=True)


def by_kind(objects: list[dict]) -> dict[tuple[str, str], dict]:
    return {(o["kind"], o["metadata"]["name"]): o for o in objects}


def build(options: Options, environ: dict | None = None) -> dict[tuple[str, str], dict]:
    return by_kind(manifests.manifests(options, manifests.credentials(options, environ or {})))


def server_container(objects) -> dict:
    [c] = objects["Deployment", "pfs-server"]["spec"]["template"]["spec"]["containers"]
    return c


@pytest.mark.parametrize("options", [OWN, LOCAL, Options(local=True, host_network=True, tls_secret="pfs-tls",
                                                         worker_fuse="smarter-devices/fuse")], ids=str)
def test_every_object_is_the_apis(options):
    objects = manifests.manifests(options, manifests.credentials(options, {}))
    for obj in objects:
        assert round_trip(obj) == obj, obj["kind"]
    kinds = [o["kind"] for o in objects]
    assert kinds[:3] == ["Namespace", "Secret", "ServiceAccount"] and kinds[-1] == "Deployment"
    assert all(o["metadata"]["labels"]["app.kubernetes.io/part-of"] == "pfs" for o in objects)
    listed = manifests.listed(objects)
    assert (listed["kind"], listed["items"]) == ("List", objects)


def test_the_role_grants_exactly_what_the_runner_needs_in_its_namespace():
    objects = build(OWN)
    role = objects["Role", "pfs-server"]
    assert role["metadata"]["namespace"] == "data-team"
    assert role["rules"] == [
        {"apiGroups": ["batch"], "resources": ["jobs"], "verbs": ["create", "get", "list", "watch", "delete"]},
        {"apiGroups": [""], "resources": ["pods", "pods/log"], "verbs": ["get", "list", "watch"]},
    ]
    model = load(role)
    assert [(r.api_groups, r.resources, r.verbs) for r in model.rules] == [
        (["batch"], ["jobs"], ["create", "get", "list", "watch", "delete"]),
        ([""], ["pods", "pods/log"], ["get", "list", "watch"])]
    binding = objects["RoleBinding", "pfs-server"]
    assert binding["roleRef"] == {"apiGroup": "rbac.authorization.k8s.io", "kind": "Role", "name": "pfs-server"}
    assert binding["subjects"] == [{"kind": "ServiceAccount", "name": "pfs-server", "namespace": "data-team"}]
    pod = objects["Deployment", "pfs-server"]["spec"]["template"]["spec"]
    assert pod["serviceAccountName"] == "pfs-server"
    assert not any(kind in ("ClusterRole", "ClusterRoleBinding") for kind, _ in objects)
    # the namespace lets workers have /dev/fuse and SYS_ADMIN
    assert objects["Namespace", "data-team"]["metadata"]["labels"]["pod-security.kubernetes.io/enforce"] == \
        "privileged"


def test_the_servers_command_is_one_pfs_server_takes():
    c = server_container(build(OWN))
    assert c["command"][:2] == ["pfs", "server"]
    args = server_main.parser().parse_args(c["command"][2:])
    assert (args.runner, args.namespace, args.listen, args.port, args.health_port) == (
        "kubernetes", "data-team", "0.0.0.0", 30650, 30651)
    assert (args.storage, args.meta, args.s3_endpoint) == (OWN.storage, OWN.meta, OWN.s3_endpoint)
    assert str(args.root_token_file) == "/etc/pfs/credentials/root-token"
    assert args.insecure and not args.tls_cert  # no TLS asked: the cluster's network, every call with a token
    assert (args.worker_fuse, args.worker_pull_policy, args.worker_host_network, args.worker_address) == (
        "privileged", "IfNotPresent", False, None)

    local = server_main.parser().parse_args(server_container(build(LOCAL))["command"][2:])
    assert (local.storage, local.s3_endpoint, local.meta) == (
        "s3://pfs/chunks", "http://pfs-seaweedfs.pfs.svc:8333", "postgresql://pfs@pfs-postgres.pfs.svc:5432/pfs")
    no_dns = server_main.parser().parse_args(server_container(build(Options(local=True, local_host="127.0.0.1")))[
        "command"][2:])  # a cluster without DNS: the backends where the servers reach them
    assert (no_dns.s3_endpoint, no_dns.meta) == ("http://127.0.0.1:8333", "postgresql://pfs@127.0.0.1:5432/pfs")
    tls = server_main.parser().parse_args(
        server_container(build(Options(local=True, tls_secret="pfs-tls", host_network=True,
                                       worker_address="127.0.0.1:30650", registry="registry.local:5000")))[
            "command"][2:])
    assert (tls.tls_cert, tls.tls_key, tls.insecure) == ("/etc/pfs/tls/tls.crt", "/etc/pfs/tls/tls.key", False)
    assert (tls.worker_host_network, tls.worker_address) == (True, "127.0.0.1:30650")
    assert tls.registry == "registry.local:5000"  # where create-pipeline --push-images pushes


def test_the_servers_deployment_service_probes_and_secrets():
    objects = build(OWN)
    deployment = objects["Deployment", "pfs-server"]
    assert deployment["spec"]["replicas"] == 3
    assert deployment["spec"]["selector"]["matchLabels"] == deployment["spec"]["template"]["metadata"]["labels"]
    c = server_container(objects)
    assert (c["image"], c["imagePullPolicy"]) == ("registry.local:5000/pfs/server:1", "IfNotPresent")
    assert c["ports"] == [{"name": "grpc", "containerPort": 30650}, {"name": "health", "containerPort": 30651}]
    assert c["readinessProbe"] == {"grpc": {"port": 30651}, "periodSeconds": 5}
    assert c["livenessProbe"]["grpc"] == {"port": 30651}
    assert load(deployment).spec.template.spec.containers[0].liveness_probe.grpc.port == 30651
    assert {e["name"]: e["valueFrom"]["secretKeyRef"] for e in c["env"]} == {
        name: {"name": "pfs-credentials", "key": key, "optional": True}
        for name, key in {"AWS_ACCESS_KEY_ID": "aws-access-key-id", "AWS_SECRET_ACCESS_KEY": "aws-secret-access-key",
                          "AWS_REGION": "aws-region", "PGPASSWORD": "pgpassword"}.items()}
    volumes = {v["name"]: v for v in deployment["spec"]["template"]["spec"]["volumes"]}
    assert volumes["credentials"]["secret"] == {"secretName": "pfs-credentials", "defaultMode": 0o400,
                                                "items": [{"key": "root-token", "path": "root-token"}]}
    assert volumes["data"] == {"name": "data", "emptyDir": {}}
    service = objects["Service", "pfs"]
    assert service["spec"]["type"] == "NodePort"
    assert service["spec"]["ports"] == [{"name": "grpc", "port": 30650, "targetPort": 30650, "nodePort": 30650}]
    assert service["spec"]["selector"] == deployment["spec"]["template"]["metadata"]["labels"]
    assert not any(kind == "StatefulSet" for kind, _ in objects)


def test_tls_from_a_secret_and_the_nodes_network():
    objects = build(Options(local=True, tls_secret="pfs-tls", host_network=True))
    c = server_container(objects)
    assert {"name": "tls", "mountPath": "/etc/pfs/tls", "readOnly": True} in c["volumeMounts"]
    assert {"name": "PFS_TLS_CA", "value": "/etc/pfs/tls/ca.crt"} in c["env"]
    pod = objects["Deployment", "pfs-server"]["spec"]["template"]["spec"]
    assert {"name": "tls", "secret": {"secretName": "pfs-tls", "defaultMode": 0o400}} in pod["volumes"]
    assert (pod["hostNetwork"], pod["dnsPolicy"]) == (True, "ClusterFirstWithHostNet")
    assert objects["Deployment", "pfs-server"]["spec"]["strategy"] == {"type": "Recreate"}
    assert objects["Service", "pfs"]["spec"]["type"] == "ClusterIP"  # the servers hold 30650 on their nodes
    for name in ("pfs-seaweedfs", "pfs-postgres"):
        assert objects["StatefulSet", name]["spec"]["template"]["spec"]["hostNetwork"] is True


def test_the_servers_reach_the_api_where_told():
    """--api-address: for a cluster whose Service `kubernetes` does not route from the servers' pods (no kube-proxy);
    the client in the pod reads KUBERNETES_SERVICE_HOST and _PORT, which the kubelet sets from that Service."""
    env = server_container(build(Options(local=True, host_network=True, api_address="127.0.0.1:6443")))["env"]
    assert [e for e in env if e["name"].startswith("KUBERNETES_")] == [
        {"name": "KUBERNETES_SERVICE_HOST", "value": "127.0.0.1"},
        {"name": "KUBERNETES_SERVICE_PORT", "value": "6443"}]
    assert not any(e["name"].startswith("KUBERNETES_") for e in server_container(build(LOCAL))["env"])


def test_local_backends_are_stateful_sets_with_volumes():
    objects = build(Options(local=True, volume_size="50Gi"))
    secret = objects["Secret", "pfs-credentials"]["stringData"]
    keys = json.loads(secret["seaweedfs-s3.json"])["identities"][0]["credentials"][0]
    assert (keys["accessKey"], keys["secretKey"]) == (secret["aws-access-key-id"], secret["aws-secret-access-key"])
    assert len(secret["root-token"]) == 64 and len(secret["pgpassword"]) == 32
    for name, port, mount in (("pfs-seaweedfs", 8333, "/data"), ("pfs-postgres", 5432, "/var/lib/postgresql/data")):
        sts = objects["StatefulSet", name]
        assert (sts["spec"]["replicas"], sts["spec"]["serviceName"]) == (1, name)
        [claim] = sts["spec"]["volumeClaimTemplates"]
        assert claim["metadata"]["name"] == "data"
        assert claim["spec"] == {"accessModes": ["ReadWriteOnce"], "resources": {"requests": {"storage": "50Gi"}}}
        assert load(sts).spec.volume_claim_templates[0].spec.resources.requests == {"storage": "50Gi"}
        [c] = sts["spec"]["template"]["spec"]["containers"]
        assert c["volumeMounts"][0] == {"name": "data", "mountPath": mount}
        assert objects["Service", name]["spec"]["ports"] == [{"name": "main", "port": port, "targetPort": port}]
        assert objects["Service", name]["spec"]["type"] == "ClusterIP"
    weed = objects["StatefulSet", "pfs-seaweedfs"]["spec"]["template"]["spec"]
    assert "s3.bucket.create -name pfs" in weed["containers"][0]["command"][2]
    assert weed["volumes"] == [{"name": "config", "secret": {
        "secretName": "pfs-credentials", "items": [{"key": "seaweedfs-s3.json", "path": "s3.json"}]}}]
    pg = {e["name"]: e for e in objects["StatefulSet", "pfs-postgres"]["spec"]["template"]["spec"]["containers"][0]["env"]}
    assert pg["POSTGRES_PASSWORD"]["valueFrom"] == {"secretKeyRef": {"name": "pfs-credentials", "key": "pgpassword"}}


def test_credentials_of_own_backends_come_from_the_deployers_environment():
    env = {"AWS_ACCESS_KEY_ID": "AKIA1", "AWS_SECRET_ACCESS_KEY": "s3cret", "AWS_DEFAULT_REGION": "eu-west-1",
           "PGPASSWORD": "pw", "HOME": "/root"}
    data = manifests.credentials(OWN, env)
    assert {k: v for k, v in data.items() if k != "root-token"} == {
        "aws-access-key-id": "AKIA1", "aws-secret-access-key": "s3cret", "aws-region": "eu-west-1", "pgpassword": "pw"}
    assert manifests.credentials(OWN, {})["root-token"] != manifests.credentials(OWN, {})["root-token"]


def test_the_cli_prints_a_list_for_kubectl(tmp_path):
    result = run_pfs("deploy", "kubernetes", "--local", "--namespace", "pfs-demo", "--replicas", "2")
    listed = json.loads(result.stdout)
    assert listed["kind"] == "List" and len(listed["items"]) == 11
    assert all(o["metadata"].get("namespace", "pfs-demo") == "pfs-demo" for o in listed["items"])
    assert by_kind(listed["items"])["Deployment", "pfs-server"]["spec"]["replicas"] == 2


@pytest.mark.parametrize("args, says", [
    ((), "give --storage s3://... and --meta postgresql://... (backends of your own), or --local"),
    (("--local", "--storage", "s3://b"), "give --storage s3://... and --meta postgresql://..."),
    (("--storage", "gs://b", "--meta", "postgresql://h/db"), "--storage must be s3://BUCKET[/PREFIX] and --meta"),
    (("--local", "--replicas", "0"), "--replicas 0: give 1 or more servers"),
    (("--local", "--api-address", "https://10.0.0.1"), "--api-address https://10.0.0.1: give HOST:PORT"),
    (("--storage", "s3://b", "--meta", "postgresql://h/db", "--local-host", "127.0.0.1"),
     "--local-host goes with --local"),
    (("--local", "--local-host", "127.0.0.1:5432"), "--local-host 127.0.0.1:5432: give a host name or address"),
])
def test_a_deploy_without_its_backends_is_refused_in_one_line(args, says):
    assert_one_line_error(run_pfs("deploy", "kubernetes", *args, check=False), says)


def test_applying_without_a_cluster_says_so_in_one_line(tmp_path):
    env = {"KUBECONFIG": str(tmp_path / "none")}
    assert_one_line_error(run_pfs("deploy", "kubernetes", "--local", "--apply", check=False, env=env),
                          "no Kubernetes cluster to use")
    assert_one_line_error(run_pfs("undeploy", check=False, env=env), "no Kubernetes cluster to use")


def test_a_root_token_on_a_read_only_secret_volume_is_used_as_it_is(tmp_path):
    """A Secret's files are read-only: the server must not chmod one already the owner's alone."""
    token = tmp_path / "root-token"
    token.write_text("a" * 64)
    token.chmod(0o400)
    before = os.stat(token).st_ctime_ns
    time.sleep(0.01)  # a chmod, had there been one, would move ctime past BEFORE
    assert server_token(token) == "a" * 64
    assert os.stat(token).st_ctime_ns == before and os.stat(token).st_mode & 0o777 == 0o400
    token.chmod(0o644)  # readable by others: made the owner's alone, as before
    server_token(token)
    assert os.stat(token).st_mode & 0o777 == 0o600

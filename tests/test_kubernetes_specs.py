"""The Kubernetes runner's Jobs, built from real pipeline manifests (1.x and 2.x fields), checked field by field and
loaded by the Kubernetes client's own models; the manifest's resources, and the refusals of wrong ones; and job-pod,
the worker pod's entrypoint. No cluster here: tests/test_kubernetes_cluster.py runs these Jobs on one."""

import argparse
import dataclasses
import json
import os

import grpc
import pytest

from kube_models import load, round_trip
from pfs.core import kube, manifest
from pfs.core.errors import InvalidArgument
from pfs.core.model import JobInfo, Resources, ShardInfo
from pfs.proto import convert as cv
from pfs.proto import pps_pb2 as ppb
from pfs.proto import pps_pb2_grpc
from server.pps.kubernetes import specs
from server.pps.kubernetes.specs import NEVER_FAIL, Workers, worker_job
from shim import pod

JOB_ID = "0123456789abcdef0123456789abcdef"
ADDRESS = "pfs.pfs-test.svc:30650"
WORKERS = Workers("pfs-test", "pfs-server-7d9f-x2k4p-1a2b3c")
# Pachyderm's fruit stand, as 1.x wrote it: split the sales by fruit, then sum each fruit
FRUIT_FILTER = {
    "pipeline": {"name": "filter"},
    "transform": {"image": "pfs/job-shim:latest",
                  "cmd": ["sh"],
                  "stdin": ["grep apple /pfs/data/* | awk '{print $2}' >> /pfs/out/apple",
                            "grep orange /pfs/data/* | awk '{print $2}' >> /pfs/out/orange"],
                  "env": {"LANG": "C", "PFS_SHARD": "7"}},
    "parallelism_spec": {"constant": 3},
    "resource_requests": {"cpu": 0.5, "memory": "64M"},
    "resource_limits": {"memory": "128M", "gpu": {"type": "nvidia.com/gpu", "number": 1}},
    "inputs": [{"repo": {"name": "data"}, "method": "map"}],
}
# word count, as 2.x writes its manifests: camelCase
WORD_COUNT = {
    "pipeline": {"name": "wc"},
    "transform": {"image": "registry.local:5000/wc@sha256:" + "ab" * 32,
                  "cmd": ["sh", "-c", "cat /pfs/docs/* | tr -s ' ' '\\n' | sort | uniq -c > /pfs/out/counts"]},
    "parallelism": 2,
    "resourceRequests": {"cpu": "250m", "memory": "1Gi", "disk": "2Gi"},
    "resourceLimits": {"cpu": 1, "memory": "2Gi"},
    "inputs": [{"repo": {"name": "docs"}, "method": "reduce"}],
}


BASE = {k: v for k, v in WORD_COUNT.items() if k not in ("resourceRequests", "resourceLimits")}


def job_of(doc: dict, shards: int) -> JobInfo:
    """The job a controller makes of pipeline manifest DOC, with SHARDS shards."""
    spec = manifest.pipeline(doc)
    return JobInfo(JOB_ID, spec.transform, (), spec.parallelism.constant, spec.name, pipeline=spec.name,
                   shards=tuple(ShardInfo(i) for i in range(shards)), max_attempts=3)


def container(job: dict) -> dict:
    [c] = job["spec"]["template"]["spec"]["containers"]
    return c


def env(job: dict) -> dict[str, str]:
    return {e["name"]: e["value"] for e in container(job)["env"]}


# -- the manifest's resources

def test_1x_and_2x_resource_fields_become_the_same_model():
    fruit = manifest.pipeline(FRUIT_FILTER).transform
    assert fruit.resource_requests == Resources(cpu="0.5", memory="64M")
    assert fruit.resource_limits == Resources(memory="128M", gpu=1, gpu_type="nvidia.com/gpu")
    wc = manifest.pipeline(WORD_COUNT).transform
    assert wc.resource_requests == Resources(cpu="250m", memory="1Gi", disk="2Gi")
    assert wc.resource_limits == Resources(cpu="1", memory="2Gi")
    # 1.x's first name for the requests, and its GPUs as a bare number
    old = manifest.pipeline({**BASE, "resource_spec": {"memory": "3G", "gpu": 2}})
    assert old.transform.resource_requests == Resources(memory="3G", gpu=2, gpu_type="nvidia.com/gpu")
    job = manifest.job({"transform": {"cmd": ["true"]}, "inputs": [{"repo": "data", "commit": "master"}],
                        "resource_limits": {"memory": 1 << 30}})
    assert job.transform.resource_limits == Resources(memory=str(1 << 30))
    assert manifest.pipeline(BASE).transform.resource_requests == Resources()


@pytest.mark.parametrize("fields, says", [
    ({"resource_requests": {"cpu": "lots"}}, "resource_requests.cpu: 'lots' is not a quantity above 0"),
    ({"resource_requests": {"memory": "2GB"}}, "resource_requests.memory: '2GB' is not a quantity above 0"),
    ({"resource_limits": {"memory": 0}}, "resource_limits.memory: '0' is not a quantity above 0"),
    ({"resource_limits": {"cpu": True}}, "resource_limits.cpu: expected a number or a quantity"),
    ({"resource_limits": {"memory": ["1G"]}}, "resource_limits.memory: expected a number or a quantity"),
    ({"resource_requests": {"mem": "1G"}}, "resource_requests.mem: unknown field; expected one of cpu, memory, gpu"),
    ({"resourceRequests": {"memory": "3Gi"}, "resourceLimits": {"memory": "2Gi"}},
     "resource_requests.memory: 3Gi is above resource_limits.memory (2Gi)"),
    ({"resource_requests": {"cpu": "1500m"}, "resource_limits": {"cpu": 1}},
     "resource_requests.cpu: 1500m is above resource_limits.cpu (1)"),
    ({"resource_requests": {"gpu": 2}, "resource_limits": {"gpu": 1}},
     "resource_limits.gpu: 1 nvidia.com/gpu differs from resource_requests.gpu (2 nvidia.com/gpu)"),
    ({"resource_limits": {"gpu": {"type": "gpu", "number": 1}}},
     "resource_limits.gpu.type: 'gpu' is not a device's resource name"),
    ({"resource_limits": {"gpu": {"number": -1}}}, "resource_limits.gpu.number: expected 0 to 1024 GPUs, got -1"),
    ({"resource_limits": {"gpu": {"kind": "x"}}}, "resource_limits.gpu.kind: unknown field; expected one of type"),
    ({"resource_spec": {}, "resource_requests": {}}, "resource_spec: give resource_requests or resource_spec"),
    ({"resource_requests": "1G"}, "resource_requests: expected an object, got a string"),
])
def test_a_wrong_resource_field_is_refused_in_one_line_naming_it(fields, says):
    with pytest.raises(InvalidArgument) as err:
        manifest.pipeline({**BASE, **fields})
    assert str(err.value).startswith(f"manifest field {says}"), str(err.value)
    assert "\n" not in str(err.value)


@pytest.mark.parametrize("quantity", ["1", "0.5", ".5", "500m", "64M", "2Gi", "1e3", "1E3", "100k", "1.5Ti"])
def test_kubernetes_quantities_are_taken(quantity):
    spec = manifest.pipeline({**BASE, "resource_limits": {"memory": quantity, "cpu": quantity}})
    assert spec.transform.resource_limits == Resources(cpu=quantity, memory=quantity)


def test_a_raw_grpc_client_meets_the_same_refusal(shared_server):
    """The rules are the model's: a spec that skipped the CLI's parser is refused by the server in the same words."""
    spec = manifest.pipeline(BASE)
    bad = dataclasses.replace(spec.transform, resource_requests=Resources(memory="3Gi"),
                              resource_limits=Resources(memory="2Gi"))
    request = ppb.CreatePipelineRequest(spec=cv.pipeline_spec_to_pb(dataclasses.replace(spec, transform=bad)))
    with shared_server.channel() as channel:
        with pytest.raises(grpc.RpcError) as err:
            pps_pb2_grpc.PPSStub(channel).CreatePipeline(request, timeout=30)
    assert err.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert err.value.details() == ("manifest field resource_requests.memory: 3Gi is above resource_limits.memory "
                                   "(2Gi); a worker cannot ask for more than it may use")


# -- the Jobs

def test_a_jobs_first_try_is_one_indexed_job_of_all_its_shards():
    job = job_of(FRUIT_FILTER, 3)
    k = worker_job(job, None, 1, ADDRESS, "the-job-token", WORKERS)
    assert round_trip(k) == k  # every field is the API's
    assert load(k).spec.completion_mode == "Indexed"
    assert k["metadata"] == {
        "name": f"pfs-{JOB_ID}", "namespace": "pfs-test",
        "labels": {"app.kubernetes.io/part-of": "pfs", "app.kubernetes.io/component": "worker",
                   "pfs.server": WORKERS.server, "pfs.pipeline": "filter", "pfs.job": JOB_ID, "pfs.attempt": "1"}}
    spec = k["spec"]
    assert (spec["completionMode"], spec["completions"], spec["parallelism"]) == ("Indexed", 3, 3)
    assert spec["backoffLimit"] == NEVER_FAIL == 2**31 - 1  # no shard's failure fails the Job
    assert spec["backoffLimitPerIndex"] == 0  # nor is its pod replaced: the runner's retry is a Job of its own
    assert spec["template"]["metadata"]["labels"] == k["metadata"]["labels"]  # no shard: each pod's index is its own
    pod = spec["template"]["spec"]
    assert pod["restartPolicy"] == "Never"
    assert pod["automountServiceAccountToken"] is False
    c = container(k)
    assert (c["name"], c["image"], c["imagePullPolicy"]) == ("worker", "pfs/job-shim:latest", "IfNotPresent")
    assert c["command"] == ["job-pod"]
    assert c["terminationMessagePath"] == "/dev/termination-log" == kube.TERMINATION_LOG
    # the shard comes from JOB_COMPLETION_INDEX, which Kubernetes sets in each pod; the manifest's PFS_SHARD is
    # the command's (job-shim gives it), not the pod's
    assert env(k) == {"LANG": "C", "PFS_ADDRESS": ADDRESS, "PFS_JOB": JOB_ID, "PFS_ATTEMPT": "1",
                      "PFS_TOKEN": "the-job-token"}


def test_a_later_try_at_one_shard_is_a_job_of_its_own():
    job = job_of(FRUIT_FILTER, 3)
    k = worker_job(job, 2, 3, ADDRESS, "the-job-token", WORKERS)
    assert round_trip(k) == k
    assert k["metadata"]["name"] == f"pfs-{JOB_ID}-2-3"
    assert (k["metadata"]["labels"]["pfs.shard"], k["metadata"]["labels"]["pfs.attempt"]) == ("2", "3")
    spec = k["spec"]
    assert (spec["completionMode"], spec["completions"], spec["parallelism"], spec["backoffLimit"]) == \
        ("NonIndexed", 1, 1, 0)
    assert "backoffLimitPerIndex" not in spec  # the API takes it for Indexed Jobs only
    assert spec["template"]["metadata"]["labels"] == k["metadata"]["labels"]
    assert {k: v for k, v in env(k).items() if k in ("PFS_SHARD", "PFS_ATTEMPT")} == {"PFS_SHARD": "2",
                                                                                       "PFS_ATTEMPT": "3"}


def test_fewer_shards_than_parallelism_make_that_many_completions():
    job = job_of(WORD_COUNT, 1)  # parallelism 2, but the input is one file: one shard
    spec = worker_job(job, None, 1, ADDRESS, None, WORKERS)["spec"]
    assert (spec["completions"], spec["parallelism"]) == (1, 1)


def test_fuse_by_a_privileged_container_the_nodes_device_or_a_device_plugin():
    job = job_of(WORD_COUNT, 2)
    privileged = worker_job(job, None, 1, ADDRESS, None, WORKERS)  # the default: it works on every runtime
    assert round_trip(privileged) == privileged
    assert container(privileged)["securityContext"] == {"privileged": True}
    assert "volumes" not in privileged["spec"]["template"]["spec"] and "volumeMounts" not in container(privileged)
    assert "annotations" not in privileged["spec"]["template"]["metadata"]

    hostpath = worker_job(job, None, 1, ADDRESS, None, Workers("pfs-test", "s", fuse="hostpath"))
    assert round_trip(hostpath) == hostpath
    pod = hostpath["spec"]["template"]
    assert container(hostpath)["securityContext"] == {"capabilities": {"add": ["SYS_ADMIN"]}}
    assert container(hostpath)["volumeMounts"] == [{"name": "fuse", "mountPath": "/dev/fuse"}]
    assert pod["spec"]["volumes"] == [{"name": "fuse", "hostPath": {"path": "/dev/fuse", "type": "CharDevice"}}]
    assert pod["metadata"]["annotations"] == {
        "container.apparmor.security.beta.kubernetes.io/worker": "unconfined"}  # mount(2) under AppArmor

    plugin = worker_job(job, None, 1, ADDRESS, None, Workers("pfs-test", "s", fuse="smarter-devices/fuse"))
    assert round_trip(plugin) == plugin
    assert container(plugin)["securityContext"] == {"capabilities": {"add": ["SYS_ADMIN"]}}
    assert container(plugin)["resources"] == {"requests": {"cpu": "250m", "memory": "1Gi", "ephemeral-storage": "2Gi"},
                                              "limits": {"cpu": "1", "memory": "2Gi", "smarter-devices/fuse": "1"}}
    assert "volumes" not in plugin["spec"]["template"]["spec"]


@pytest.mark.parametrize("mode", ["privileged", "hostpath", "smarter-devices/fuse", "pfs.local/fuse"])
def test_fuse_modes_taken(mode):
    assert kube.fuse_mode(mode) == mode


@pytest.mark.parametrize("mode", ["device", "fuse", "/fuse", "Smarter/fuse", ""])
def test_fuse_modes_refused(mode):
    with pytest.raises(argparse.ArgumentTypeError):
        kube.fuse_mode(mode)


def test_resources_as_requests_and_limits_with_gpus_as_limits():
    fruit = container(worker_job(job_of(FRUIT_FILTER, 3), None, 1, ADDRESS, None, WORKERS))
    assert fruit["resources"] == {"requests": {"cpu": "0.5", "memory": "64M"},
                                  "limits": {"memory": "128M", "nvidia.com/gpu": "1"}}
    wc = worker_job(job_of(WORD_COUNT, 2), 1, 2, ADDRESS, None, WORKERS)
    assert container(wc)["resources"] == {"requests": {"cpu": "250m", "memory": "1Gi", "ephemeral-storage": "2Gi"},
                                          "limits": {"cpu": "1", "memory": "2Gi"}}
    model = load(wc).spec.template.spec.containers[0].resources
    assert (model.requests, model.limits) == (container(wc)["resources"]["requests"],
                                              container(wc)["resources"]["limits"])
    # a GPU only requested is still a limit (Kubernetes takes devices as limits)
    gpus = manifest.pipeline({**BASE, "resource_requests": {"gpu": {"type": "amd.com/gpu", "number": 2}}})
    job = JobInfo(JOB_ID, gpus.transform, (), 1, "wc", shards=(ShardInfo(0),))
    assert container(worker_job(job, None, 1, ADDRESS, None, WORKERS))["resources"] == {"limits": {"amd.com/gpu": "2"}}
    # none asked: none given
    plain = JobInfo(JOB_ID, manifest.pipeline(BASE).transform, (), 1, "wc", shards=(ShardInfo(0),))
    assert "resources" not in container(worker_job(plain, None, 1, ADDRESS, None, WORKERS))


def test_the_nodes_network_the_pull_policy_and_the_servers_ca():
    ca = "-----BEGIN CERTIFICATE-----\nMIIB\n-----END CERTIFICATE-----\n"
    workers = Workers("ns", "s", host_network=True, pull_policy="Never", tls_ca=ca)
    assert workers.fuse == "privileged"
    k = worker_job(job_of(WORD_COUNT, 2), None, 1, "127.0.0.1:30650", "t", workers)
    assert round_trip(k) == k
    pod = k["spec"]["template"]["spec"]
    assert (pod["hostNetwork"], pod["dnsPolicy"]) == (True, "ClusterFirstWithHostNet")
    assert container(k)["imagePullPolicy"] == "Never"
    assert env(k)[kube.CA_PEM_ENV] == ca and env(k)["PFS_ADDRESS"] == "127.0.0.1:30650"


def test_names_a_label_cannot_hold_go_in_annotations():
    doc = {**BASE, "pipeline": {"name": "_private-"}}  # a repo name, but no label value
    workers = Workers("ns", "a-host.example.com-" + "x" * 60)
    k = worker_job(job_of(doc, 1), None, 1, ADDRESS, None, workers)
    assert round_trip(k) == k
    labels, annotations = k["metadata"]["labels"], k["metadata"]["annotations"]
    assert labels["pfs.pipeline"].startswith("h-") and annotations["pfs.pipeline"] == "_private-"
    assert labels["pfs.server"] == kube.label_value(workers.server) != workers.server
    assert annotations["pfs.server"] == workers.server
    assert all(len(v) <= 63 for v in labels.values())
    assert k["spec"]["template"]["metadata"]["annotations"]["pfs.pipeline"] == "_private-"


def test_job_names_fit_kubernetes():
    assert specs.job_name(JOB_ID, None, 1) == f"pfs-{JOB_ID}"
    longest = specs.job_name(JOB_ID, 1023, 2**31 - 1)
    assert len(longest) <= 63 and longest == f"pfs-{JOB_ID}-1023-2147483647"


# -- job-pod: job-shim's status as the termination message, and exit 0

def test_job_pod_leaves_job_shims_status_and_exits_0(tmp_path, monkeypatch, capsys):
    log = tmp_path / "termination-log"
    log.touch()  # the kubelet makes it in every container
    monkeypatch.setattr(kube, "TERMINATION_LOG", str(log))
    monkeypatch.delenv("PFS_JOB", raising=False)
    with pytest.raises(SystemExit) as exit:
        pod.main(["--address", "127.0.0.1:1"])  # no job: job-shim refuses with its status 2
    assert exit.value.code == 0
    assert log.read_text() == "2\n"
    assert "job-shim: no job given" in capsys.readouterr().err


def test_job_pod_outside_a_pod_exits_with_job_shims_status(tmp_path, monkeypatch):
    monkeypatch.setattr(kube, "TERMINATION_LOG", str(tmp_path / "none"))
    monkeypatch.delenv("PFS_JOB", raising=False)
    with pytest.raises(SystemExit) as exit:
        pod.main(["--address", "127.0.0.1:1"])
    assert exit.value.code == 2 and not (tmp_path / "none").exists()


def test_job_pod_gives_job_shim_the_servers_ca_as_a_file(tmp_path, monkeypatch):
    pem = "-----BEGIN CERTIFICATE-----\nMIIB\n-----END CERTIFICATE-----\n"
    monkeypatch.setenv(kube.CA_PEM_ENV, pem)
    monkeypatch.setattr(kube, "TERMINATION_LOG", str(tmp_path / "none"))
    monkeypatch.setenv("PFS_TLS_CA", "")  # so that what job-pod sets is undone after the test
    monkeypatch.delenv("PFS_JOB", raising=False)
    with pytest.raises(SystemExit):
        pod.main([])
    try:
        with open(os.environ["PFS_TLS_CA"]) as f:
            assert f.read() == pem
        assert kube.CA_PEM_ENV not in os.environ  # not the command's
    finally:
        os.unlink(os.environ["PFS_TLS_CA"])


def test_what_the_api_would_refuse_the_models_refuse_too():
    """The check above has teeth: a misspelt field does not survive the round trip, a missing name is refused."""
    k = worker_job(job_of(WORD_COUNT, 2), None, 1, ADDRESS, None, WORKERS)
    misspelt = json.loads(json.dumps(k))
    misspelt["spec"]["completionsMode"] = misspelt["spec"].pop("completionMode")
    assert round_trip(misspelt) != misspelt
    nameless = json.loads(json.dumps(k))
    del container(nameless)["name"]
    with pytest.raises(ValueError):
        load(nameless)


def test_a_manifest_that_is_not_an_object_says_so_without_an_empty_field_name():
    with pytest.raises(InvalidArgument, match=r"^a manifest: expected an object, got a list$"):
        manifest.pipeline([BASE])

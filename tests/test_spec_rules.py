"""One set of rules for job and pipeline specs: the CLI refuses a bad manifest with the line that a raw gRPC
client, which skips the CLI's parser, gets back as INVALID_ARGUMENT from the server."""

import json

import grpc
import pytest

from conftest import assert_one_line_error
from pfs.core.model import InputSpec, JobSpec, ParallelismSpec, PipelineSpec, Transform
from pfs.proto import convert as cv
from pfs.proto import pps_pb2 as ppb
from pfs.proto import pps_pb2_grpc

TRUE = Transform(("true",))
DATA = (InputSpec("data"),)


def pipeline_manifest(spec: PipelineSpec) -> dict:
    return {"pipeline": {"name": spec.name}, "transform": {"cmd": list(spec.transform.cmd)},
            "parallelism": spec.parallelism.constant,
            "inputs": [{"repo": {"name": i.repo}, "branch": i.ref, "method": i.method} for i in spec.inputs],
            "job_timeout": spec.job_timeout, "datum_timeout": spec.datum_timeout, "datum_tries": spec.datum_tries}


def job_manifest(spec: JobSpec) -> dict:
    return {"transform": {"cmd": list(spec.transform.cmd)}, "parallelism": spec.parallelism.constant,
            "inputs": [{"repo": i.repo, "commit": i.ref, "method": i.method} for i in spec.inputs],
            "output_repo": spec.output_repo}


def raw_error(server, call: str, request) -> grpc.RpcError:
    """The status of a raw gRPC call that must fail."""
    with server.channel() as channel:
        with pytest.raises(grpc.RpcError) as err:
            getattr(pps_pb2_grpc.PPSStub(channel), call)(request, timeout=30)
    return err.value


def cli_line(server, tmp_path, verb: str, manifest: dict, *fragments: str) -> str:
    path = tmp_path / "bad.json"
    path.write_text(json.dumps(manifest))
    result = server.pfs(verb, "-f", str(path), check=False)
    assert_one_line_error(result, *fragments)
    return result.stderr.strip().removeprefix("pfs: ")


BAD_PIPELINES = [
    (PipelineSpec("p", Transform(()), DATA), "transform.cmd: empty"),
    (PipelineSpec("p", Transform(("",)), DATA), "transform.cmd[0]: empty"),
    (PipelineSpec("p", Transform(("sh", "-c", "a\0b")), DATA), "transform.cmd[2]: holds a NUL byte"),
    (PipelineSpec("p", TRUE, ()), "inputs: empty"),
    (PipelineSpec("p", TRUE, (InputSpec("data"), InputSpec("data"))), "inputs[1].repo: repo 'data' is an input twice"),
    (PipelineSpec("p", TRUE, (InputSpec("out"),)), "inputs[0].repo: a worker's /pfs/out is taken"),
    (PipelineSpec("prev", TRUE, DATA), "pipeline.name: 'prev' is taken"),
    (PipelineSpec("p", TRUE, DATA, ParallelismSpec(0)), "parallelism: must be at least 1"),
    (PipelineSpec("p", TRUE, DATA, ParallelismSpec(5000)), "parallelism: must be at least 1 (and at most 1024)"),
    (PipelineSpec("p", TRUE, (InputSpec("p"),)), "inputs[0].repo: pipeline 'p' cannot read its own output"),
    (PipelineSpec("p", TRUE, (InputSpec("data", "a b"),)), "inputs[0].branch: invalid branch name 'a b'"),
    (PipelineSpec("p", TRUE, DATA, job_timeout=-1.0), "job_timeout: expected a duration from 0 (no limit) to a year"),
    (PipelineSpec("p", TRUE, DATA, datum_timeout=400 * 86400.0), "datum_timeout: expected a duration from 0"),
    (PipelineSpec("p", TRUE, DATA, datum_tries=101), "datum_tries: expected 1 to 100 tries (0: the default, 3), "
                                                     "got 101"),
    (PipelineSpec("p", TRUE, DATA, datum_tries=-1), "datum_tries: expected 1 to 100"),
]


@pytest.fixture(scope="module")
def data_server(shared_server):
    """The module's shared server, with repo data: every spec below is refused, so it stays as it is."""
    shared_server.pfs("create-repo", "data")
    return shared_server


@pytest.mark.parametrize("spec, fragment", BAD_PIPELINES)
def test_a_bad_pipeline_gets_the_cli_line_over_raw_grpc(data_server, tmp_path, spec, fragment):
    server = data_server
    line = cli_line(server, tmp_path, "create-pipeline", pipeline_manifest(spec), f"manifest field {fragment}")
    err = raw_error(server, "CreatePipeline", ppb.CreatePipelineRequest(spec=cv.pipeline_spec_to_pb(spec)))
    assert (err.code(), err.details()) == (grpc.StatusCode.INVALID_ARGUMENT, line)
    with server.client() as c:
        assert c.list_pipelines() == []


BAD_JOBS = [
    (JobSpec(Transform(()), DATA), "transform.cmd: empty"),
    (JobSpec(TRUE, ()), "inputs: empty"),
    (JobSpec(TRUE, (InputSpec("data"), InputSpec("data"))), "inputs[1].repo: repo 'data' is an input twice"),
    (JobSpec(TRUE, (InputSpec("prev"),)), "inputs[0].repo: a worker's /pfs/prev is taken"),
    (JobSpec(TRUE, DATA, ParallelismSpec(0)), "parallelism: must be at least 1"),
    (JobSpec(TRUE, DATA, output_repo="data"), "output_repo: repo 'data' cannot be both an input and the output"),
    (JobSpec(TRUE, DATA, output_repo="a/b"), "output_repo: invalid repo name 'a/b'"),
]


@pytest.mark.parametrize("spec, fragment", BAD_JOBS)
def test_a_bad_job_gets_the_cli_line_over_raw_grpc(data_server, tmp_path, spec, fragment):
    server = data_server
    line = cli_line(server, tmp_path, "create-job", job_manifest(spec), f"manifest field {fragment}")
    err = raw_error(server, "CreateJob", cv.job_spec_to_pb(spec))
    assert (err.code(), err.details()) == (grpc.StatusCode.INVALID_ARGUMENT, line)


@pytest.mark.parametrize("spec, fragment", [
    (PipelineSpec("p", TRUE, (InputSpec("data", method="bogus"),)),
     "inputs[0].method: unknown method 'bogus'; use one of map, reduce, global"),
    (PipelineSpec("p", TRUE, (InputSpec("data", incremental="sometimes"),)),
     "inputs[0].method.incremental: unknown value 'sometimes'"),
    (PipelineSpec("p", TRUE, DATA, ParallelismSpec(coefficient=-1.0)), "parallelism_spec.coefficient: expected"),
    (PipelineSpec("p", TRUE, (InputSpec(""),)), "inputs[0].repo: missing"),
    (PipelineSpec("p", Transform(("true",), env=(("A=B", "1"),)), DATA), "transform.env['A=B']: a variable's name"),
    (PipelineSpec("p", Transform(("true",), env=(("A", "x\0"),)), DATA), "transform.env['A']: a variable's name"),
])
def test_what_no_manifest_can_say_is_refused_over_raw_grpc(data_server, spec, fragment):
    """A method or value the manifest parser never makes (it refuses the manifest before) is refused too."""
    server = data_server
    err = raw_error(server, "CreatePipeline", ppb.CreatePipelineRequest(spec=cv.pipeline_spec_to_pb(spec)))
    assert err.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert err.details().startswith(f"manifest field {fragment}"), err.details()
    assert "\n" not in err.details()

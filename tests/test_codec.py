"""The model's one encoding (pfs.core.codec) and the wire (pfs.proto.convert): every model type round-trips through
both, states are enums on each side, and rows an older store wrote still load."""

import dataclasses
import json
import random
import sqlite3

import pytest

from pfs.core import codec, model
from pfs.core.model import (
    BranchInfo, ChunkLocation, ChunkRef, CommitInfo, CommitRef, DirectRead, FileInfo, FileWrite, InputSpec, JobInfo, JobInput, JobSpec, JobState,
    LogLine, ParallelismSpec, PipelineInfo, PipelineSpec, PipelineState, RepoInfo, Resources, ShardInfo, ShardState,
    Transform, CheckProblem, CheckSummary, GarbageCollected, Progress,
)
from pfs.proto import chunks_pb2 as cpb
from pfs.proto import convert as cv
from pfs.proto import pfs_pb2 as pb
from pfs.proto import pps_pb2 as ppb
from server.meta.sqlite import SCHEMA, SqliteMetaStore

CHUNK = ChunkRef(bytes(range(32)), 5)
RESOURCES = Resources("500m", "1Gi", 2, "nvidia.com/gpu", "10G")
TRANSFORM = Transform(("sh", "-c", "wc"), ("line",), (("A", "b"), ("LANG", "C")), (3, 4), "img:1", True, "1000",
                      RESOURCES, Resources(memory="2Gi"))
INPUT = InputSpec("words", "dev", "reduce", "diff", True)
PIPELINE_SPEC = PipelineSpec("count", TRANSFORM, (INPUT, InputSpec("more")), ParallelismSpec(2), "counts")
SHARDS = (ShardInfo(0, ShardState.SUCCESS, 1, 5.0, 5.5, 0, "", 10, 4, 4),
          ShardInfo(1, ShardState.FAILURE, 3, 5.1, 6.0, 2, "boom", 11, 0, 0),
          ShardInfo(2))
JOB = JobInfo("j1", TRANSFORM, (JobInput("words", "c1", "reduce", 2, "c0", "diff"), JobInput("more", "c9")), 3,
              "count", "out", "count", JobState.FAILURE, 5.0, 6.0, "c0", "c7", "shard 1 failed", SHARDS, 3, False)

# Each model type, with every field set away from its default and with only the required fields.
SAMPLES = {
    ChunkRef: [CHUNK],
    CommitRef: [CommitRef("words", "master^")],
    RepoInfo: [RepoInfo("words", "some words", 1.5, 42, ("dev", "master")), RepoInfo("r", "", 0.0, 0)],
    CommitInfo: [CommitInfo("count", "c2", "c1", "master", 3.0, 4.0, 7, (CommitRef("words", "c1"),)),
                 CommitInfo("r", "c", "", "master", 1.0, 0.0, 0)],
    BranchInfo: [BranchInfo("master", "c1")],
    FileInfo: [FileInfo("/a/b", False, 5, "c1", (CHUNK, ChunkRef(b"\xff" * 32, 1))), FileInfo("/a", True, 0, "c1")],
    FileWrite: [FileWrite("a/b", (CHUNK,), True), FileWrite("c", ()), FileWrite("d", (), directory=True)],
    Transform: [TRANSFORM, Transform(("true",))],
    Resources: [RESOURCES, Resources()],
    JobInput: [JobInput("words", "c1", "reduce", 2, "c0", "diff"), JobInput("r", "c")],
    InputSpec: [INPUT, InputSpec("r")],
    JobSpec: [JobSpec(TRANSFORM, (INPUT,), ParallelismSpec(coefficient=1.5), "out"), JobSpec(Transform(("true",)), ())],
    PipelineSpec: [PIPELINE_SPEC, PipelineSpec("p", Transform(("true",)), ())],
    PipelineInfo: [PipelineInfo(PIPELINE_SPEC, 2.0, PipelineState.STOPPED, 3, (("more", "c8"), ("words", "c1")), True,
                                "no setpriv", 2),
                   PipelineInfo(PIPELINE_SPEC, 2.0)],
    ShardInfo: list(SHARDS),
    JobInfo: [JOB, JobInfo("j2", TRANSFORM, (), 1, "out")],
    LogLine: [LogLine("j1", 1, 5.0, "stderr", "oops")],
    DirectRead: [DirectRead("local-dir", "/srv/pfs"), DirectRead("url", "s3://bucket/prefix")],
    ChunkLocation: [ChunkLocation("https://s3.example/b/p/pack?X-Amz-Signature=ab", 4096, 1000, 0, 5096)],
    ParallelismSpec: [ParallelismSpec(3), ParallelismSpec(coefficient=0.5), ParallelismSpec()],
    Progress: [Progress("mark", 10, 20), Progress("chunks", 0, 0)],
    GarbageCollected: [GarbageCollected(True, 1, 2, 3, 4, 5, 6, 7, 8, 9.5),
                       GarbageCollected(False, 0, 0, 0, 0, 0, 0, 0, 0, 0.0)],
    CheckProblem: [CheckProblem("r", "c1", "a/b", "chunk ff is missing"), CheckProblem("", "", "", "")],
    CheckSummary: [CheckSummary(1, 2, 3, 4, 5, 6.5), CheckSummary(0, 0, 0, 0, 0, 0.0)],
}


def _write_to_pb(w: FileWrite) -> pb.FileWrite:
    request = pb.PutFilesRequest()
    cv.add_writes(request.files, [w])
    return request.files[0]


WIRE = {  # model type: (to the wire, back)
    ChunkRef: (lambda c: cv.file_to_pb(FileInfo("f", False, c.size, "c1", (c,))).chunks[0], cv.chunk_from_pb),
    CommitRef: (cv.commit_ref_to_pb, cv.commit_ref_from_pb),
    RepoInfo: (cv.repo_to_pb, cv.repo_from_pb),
    CommitInfo: (cv.commit_to_pb, cv.commit_from_pb),
    BranchInfo: (cv.branch_to_pb, cv.branch_from_pb),
    FileInfo: (cv.file_to_pb, cv.file_from_pb),
    FileWrite: (_write_to_pb, cv.write_from_pb),
    Transform: (lambda t: cv.job_spec_to_pb(JobSpec(t, ())), lambda m: cv.job_spec_from_pb(m).transform),
    Resources: (lambda r: cv.job_spec_to_pb(JobSpec(Transform(("true",), resource_limits=r), ())),
                lambda m: cv.job_spec_from_pb(m).transform.resource_limits),
    JobInput: (lambda i: cv.job_to_pb(dataclasses.replace(JOB, inputs=(i,))), lambda m: cv.job_from_pb(m).inputs[0]),
    InputSpec: (lambda i: cv.job_spec_to_pb(JobSpec(TRANSFORM, (i,))), lambda m: cv.job_spec_from_pb(m).inputs[0]),
    JobSpec: (cv.job_spec_to_pb, cv.job_spec_from_pb),
    PipelineSpec: (cv.pipeline_spec_to_pb, cv.pipeline_spec_from_pb),
    PipelineInfo: (cv.pipeline_to_pb, cv.pipeline_from_pb),
    ShardInfo: (lambda s: cv.job_to_pb(dataclasses.replace(JOB, shards=(s,))), lambda m: cv.job_from_pb(m).shards[0]),
    JobInfo: (cv.job_to_pb, cv.job_from_pb),
    LogLine: (cv.log_to_pb, cv.log_from_pb),
    DirectRead: (lambda d: pb.ServerInfo(direct_read=cv.direct_read_to_pb(d)), cv.direct_read_from_pb),
    ChunkLocation: (cv.location_to_pb, cv.location_from_pb),
    ParallelismSpec: (lambda p: cv.job_spec_to_pb(JobSpec(TRANSFORM, (), p)), lambda m: cv.job_spec_from_pb(m).parallelism),
    Progress: (lambda p: cv.update_to_pb(p, pb.GarbageCollectUpdate), cv.update_from_pb),
    GarbageCollected: (lambda g: cv.update_to_pb(g, pb.GarbageCollectUpdate), cv.update_from_pb),
    CheckProblem: (lambda c: cv.update_to_pb(c, pb.CheckUpdate), cv.update_from_pb),
    CheckSummary: (lambda c: cv.update_to_pb(c, pb.CheckUpdate), cv.update_from_pb),
}


def test_every_model_type_has_samples():
    types = {t for t in vars(model).values() if dataclasses.is_dataclass(t)}
    assert types == set(SAMPLES) == set(WIRE)


@pytest.mark.parametrize("sample", [s for samples in SAMPLES.values() for s in samples], ids=repr)
def test_round_trip_through_the_codec(sample):
    data = json.loads(json.dumps(codec.encode(sample)))
    assert codec.decode(type(sample), data) == sample
    assert codec.loads(type(sample), codec.dumps(sample)) == sample


@pytest.mark.parametrize("sample", [s for samples in SAMPLES.values() for s in samples], ids=repr)
def test_round_trip_through_the_wire(sample):
    to_pb, from_pb = WIRE[type(sample)]
    message = to_pb(sample)
    assert from_pb(type(message).FromString(message.SerializeToString())) == sample


def test_a_chunk_the_store_lacks_goes_as_a_location_without_url():
    assert cv.location_to_pb(None).url == "" and cv.location_from_pb(cv.location_to_pb(None)) is None


def test_chunk_batches_are_encoded_as_protobuf_encodes_them():
    """PutChunks' messages are written straight from the frames (cv.chunk_batch_bytes): the same bytes as the
    message's own encoding, whatever the sizes (varints of one to four bytes) and empty fields."""
    r = random.Random(2)
    batches = [[], [(b"", b"")], [(b"\x01" * 32, b"")], [(b"", b"x")],
               [(r.randbytes(32), r.randbytes(n)) for n in (1, 127, 128, 300, 16_383, 16_384, 2_097_152)]]
    for chunks in batches:
        message = cpb.ChunkBatch(chunks=[cpb.ChunkData(address=a, compressed=f) for a, f in chunks])
        assert cv.chunk_batch_bytes(chunks) == message.SerializeToString()
        assert cpb.ChunkBatch.FromString(cv.chunk_batch_bytes(chunks)) == message


@pytest.mark.parametrize("cls, message", [
    (CommitRef, pb.CommitRef), (RepoInfo, pb.RepoInfo), (CommitInfo, pb.CommitInfo), (BranchInfo, pb.BranchInfo),
    (Transform, ppb.Transform), (Resources, ppb.Resources), (InputSpec, ppb.InputSpec), (JobSpec, ppb.CreateJobRequest), (JobInput, ppb.JobInput),
    (PipelineSpec, ppb.PipelineSpec), (PipelineInfo, ppb.PipelineInfo), (ShardInfo, ppb.ShardInfo),
    (JobInfo, ppb.JobInfo), (LogLine, ppb.LogLine), (ChunkLocation, cpb.ChunkLocation),
], ids=lambda x: getattr(x, "__name__", ""))
def test_a_message_converted_field_by_field_has_the_fields_of_its_model_type(cls, message):
    # a field on one side only would be dropped on the way (or fail at the first conversion)
    assert set(message.DESCRIPTOR.fields_by_name) == {name for name, _ in codec.fields(cls)}


def test_states_are_enums_in_the_model_on_the_wire_and_in_stored_data():
    back = codec.loads(JobInfo, codec.dumps(JOB))
    assert back.state is JobState.FAILURE and [s.state for s in back.shards] == [
        ShardState.SUCCESS, ShardState.FAILURE, ShardState.PENDING]
    assert json.loads(codec.dumps(JOB))["state"] == "failure"  # stored and printed as the word it always was
    assert f"{JobState.SKIPPED} {ShardState.RUNNING} {PipelineState.STOPPED}" == "skipped running stopped"
    message = cv.job_to_pb(JOB)
    assert message.state == ppb.JOB_STATE_FAILURE and message.shards[2].state == ppb.SHARD_STATE_PENDING
    assert cv.pipeline_to_pb(SAMPLES[PipelineInfo][0]).state == ppb.PIPELINE_STATE_STOPPED
    for state in JobState:
        assert cv.job_from_pb(cv.job_to_pb(dataclasses.replace(JOB, state=state))).state is state
    for state in ShardState:
        shard = ShardInfo(0, state)
        assert cv.job_from_pb(cv.job_to_pb(dataclasses.replace(JOB, shards=(shard,)))).shards[0].state is state
    for state in PipelineState:
        info = PipelineInfo(PIPELINE_SPEC, 1.0, state)
        assert cv.pipeline_from_pb(cv.pipeline_to_pb(info)).state is state


def test_what_the_sender_left_unset_takes_the_model_default():
    job = cv.job_from_pb(ppb.JobInfo(id="j", transform=ppb.Transform(cmd=["true"]), shards=[ppb.ShardInfo(index=0)],
                                     inputs=[ppb.JobInput(repo="r", commit="c")]))
    assert job.state is JobState.RUNNING and job.shards[0].state is ShardState.PENDING
    assert job.output_branch == "master" and job.inputs[0].method == "map" and job.inputs[0].incremental == "none"
    assert cv.pipeline_from_pb(ppb.PipelineInfo(spec=ppb.PipelineSpec(name="p"))).state is PipelineState.RUNNING


def test_data_missing_a_field_takes_its_default_and_a_field_no_longer_in_the_model_is_ignored():
    data = {"id": "j", "transform": {"cmd": ["true"]}, "inputs": [], "parallelism": 1, "output_repo": "out",
            "shards": [{"index": 0, "state": "running"}], "a_field_since_removed": 1}
    assert codec.decode(JobInfo, data) == JobInfo("j", Transform(("true",)), (), 1, "out",
                                                   shards=(ShardInfo(0, ShardState.RUNNING),))


# Rows as pfs wrote them before the codec (store version 0), copied from a data dir.
OLD_PROVENANCE = '[["words", "c1"]]'
OLD_PIPELINE = (
    '{"spec": {"name": "count", "transform": {"cmd": ["sh", "-c", "wc"], "stdin": ["line"], "env": [["LANG", "C"]], '
    '"accept_return_code": [3], "image": "img:1", "overwrite": true}, "inputs": [{"repo": "words", "ref": "master", '
    '"method": "reduce", "incremental": "diff", "run_empty": true}], "parallelism": 2, "description": "counts"}, '
    '"created": 2.0, "state": "stopped", "version": 3, "processed": [["words", "c1"]], "reprocess": true}')
OLD_JOB = (
    '{"id": "j1", "transform": {"cmd": ["sh", "-c", "wc"], "stdin": ["line"], "env": [["LANG", "C"]], '
    '"accept_return_code": [3], "image": "img:1", "overwrite": true}, "inputs": [{"repo": "words", "commit": "c1", '
    '"method": "reduce", "shards": 2, "since": "c0", "incremental": "diff"}], "parallelism": 2, '
    '"output_repo": "count", "output_branch": "master", "pipeline": "count", "state": "failure", "started": 5.0, '
    '"finished": 6.0, "prev_output": "c0", "output_commit": "", "error": "shard 1 failed", "shards": [{"index": 0, '
    '"state": "success", "attempts": 1, "started": 5.0, "finished": 5.5, "exit_code": 0, "error": "", '
    '"bytes_in": 10, "bytes_out": 4, "bytes_sent": 4}, {"index": 1, "state": "failure", "attempts": 3, '
    '"started": 5.1, "finished": 6.0, "exit_code": 2, "error": "boom", "bytes_in": 11, "bytes_out": 0, '
    '"bytes_sent": 0}], "max_attempts": 3, "fresh_output": false}')
OLD_STAGED = '[["a/b", true, [["000102030405060708090a0b0c0d0e0f101112131415161718191a1b1c1d1e1f", 5]]]]'


def test_rows_written_before_the_codec_still_load(tmp_path):
    path = tmp_path / "meta.db"
    db = sqlite3.connect(path)
    db.executescript(SCHEMA)
    db.execute("INSERT INTO repos VALUES ('words', '', 1.0), ('count', '', 1.0)")
    db.execute("INSERT INTO commits (repo, id, parent, branch, started, finished, size, provenance, tree) "
               "VALUES ('count', 'c2', '', 'master', 3.0, 4.0, 7, ?, X'74')", (OLD_PROVENANCE,))
    db.execute("INSERT INTO pipelines (name, info) VALUES ('count', ?)", (OLD_PIPELINE,))
    db.execute("INSERT INTO jobs (id, pipeline, info) VALUES ('j1', 'count', ?)", (OLD_JOB,))
    db.execute("INSERT INTO staged_files (job, shard, files) VALUES ('j1', 0, ?)", (OLD_STAGED,))
    db.commit()
    db.close()
    transform = Transform(("sh", "-c", "wc"), ("line",), (("LANG", "C"),), (3,), "img:1", True)
    for _ in range(2):  # as the first open upgraded the rows, and as the next one finds them
        meta = SqliteMetaStore(path)
        with meta.transaction() as tx:
            assert tx.get_commit("count", "c2").info.provenance == (CommitRef("words", "c1"),)
            assert tx.get_pipeline("count") == PipelineInfo(
                PipelineSpec("count", transform, (InputSpec("words", "master", "reduce", "diff", True),), ParallelismSpec(2),
                             "counts"),
                2.0, PipelineState.STOPPED, 3, (("words", "c1"),), True)
            assert tx.get_job("j1") == JobInfo(
                "j1", transform, (JobInput("words", "c1", "reduce", 2, "c0", "diff"),), 2, "count", "master", "count",
                JobState.FAILURE, 5.0, 6.0, "c0", "", "shard 1 failed",
                (ShardInfo(0, ShardState.SUCCESS, 1, 5.0, 5.5, 0, "", 10, 4, 4),
                 ShardInfo(1, ShardState.FAILURE, 3, 5.1, 6.0, 2, "boom", 11, 0, 0)), 3, False)
            assert tx.staged_files("j1", 0) == [FileWrite("a/b", (ChunkRef(bytes(range(32)), 5),), True)]
        meta.close()

"""Conversions between the wire messages and pfs.core.model, used by the client and the servicers."""

import dataclasses

from pfs.core.model import (
    BranchInfo, ChunkRef, CommitInfo, CommitRef, FileInfo, FileWrite, InputSpec, JobInfo, JobInput, JobSpec, LogLine,
    PipelineInfo, PipelineSpec, RepoInfo, ShardInfo, Transform,
)
from pfs.proto import chunks_pb2 as cpb
from pfs.proto import pfs_pb2 as pb
from pfs.proto import pps_pb2 as ppb


def commit_ref_to_pb(r: CommitRef) -> pb.CommitRef:
    return pb.CommitRef(repo=r.repo, ref=r.ref)


def commit_ref_from_pb(m: pb.CommitRef) -> CommitRef:
    return CommitRef(m.repo, m.ref)


def chunk_to_pb(c: ChunkRef) -> cpb.ChunkRef:
    return cpb.ChunkRef(address=c.address, size=c.size)


def chunk_from_pb(m: cpb.ChunkRef) -> ChunkRef:
    return ChunkRef(m.address, m.size)


def repo_to_pb(r: RepoInfo) -> pb.RepoInfo:
    return pb.RepoInfo(
        name=r.name, description=r.description, created=r.created, size_bytes=r.size_bytes, branches=r.branches
    )


def repo_from_pb(m: pb.RepoInfo) -> RepoInfo:
    return RepoInfo(m.name, m.description, m.created, m.size_bytes, tuple(m.branches))


def commit_to_pb(c: CommitInfo) -> pb.CommitInfo:
    return pb.CommitInfo(
        repo=c.repo,
        id=c.id,
        parent=c.parent,
        branch=c.branch,
        started=c.started,
        finished=c.finished,
        size_bytes=c.size_bytes,
        provenance=[commit_ref_to_pb(p) for p in c.provenance],
    )


def commit_from_pb(m: pb.CommitInfo) -> CommitInfo:
    return CommitInfo(
        repo=m.repo,
        id=m.id,
        parent=m.parent,
        branch=m.branch,
        started=m.started,
        finished=m.finished,
        size_bytes=m.size_bytes,
        provenance=tuple(commit_ref_from_pb(p) for p in m.provenance),
    )


def branch_to_pb(b: BranchInfo) -> pb.BranchInfo:
    return pb.BranchInfo(name=b.name, head=b.head)


def branch_from_pb(m: pb.BranchInfo) -> BranchInfo:
    return BranchInfo(m.name, m.head)


def file_to_pb(f: FileInfo) -> pb.FileInfo:
    return pb.FileInfo(
        path=f.path,
        type=pb.DIR if f.is_dir else pb.FILE,
        size_bytes=f.size_bytes,
        commit=f.commit,
        chunks=[chunk_to_pb(c) for c in f.chunks],
    )


def file_from_pb(m: pb.FileInfo) -> FileInfo:
    return FileInfo(m.path, m.type == pb.DIR, m.size_bytes, m.commit, tuple(chunk_from_pb(c) for c in m.chunks))


def write_to_pb(w: FileWrite) -> pb.FileWrite:
    return pb.FileWrite(path=w.path, overwrite=w.overwrite, chunks=[chunk_to_pb(c) for c in w.chunks])


def write_from_pb(m: pb.FileWrite) -> FileWrite:
    return FileWrite(m.path, tuple(chunk_from_pb(c) for c in m.chunks), m.overwrite)


def transform_to_pb(t: Transform) -> ppb.Transform:
    return ppb.Transform(cmd=t.cmd, stdin=t.stdin, env=dict(t.env), accept_return_code=t.accept_return_code,
                         image=t.image, overwrite=t.overwrite)


def transform_from_pb(m: ppb.Transform) -> Transform:
    return Transform(tuple(m.cmd), tuple(m.stdin), tuple(sorted(m.env.items())), tuple(m.accept_return_code),
                     m.image, m.overwrite)


def job_spec_to_pb(s: JobSpec) -> ppb.CreateJobRequest:
    return ppb.CreateJobRequest(
        transform=transform_to_pb(s.transform),
        inputs=[input_spec_to_pb(i) for i in s.inputs],
        parallelism=s.parallelism,
        output_repo=s.output_repo,
    )


def input_spec_to_pb(i: InputSpec) -> ppb.InputSpec:
    return ppb.InputSpec(repo=i.repo, ref=i.ref, method=i.method, incremental=i.incremental, run_empty=i.run_empty)


def input_spec_from_pb(m: ppb.InputSpec) -> InputSpec:
    return InputSpec(m.repo, m.ref, m.method, m.incremental or "none", m.run_empty)


def pipeline_spec_to_pb(s: PipelineSpec) -> ppb.PipelineSpec:
    return ppb.PipelineSpec(name=s.name, transform=transform_to_pb(s.transform),
                            inputs=[input_spec_to_pb(i) for i in s.inputs], parallelism=s.parallelism,
                            description=s.description)


def pipeline_spec_from_pb(m: ppb.PipelineSpec) -> PipelineSpec:
    return PipelineSpec(m.name, transform_from_pb(m.transform), tuple(input_spec_from_pb(i) for i in m.inputs),
                        m.parallelism, m.description)


def pipeline_to_pb(p: PipelineInfo) -> ppb.PipelineInfo:
    return ppb.PipelineInfo(spec=pipeline_spec_to_pb(p.spec), created=p.created, state=p.state, version=p.version,
                            processed=dict(p.processed), reprocess=p.reprocess, reason=p.reason,
                            failures=p.failures)


def pipeline_from_pb(m: ppb.PipelineInfo) -> PipelineInfo:
    return PipelineInfo(pipeline_spec_from_pb(m.spec), m.created, m.state, m.version,
                        tuple(sorted(m.processed.items())), m.reprocess, m.reason, m.failures)


def job_spec_from_pb(m: ppb.CreateJobRequest) -> JobSpec:
    inputs = tuple(input_spec_from_pb(i) for i in m.inputs)
    return JobSpec(transform_from_pb(m.transform), inputs, m.parallelism, m.output_repo)


def job_to_pb(j: JobInfo) -> ppb.JobInfo:
    return ppb.JobInfo(
        id=j.id, transform=transform_to_pb(j.transform),
        inputs=[ppb.JobInput(repo=i.repo, commit=i.commit, method=i.method, shards=i.shards, since=i.since,
                             incremental=i.incremental) for i in j.inputs],
        parallelism=j.parallelism, output_repo=j.output_repo, output_branch=j.output_branch, pipeline=j.pipeline,
        state=j.state, started=j.started, finished=j.finished, prev_output=j.prev_output,
        output_commit=j.output_commit, error=j.error,
        shards=[ppb.ShardInfo(**dataclasses.asdict(s)) for s in j.shards],
        max_attempts=j.max_attempts, fresh_output=j.fresh_output,
    )


def job_from_pb(m: ppb.JobInfo) -> JobInfo:
    return JobInfo(
        id=m.id, transform=transform_from_pb(m.transform),
        inputs=tuple(JobInput(i.repo, i.commit, i.method, i.shards, i.since, i.incremental) for i in m.inputs),
        parallelism=m.parallelism, output_repo=m.output_repo, output_branch=m.output_branch, pipeline=m.pipeline,
        state=m.state, started=m.started, finished=m.finished, prev_output=m.prev_output,
        output_commit=m.output_commit, error=m.error,
        shards=tuple(ShardInfo(**{f.name: getattr(s, f.name) for f in dataclasses.fields(ShardInfo)})
                     for s in m.shards),
        max_attempts=m.max_attempts, fresh_output=m.fresh_output,
    )


def log_to_pb(line: LogLine) -> ppb.LogLine:
    return ppb.LogLine(job=line.job, shard=line.shard, time=line.time, stream=line.stream, text=line.text)


def log_from_pb(m: ppb.LogLine) -> LogLine:
    return LogLine(m.job, m.shard, m.time, m.stream, m.text)

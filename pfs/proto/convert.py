"""Conversions between the wire messages and pfs.core.model, used by the client and the servicers."""

from pfs.core.model import BranchInfo, ChunkRef, CommitInfo, CommitRef, FileInfo, FileWrite, RepoInfo
from pfs.proto import chunks_pb2 as cpb
from pfs.proto import pfs_pb2 as pb


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

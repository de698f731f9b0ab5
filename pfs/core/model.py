"""The model every layer speaks: repos, commits, branches, files and chunk references."""

from dataclasses import dataclass, field


@dataclass(frozen=True)
class ChunkRef:
    """A chunk of a file: the BLAKE3 address of its plain bytes, and their count."""

    address: bytes
    size: int


@dataclass(frozen=True)
class CommitRef:
    """A commit named by id, branch, or either with ^ / ~N for ancestors."""

    repo: str
    ref: str

    def __str__(self) -> str:
        return f"{self.repo}@{self.ref}"


@dataclass(frozen=True)
class RepoInfo:
    name: str
    description: str
    created: float
    size_bytes: int
    branches: tuple[str, ...] = ()


@dataclass(frozen=True)
class CommitInfo:
    repo: str
    id: str
    parent: str  # '' for the first commit
    branch: str
    started: float
    finished: float  # 0 while open
    size_bytes: int
    provenance: tuple[CommitRef, ...] = ()

    @property
    def is_finished(self) -> bool:
        return self.finished > 0


@dataclass(frozen=True)
class BranchInfo:
    name: str
    head: str


@dataclass(frozen=True)
class FileInfo:
    path: str
    is_dir: bool
    size_bytes: int
    commit: str
    chunks: tuple[ChunkRef, ...] = field(default=(), repr=False)


@dataclass(frozen=True)
class FileWrite:
    """One file recorded into an open commit: its chunks, appended or overwriting."""

    path: str
    chunks: tuple[ChunkRef, ...]
    overwrite: bool = False

"""The model every layer speaks: repos, commits, branches, files and chunk references."""

from collections.abc import Iterator
from dataclasses import dataclass, field
from enum import StrEnum

from pfs.core.errors import InvalidArgument

MAX_PARALLELISM = 1024  # workers of one job
DATUM_TRIES = 3  # tries at each shard of a pipeline's job, where its manifest gives no datum_tries (as in 1.x)
URL_READS = "url"  # the DirectRead kind of a store whose chunks clients fetch from the URLs LocateChunks gives
MAX_LOCATE = 10_000  # chunks per LocateChunks call: its answer (a URL each) stays a few MB


@dataclass(frozen=True, slots=True)
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

    @classmethod
    def parse(cls, text: str, separators: str = "@") -> "CommitRef":
        """A ref from REPO@REF (as the CLI takes it), cut at the first of SEPARATORS ('/@': REPO/REF too)."""
        cuts = [i for i in (text.find(s) for s in separators) if i >= 0]
        cut = min(cuts, default=-1)
        if cut <= 0 or cut == len(text) - 1:
            form = separators[0]
            raise InvalidArgument(f"invalid commit {text!r}: write it as REPO{form}BRANCH or REPO{form}COMMIT-ID")
        return cls(text[:cut], text[cut + 1:])


@dataclass(frozen=True)
class DirectRead:
    """How a client may read a server's chunks straight from its store: a KIND of store (a layout a client
    may know a reader for) at ROOT. Only an offer: a client without a reader for KIND reads through the server."""

    kind: str
    root: str


@dataclass(frozen=True)
class ChunkLocation:
    """Where a client may fetch a chunk's stored bytes (its zstd frame) without the server: LENGTH bytes from
    OFFSET of an object, in an HTTP GET of URL with "Range: bytes=RANGE_START-(RANGE_END - 1)". URL is a
    short-lived URL signed for that range only, which holds this chunk and others asked for along with it,
    each whole: the chunks of other locate calls (other repos') in the same object stay out of reach."""

    url: str
    offset: int
    length: int
    range_start: int
    range_end: int


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
    one_off: bool = False  # started by a write for itself (put-file): others wait their turn rather than join it
    description: str = ""  # what it holds, as its maker said (start-commit -m, finish-commit -m)

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


# Files one call records at most (PutFiles, PutShardFiles): a client's upload segment. The server refuses more
# before it reads them: each costs it about a KiB of objects, and a call of millions took gigabytes.
MAX_WRITES = 10_000
# The levels of those files' paths together (a/b/c: 3), at most: each level is a directory the call may make,
# and 10,000 files 256 levels deep, each in directories of its own, held the metadata for 52 s
MAX_WRITE_LEVELS = 16 * MAX_WRITES


def levels(path: str) -> int:
    """The levels of a path in a commit ('a/b/c': 3), as MAX_WRITE_LEVELS counts them."""
    return path.count("/") + 1


def write_calls(writes: list["FileWrite"]) -> Iterator[list["FileWrite"]]:
    """WRITES in runs that one call records: at most MAX_WRITES files and MAX_WRITE_LEVELS levels each."""
    run: list[FileWrite] = []
    used = 0
    for w in writes:
        if len(run) == MAX_WRITES or used + levels(w.path) > MAX_WRITE_LEVELS:
            yield run
            run, used = [], 0
        run.append(w)
        used += levels(w.path)
    if run:
        yield run


@dataclass(frozen=True)
class FileWrite:
    """One file recorded into an open commit: its chunks, appended or overwriting. With DIRECTORY, a directory
    instead (no chunks): made if it is not there, kept as it is if it is, and left even once empty, so empty
    directories are stored as they are."""

    path: str
    chunks: tuple[ChunkRef, ...]
    overwrite: bool = False
    directory: bool = False
    split: bool = False  # PATH a directory of a split file: the write is its next file (see FileWrite in protos)


@dataclass(frozen=True)
class Resources:
    """What a worker asks its cluster for (requests) or may use at most (limits), as 1.x's resource_requests and
    resource_limits said: CPU cores, memory and local disk as Kubernetes quantities ('0.5', '500m', '2Gi'; '' for
    none), and GPU devices of a kind (an extended resource such as nvidia.com/gpu)."""

    cpu: str = ""
    memory: str = ""
    gpu: int = 0
    gpu_type: str = ""
    disk: str = ""


@dataclass(frozen=True)
class Transform:
    """What a job's workers run: CMD exec'd with STDIN lines fed to it, ENV added to its environment; on a cluster,
    each worker with RESOURCE_REQUESTS and RESOURCE_LIMITS (the manifest's top-level fields)."""

    cmd: tuple[str, ...]
    stdin: tuple[str, ...] = ()
    env: tuple[tuple[str, str], ...] = ()
    accept_return_code: tuple[int, ...] = ()
    image: str = ""
    overwrite: bool = False  # outputs replace the files of the previous output instead of appending
    user: str = ""  # who CMD runs as: a name or uid, and :group (1.x's field); '' for the worker's own user
    resource_requests: Resources = Resources()
    resource_limits: Resources = Resources()

    def accepts(self, code: int) -> bool:
        return code == 0 or code in self.accept_return_code


@dataclass(frozen=True)
class JobInput:
    """One input of a job: a finished commit, how it is split (method) and into how many parts (shards).

    With SINCE (an earlier commit of the repo) a worker sees only what changed after it: the data
    added (incremental "diff") or whole files that changed ("full").
    """

    repo: str
    commit: str
    method: str = "map"
    shards: int = 1
    since: str = ""
    incremental: str = "none"  # none | diff | full


@dataclass(frozen=True)
class InputSpec:
    """An input as a user names it: a repo, a commit id or branch (a pipeline's: the branch it follows), a method."""

    repo: str
    ref: str = "master"
    method: str = "map"
    incremental: str = "none"  # none | diff | full: what a pipeline's next job sees of this input
    run_empty: bool = False  # a pipeline runs a job even when this input has nothing new


@dataclass(frozen=True)
class ParallelismSpec:
    """How many workers a job asks for: CONSTANT, or (COEFFICIENT above 0) that times the runner's capacity
    (its cores on one machine, its nodes in a cluster), which only the server knows."""

    constant: int = 1
    coefficient: float = 0.0

    def resolve(self, capacity: int) -> int:
        """The number of workers on a runner of CAPACITY."""
        if self.coefficient:
            return min(MAX_PARALLELISM, max(1, round(self.coefficient * capacity)))
        return self.constant

    def __str__(self) -> str:
        if self.coefficient:
            return f"coefficient {self.coefficient:g} (of the runner's capacity)"
        return str(self.constant)


@dataclass(frozen=True)
class JobSpec:
    """What `pfs create-job` asks for; the server resolves the refs and shards the inputs."""

    transform: Transform
    inputs: tuple[InputSpec, ...]
    parallelism: ParallelismSpec = ParallelismSpec()
    output_repo: str = ""  # default: job-<first 8 digits of the job id>


@dataclass(frozen=True)
class PipelineSpec:
    """A pipeline manifest: a job made for every new finished commit of its inputs, output in repo NAME."""

    name: str
    transform: Transform
    inputs: tuple[InputSpec, ...]
    parallelism: ParallelismSpec = ParallelismSpec()
    description: str = ""
    job_timeout: float = 0.0  # seconds a job may run before it is stopped and fails (0: no limit)
    datum_timeout: float = 0.0  # seconds each try at a shard may run its command before it is killed (0: no limit)
    datum_tries: int = 0  # tries at each shard before it fails its job (0: DATUM_TRIES)


class PipelineState(StrEnum):
    """Whether a pipeline makes jobs for new input commits."""

    RUNNING = "running"
    STOPPED = "stopped"


@dataclass(frozen=True)
class PipelineInfo:
    spec: PipelineSpec
    created: float
    state: PipelineState = PipelineState.RUNNING
    version: int = 1  # one more at each update
    # the newest commit of each input that a job was made for (or skipped: nothing new and not run_empty)
    processed: tuple[tuple[str, str], ...] = ()
    reprocess: bool = False  # the next job sees every input whole and starts its output afresh
    reason: str = ""  # why the pipeline's controller failed last ('' once a try goes well); it retries
    failures: int = 0  # its failed tries in a row, each after a longer wait
    controller: str = ""  # the server running its controller now (holding its lease); '' while none does
    creator: str = ""  # whom the token that made it stands for ('': the cluster's root, or a server without tokens)

    @property
    def name(self) -> str:
        return self.spec.name

    def made(self, job: "JobInfo") -> bool:
        """Whether JOB is this pipeline's, not one of a pipeline of its name deleted before it was made (whose jobs
        stay, and are listed by that name)."""
        return job.started >= self.created


class ShardState(StrEnum):
    """Where one worker's part of a job is: not yet taken, taken by a worker, or reported."""

    PENDING = "pending"
    RUNNING = "running"
    SUCCESS = "success"
    FAILURE = "failure"


@dataclass(frozen=True)
class ShardInfo:
    """One worker's part of a job."""

    index: int
    state: ShardState = ShardState.PENDING
    attempts: int = 0
    started: float = 0.0
    finished: float = 0.0
    exit_code: int = 0
    error: str = ""
    bytes_in: int = 0  # plain bytes of its inputs' shards
    bytes_out: int = 0  # plain bytes it wrote to /pfs/out
    bytes_sent: int = 0  # compressed bytes it had to upload (the rest the server held)
    mounted: float = 0.0  # when its worker had its inputs mounted and started the command (the worker's clock)
    uploaded: float = 0.0  # when its worker had uploaded its output (the worker's clock)
    server: str = ""  # the server whose runner started this try's worker ('' : a worker started otherwise)


class JobState(StrEnum):
    """Where a job is; SKIPPED: a pipeline's inputs had nothing new and none of them is run_empty."""

    RUNNING = "running"
    SUCCESS = "success"
    FAILURE = "failure"
    SKIPPED = "skipped"


@dataclass(frozen=True)
class JobInfo:
    id: str
    transform: Transform
    inputs: tuple[JobInput, ...]
    parallelism: int
    output_repo: str
    output_branch: str = "master"
    pipeline: str = ""
    state: JobState = JobState.RUNNING
    started: float = 0.0
    finished: float = 0.0
    prev_output: str = ""  # the output branch's head when the job started ('' for none)
    output_commit: str = ""  # set when every shard has succeeded
    error: str = ""
    shards: tuple[ShardInfo, ...] = ()
    max_attempts: int = 1  # a shard that fails on this try (or a later one) fails the job
    fresh_output: bool = True  # False: the output builds on the previous output (incremental inputs)
    timeout: float = 0.0  # seconds from its start after which it is stopped and fails (0: no limit)
    datum_timeout: float = 0.0  # seconds a worker lets its command run before it kills it (0: no limit)

    @property
    def is_done(self) -> bool:
        return self.state in (JobState.SUCCESS, JobState.FAILURE, JobState.SKIPPED)


LOG_STREAMS = ("stdout", "stderr", "shim")  # the command's, and the worker's own
MAX_LOG_TEXT = 64 << 10  # characters of a log line; a worker cuts longer ones


@dataclass(frozen=True)
class LogLine:
    job: str
    shard: int
    time: float
    stream: str  # one of LOG_STREAMS
    text: str


@dataclass(frozen=True)
class Progress:
    """How far a long call (garbage collection, the check) has come: a phase, and a count."""

    phase: str
    done: int
    total: int  # 0: not known yet


@dataclass(frozen=True)
class GarbageCollected:
    """What a garbage collection freed (or, in a dry run, would free)."""

    dry_run: bool
    objects: int
    object_bytes: int
    chunks: int
    bytes: int  # room in the chunk store: chunks freed, packs deleted less those written in their place
    packs: int  # deleted
    packs_rewritten: int
    live_objects: int  # what the commits and staged outputs reach
    live_chunks: int
    seconds: float


@dataclass(frozen=True)
class CheckProblem:
    """Something wrong that a commit reaches: a missing object or chunk, or a chunk whose bytes are wrong."""

    repo: str
    commit: str
    path: str
    what: str


@dataclass(frozen=True)
class CheckSummary:
    commits: int
    objects: int
    chunks: int
    bytes_read: int  # compressed, when the data was read
    problems: int
    seconds: float

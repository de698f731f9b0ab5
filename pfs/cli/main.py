"""The `pfs` command: Pachyderm 1.x verbs over a pfs server.

Every failure prints one line (`pfs: ...`) and exits non-zero: 1 for an
error from the store or the network, 2 for a usage error.
"""

import argparse
import contextlib
import io
import os
import pathlib
import sys
from collections.abc import Iterable, Iterator
from typing import NoReturn

import pfs
from pfs.cli import deploy as deploy_cli
from pfs.cli import downloads, forms, globs, jobs, output, pipelines, split, tokens
from pfs.cli.progress import drawn, phases, progress
from pfs.cli.sources import all_sources, listed_sources
from pfs.client import Client, default_address
from pfs.client.auth import read_token
from pfs.client.upload import into_commit
from pfs.core import kube, mount_inputs, names, paths, ready, refs, splits
from pfs.core.chunking import DELIMITERS
from pfs.core.errors import AlreadyExists, FailedPrecondition, InvalidArgument, NotFound, PfsError, Unavailable
from pfs.core.memory import keep_freed_memory
from pfs.core.model import CheckProblem, CommitInfo, CommitRef, FileInfo, FileWrite, Progress, write_calls
from pfs.core.shard import METHODS, Shard
from pfs.deploy import manifests

INT64_MAX = 2**63 - 1  # the wire's int64
AT_HELP = "or REPO@REF in one word (REPO@REF:PATH where a PATH follows), as pachctl 1.9 wrote it"
COMMIT_WAIT = 60.0  # seconds a write that starts a commit waits its turn at a branch with one open


def cmd_version(args, client):
    if args.client_only:
        print(pfs.__version__)
        return
    print(f"{'COMPONENT':<12}VERSION\n{'pfs':<12}{pfs.__version__}", flush=True)  # pachctl's table: shown first,
    print(f"{'server':<12}{client.server_version}")  # as what is known without a server


def cmd_create_repo(args, client):
    client.create_repo(args.repo, args.description)


def cmd_list_repo(args, client):
    if args.raw:
        return output.raw_each(client.list_repos())
    output.table(
        ("NAME", "CREATED", "SIZE", "DESCRIPTION"),
        ((r.name, output.ago(r.created), output.size(r.size_bytes), output.first_line(r.description))
         for r in client.list_repos()),
    )


def cmd_inspect_repo(args, client):
    r = client.inspect_repo(args.repo)
    if args.raw:
        return output.raw(r)
    output.fields([
        ("Name", r.name),
        ("Description", r.description),
        ("Created", output.ago(r.created)),
        ("Size", output.size(r.size_bytes)),
        ("Branches", ", ".join(r.branches)),
    ])


def cmd_delete_repo(args, client):
    if args.all == bool(args.repo):
        raise InvalidArgument("give a REPO, or --all for every repo")
    if args.all:  # each on its own, as delete-pipeline --all
        failed: list[str] = []
        pipelines.delete_each(lambda name: client.delete_repo(name, args.force), [r.name for r in client.list_repos()],
                              failed)
        if failed:
            raise FailedPrecondition("; ".join(failed))
    else:
        client.delete_repo(args.repo, args.force)
    if args.gc:
        _garbage_collect(client, dry_run=False)


def cmd_start_commit(args, client):
    print(client.start_commit(args.repo, args.branch or "", args.parent or "", description=args.message).id)


def cmd_finish_commit(args, client):
    client.finish_commit(CommitRef(args.repo, args.commit), args.message)


def _commit_rows(commits: list[CommitInfo]):
    for c in commits:
        took = output.duration(c.finished - c.started) if c.is_finished else "-"
        yield (c.repo, c.branch, c.id, c.parent or "<none>", output.ago(c.started), took, output.size(c.size_bytes),
               output.first_line(c.description))


COMMIT_HEADER = ("REPO", "BRANCH", "COMMIT", "PARENT", "STARTED", "DURATION", "SIZE", "DESCRIPTION")


def cmd_list_commit(args, client):
    if not 0 <= args.number <= INT64_MAX:
        raise InvalidArgument(f"list-commit -n: expected 0 (no limit) to {INT64_MAX} commits, got {args.number}")
    repo, branch = args.repo, args.branch or ""
    if ("/" in repo or "@" in repo) and not branch:  # REPO/BRANCH, as flush-commit takes it, or REPO@BRANCH
        named = CommitRef.parse(repo, "/@")
        repo, branch = named.repo, named.ref
    commits = client.list_commits(repo, branch, args.number)
    if args.raw:
        return output.raw_each(commits)
    output.table(COMMIT_HEADER, _commit_rows(commits))


def cmd_inspect_commit(args, client):
    c = client.inspect_commit(CommitRef(args.repo, args.commit))
    if args.raw:
        return output.raw(c)
    output.fields([
        ("Commit", f"{c.repo}@{c.id}"),
        *([("Description", c.description)] if c.description else []),
        ("Branch", c.branch),
        ("Parent", c.parent or "<none>"),
        ("Started", output.stamp(c.started)),
        ("Finished", output.stamp(c.finished) if c.is_finished else "<open>"),
        ("Size", output.size(c.size_bytes)),
        ("Provenance", ", ".join(f"{p.repo}@{p.ref}" for p in c.provenance) or "<none>"),
    ])


def cmd_delete_commit(args, client):
    client.delete_commit(CommitRef(args.repo, args.commit))
    if args.gc:
        _garbage_collect(client, dry_run=False)


def cmd_garbage_collect(args, client):
    _garbage_collect(client, args.dry_run)


def _garbage_collect(client, dry_run: bool) -> None:
    """Collects, with a progress bar on a terminal, and prints what was freed."""
    with phases("garbage-collect") as show:
        for item in client.garbage_collect(dry_run):
            if isinstance(item, Progress):
                show(item.phase, item.done, item.total)
            else:
                r = item
    young = "" if r.objects or r.chunks else (" (what became unreachable less than the server's grace ago, "
                                              "--gc-grace, 1 h by default, is kept for a later collection)")
    print(f"{'would free' if r.dry_run else 'freed'} {r.objects} objects ({output.size(r.object_bytes)}), "
          f"{r.chunks} chunks and {r.packs} packs ({output.size(r.bytes)}), rewrote {r.packs_rewritten} packs; "
          f"kept {r.live_objects} objects and {r.live_chunks} chunks in use; took {r.seconds:.1f} s{young}")


def cmd_check(args, client):
    with phases("check") as show:
        for item in client.check(args.read_data):
            if isinstance(item, Progress):
                show(item.phase, item.done, item.total)
            elif isinstance(item, CheckProblem):
                print(f"{item.repo} {item.commit} {item.path}: {item.what}", flush=True)
            else:
                r = item
    read = f", {output.size(r.bytes_read)} read" if args.read_data else ""
    summary = (f"checked {r.commits} commits, {r.objects} objects and {r.chunks} chunks{read} in {r.seconds:.1f} s: "
               f"{r.problems or 'no'} problem{'s' if r.problems != 1 else ''}")
    if r.problems:
        print(summary, file=sys.stderr)
        sys.exit(1)
    print(summary)


def cmd_subscribe_commit(args, client):
    for c in client.subscribe_commits(args.repo, args.branch, args.new):
        print(c.id, flush=True)


def cmd_list_branch(args, client):
    output.table(("BRANCH", "HEAD"), ((b.name, b.head) for b in client.list_branches(args.repo)))


def cmd_set_branch(args, client):
    client.set_branch(CommitRef(args.repo, args.commit), args.branch)


def cmd_create_branch(args, client):
    """pachctl 1.7's name for set-branch; without --head, as its empty branch: pfs has none, and makes a branch
    with its first commit, which a write to it starts (put-file REPO BRANCH ...)."""
    if args.commit:
        return cmd_set_branch(args, client)
    names.check_branch(args.branch)
    head = {b.name: b.head for b in client.list_branches(args.repo)}.get(args.branch)  # the repo is there too
    if head:
        raise AlreadyExists(f"branch {args.branch} of {args.repo} exists (its head is {head}); give --head COMMIT to "
                            "point it at another commit")
    print(f"branch {args.branch} of {args.repo} has no commit yet: it is made with its first, which a write to it "
          f"starts (pfs put-file {args.repo} {args.branch} ...)", file=sys.stderr)


def _seconds(text: str) -> float:
    try:
        seconds = float(text)
    except ValueError:
        seconds = -1.0
    if not 0 <= seconds < float("inf"):
        raise argparse.ArgumentTypeError(f"{text!r} is not a number of seconds")
    return seconds


def _count(text: str) -> int:
    try:
        count = int(text)
    except ValueError:
        count = -1
    if not 0 <= count <= INT64_MAX:
        raise argparse.ArgumentTypeError(f"{text!r} is not a count (0 to {INT64_MAX})")
    return count


def cmd_delete_branch(args, client):
    client.delete_branch(args.repo, args.branch, args.force)


def cmd_put_file(args, client):
    if args.file and args.input_file:
        raise InvalidArgument("put-file takes its sources from -f or from a list (-i), not both")
    if not (args.file or args.input_file) and sys.stdin.isatty():  # pachctl's habit is stdin without -f
        raise InvalidArgument("put-file: no -f FILE given, and stdin is a terminal: give -f FILE, or pipe the data "
                              "in (-f - reads a terminal too)")
    if (args.target_file_datums or args.target_file_bytes) and not args.split:
        raise InvalidArgument("--target-file-datums and --target-file-bytes need --split line or --split json")
    if args.split and args.recursive:
        raise InvalidArgument("--split cuts one file into many; it takes no directory tree (-r)")
    origins = listed_sources(args.input_file) if args.input_file else args.file or ["-"]
    if args.split and len(origins) > 1:
        raise InvalidArgument("--split cuts one file into many; put one source at a time")
    todo = all_sources(origins, args.path, args.recursive, sized=drawn())  # sizes: the bar's total
    known = [s.size for s in todo]
    total = None if None in known else sum(known)
    with _writing(client, CommitRef(args.repo, args.ref), args.wait, own=args.commit) as ref:
        if args.split and args.overwrite:  # the files a split put there before go first
            with contextlib.suppress(NotFound):
                client.delete_file(ref, todo[0].dest)
        with progress(total, "put-file") as advance:
            with into_commit(client, ref, delimiter=args.delimiter, on_bytes=advance) as up:
                for src in todo:
                    if src.directory:
                        up.put_directory(src.dest)
                        continue
                    with src.open() as stream:
                        if not args.split:
                            up.put(src.dest, stream, overwrite=args.overwrite)
                            continue
                        for piece in split.pieces(stream, args.split, args.target_file_datums, args.target_file_bytes):
                            up.put(src.dest, io.BytesIO(piece), split=True)


@contextlib.contextmanager
def _writing(client: Client, ref: CommitRef, wait: float, own: bool = False) -> Iterator[CommitRef]:
    """The open commit to write into: REF when it is open (or names a branch whose head is, unless another write
    started it for itself), else, where REF names a branch, a new commit on it, finished once the writes are done,
    as pachctl (1.7.2 on) did without -c; OWN: a new one in any case (put-file -c). A commit started here is one
    other writes wait for rather than join, and is dropped if the writes fail, so the branch is as it was. A finished
    commit named by its id or as an ancestor (master^) is refused before anything is read or sent."""
    started = own or _needs_commit(client, ref)
    asked = ref
    if started:
        ref = CommitRef(ref.repo, client.start_commit(ref.repo, ref.ref, wait=wait, one_off=True).id)
    try:
        yield ref
        if started:
            client.finish_commit(ref)
    except BaseException as err:
        if started:  # the commit is ours alone: drop it unless it got finished
            try:
                dropped = not client.inspect_commit(ref).is_finished
                if dropped:
                    client.delete_commit(ref)
            except PfsError as why:  # the server that failed the put cannot drop it either: say what is left, how to go
                if isinstance(err, PfsError):
                    left = (f"{err}; commit {ref.ref} of {ref.repo} is left open, not finished: delete it "
                            f"(pfs delete-commit {ref.repo} {ref.ref}) once the server "
                            + ("answers" if isinstance(why, Unavailable) else "can"))
                    raise type(err)(left) from None
            else:
                if dropped and isinstance(err, PfsError):  # said of what was asked for, not of a commit now gone
                    raise type(err)(str(err).replace(str(ref), str(asked))) from None
        raise


def _needs_commit(client: Client, ref: CommitRef) -> bool:
    """Whether a write to REF starts a commit of its own: where REF names a branch whose head is finished, or one
    another write started for itself (it waits its turn), or a branch not there yet; not for an open commit that
    start-commit made; refused: a finished commit named by its id or as an ancestor."""
    try:
        commit = client.inspect_commit(ref)
    except NotFound:
        client.inspect_repo(ref.repo)  # a repo that is not there is said as such
        if not names.is_branch(ref.ref):
            if names.is_commit_id(ref.ref) or refs.parse(ref.ref)[1]:  # master^, master~2
                raise
            names.check_branch(ref.ref)  # feature/x: said to be no name a branch can have
        return True
    if commit.one_off and commit.branch == ref.ref:
        return True
    if not commit.is_finished or commit.branch == ref.ref:
        return commit.is_finished
    raise FailedPrecondition(f"commit {commit.id} of {ref.repo!r} is finished and cannot change: write into a branch "
                             f"(pfs put-file {ref.repo} {commit.branch or 'BRANCH'} ...), which gets a new commit for "
                             f"it if its head is finished")


def cmd_copy_file(args, client):
    """Records the source's chunks at the destination: no byte is read or sent (pachctl's copy-file)."""
    src = CommitRef(args.src_repo, args.src_ref)
    top = client.inspect_file(src, args.src_path)
    below = client.list_files(src, top.path, with_chunks=True, recursive=True) if top.is_dir else ()
    dest = paths.normalize(args.dst_path)
    writes = [FileWrite(paths.join(dest, f.path.removeprefix(top.path).lstrip("/")), f.chunks,
                        args.overwrite and not f.is_dir, f.is_dir) for f in (top, *below)]
    with _writing(client, CommitRef(args.dst_repo, args.dst_ref), COMMIT_WAIT) as dst:
        for run in write_calls([w for w in writes if w.path or not w.directory]):  # the root is there already
            client.put_files(dst, run)


def cmd_get_file(args, client):
    ref = CommitRef(args.repo, args.ref)
    info = client.inspect_file(ref, args.path)
    if info.is_dir and not args.recursive:
        raise InvalidArgument(f"{args.path or '/'!r} is a directory; fetch its tree with -r -o DIR, "
                              "or see what it holds with list-file")
    with progress(info.size_bytes, "get-file") as advance:
        if info.is_dir:
            downloads.get_tree(client, ref, info, args.output, advance)
        else:
            downloads.get_file(client, info, args.output, advance)


def cmd_list_file(args, client):
    ref = CommitRef(args.repo, args.ref)
    matched = list(globs.glob(client, ref, args.path)) if globs.is_pattern(args.path or "") else []  # pachctl 1.10
    _file_table(args, matched or client.list_files(ref, args.path or ""))  # a name with [ ] * ?, if none matched


def cmd_glob_file(args, client):
    _file_table(args, globs.glob(client, CommitRef(args.repo, args.ref), args.path))


def _file_table(args, files: Iterable[FileInfo]) -> None:
    if args.raw:
        return output.raw_each(files)
    output.table(("NAME", "TYPE", "SIZE"), ((f.path, "dir" if f.is_dir else "file", output.size(f.size_bytes))
                                            for f in files))


def cmd_inspect_file(args, client):
    f = client.inspect_file(CommitRef(args.repo, args.ref), args.path)
    if args.raw:
        return output.raw(f)
    output.fields([
        ("Path", f.path),
        ("Type", "dir" if f.is_dir else "file"),
        ("Size", output.size(f.size_bytes)),
        ("Commit", f.commit),
        *([] if f.is_dir else [("Chunks", len(f.chunks))]),
    ])


def cmd_delete_file(args, client):
    if not args.path:  # an unset shell variable, most likely: the commit's whole tree is named as /
        raise InvalidArgument("no PATH given (''): to delete everything in the commit, name / itself")
    if args.path.strip("/") and not paths.normalize(args.path):  # '.', './': a slip, as likely
        raise InvalidArgument(f"PATH {args.path!r} is the whole commit: to delete everything in it, name / itself")
    with _writing(client, CommitRef(args.repo, args.ref), COMMIT_WAIT) as ref:
        client.delete_file(ref, args.path)


def cmd_mount(args, client):
    from pfs.fuse.mount import serve  # here: pyfuse3 and trio load only for mounts
    from pfs.vfs.direct import direct_reader
    from pfs.vfs.tree import RepoTree, View

    view = View(Shard.parse(args.shard, args.method), args.since or "", args.incremental)
    if args.since and not args.commit:
        raise InvalidArgument("--since needs --commit: it shows what one commit changed")
    if args.inputs and (args.commit or args.shard != "0/1" or args.method != "global"):
        raise InvalidArgument("--inputs names each input's commit and shard: give no --commit, --shard or --method")
    commit = _finished(client, CommitRef.parse(args.commit)) if args.commit else None
    if args.since:  # refused here, not shown as an empty mount
        client.inspect_commit(CommitRef(commit.repo, args.since))
    inputs, token = None, None
    if args.inputs:
        with open(args.inputs) if args.inputs != "-" else contextlib.nullcontext(sys.stdin) as f:
            listed, token = mount_inputs.loads(f.readline())  # a worker's mount waits here for its job
    with Client(client.address, token) if token else contextlib.nullcontext(client) as client:
        if args.inputs:
            inputs = {i.name: (_finished(client, i.commit), View(i.shard, i.since, i.incremental)) for i in listed}
        direct = None if args.no_direct else direct_reader(client.direct_read, client.locate_chunks)
        tree = RepoTree(client, view, direct=direct, commit=commit, inputs=inputs)
        shown = f"{len(inputs)} inputs" if inputs is not None else view.shard

        def mounted() -> None:
            print(f"pfs mounted at {args.mountpoint} ({shown}"
                  f"{', chunks read from ' + direct.root if direct else ''}); Ctrl-C unmounts", file=sys.stderr,
                  flush=True)
            ready.notify(args.ready_fd, mountpoint=os.path.abspath(args.mountpoint))

        serve(tree, args.mountpoint, on_mounted=mounted, allow_other=args.allow_other, streaming=bool(args.inputs))


def _finished(client: Client, ref: CommitRef) -> CommitInfo:
    """The commit REF names, which must be finished to be mounted alone."""
    commit = client.inspect_commit(ref)
    if not commit.is_finished:
        raise FailedPrecondition(f"commit {commit.id} of {commit.repo!r} is still open; only finished "
                                 "commits can be mounted alone")
    return commit


def cmd_unmount(args, client):
    from pfs.fuse.mount import mounts, unmount

    if args.all == bool(args.mountpoint):
        raise InvalidArgument("give a mount point DIR, or -a for every pfs mount")
    if not args.all:
        unmount(args.mountpoint)
        return
    failed = []
    for mountpoint in reversed(mounts()):  # the newest first: it may be inside another
        try:
            unmount(mountpoint)
            print(f"unmounted {mountpoint}")
        except PfsError as err:
            failed.append(str(err))
    if failed:
        raise FailedPrecondition("; ".join(failed))


def _namespace(text: str) -> str:
    try:
        return kube.check_namespace(text)
    except FailedPrecondition as err:
        raise argparse.ArgumentTypeError(str(err)) from None


class _Verb(argparse.ArgumentParser):
    """A verb's parser: its options may also come between its positionals (`put-file REPO REF -r -f DIR PATH`), as
    pachctl's flags may go anywhere; argparse alone leaves a PATH after options unrecognized. The words after a `--`
    are positionals whatever they look like (`put-file r master -f x -- -name`)."""

    _intermixing = False

    def parse_known_args(self, args=None, namespace=None):
        # parse_known_intermixed_args's own calls, and verbs of verbs (auth, deploy), which it does not take
        if self._intermixing or self._subparsers is not None:
            return super().parse_known_args(args, namespace)
        args = list(args or ())  # a verb's words, as the command's parser hands them over
        stand_ins = {}  # intermixed parsing drops a `--`: the words after it go through as stand-ins no option has
        if "--" in args:
            cut = args.index("--")
            stand_ins = {f"\0{i}": word for i, word in enumerate(args[cut + 1:])}
            args = [*args[:cut], *stand_ins]
        self._intermixing = True
        try:
            namespace, extras = self.parse_known_intermixed_args(args, namespace)
        finally:
            self._intermixing = False
        for name, value in vars(namespace).items():
            if isinstance(value, str) and value in stand_ins:
                setattr(namespace, name, stand_ins[value])
            elif isinstance(value, list):
                setattr(namespace, name, [stand_ins.get(v, v) if isinstance(v, str) else v for v in value])
        return namespace, [stand_ins.get(e, e) for e in extras]


class _Pfs(argparse.ArgumentParser):
    """The `pfs` command's parser: a verb may be written as two words, as pachctl 1.9 wrote them (`list repo`)."""

    verbs: dict[str, argparse.ArgumentParser]  # by name, set once they are made

    def parse_known_args(self, args=None, namespace=None):
        return super().parse_known_args(forms.joined_verb(sys.argv[1:] if args is None else args, self.verbs),
                                         namespace)


def parser() -> argparse.ArgumentParser:
    common = argparse.ArgumentParser(add_help=False)
    common.add_argument("--address", default=argparse.SUPPRESS,
                        help=f"the server, host:port, or the servers of a cluster, comma-separated: the next is "
                             f"used when one cannot be reached; grpcs://... speaks TLS (default $PFS_ADDRESS, "
                             f"pachctl's $PACHD_ADDRESS, or {default_address()})")
    common.add_argument("--tls-ca", default=argparse.SUPPRESS, metavar="FILE",
                        help="speak TLS, trusting this CA's certificate (PEM) for the server's (default $PFS_TLS_CA; "
                             "with a grpcs:// address and neither, the system's roots)")
    common.add_argument("--token-file", type=pathlib.Path, default=argparse.SUPPRESS, metavar="FILE",
                        help="the file holding the server's token, its DATA_DIR/token (default $PFS_TOKEN, "
                             "$PFS_TOKEN_FILE, or the token of $PFS_DATA_DIR or ~/.pfs/data)")
    p = _Pfs(prog="pfs", parents=[common],
             description="pfs: versioned data in repos and commits (Pachyderm 1.x verbs).")
    sub = p.add_subparsers(dest="command", metavar="COMMAND", required=True, parser_class=_Verb)
    p.verbs = sub.choices

    def verb(name, fn, help_, *arguments, under=sub, at=False, aliases=()):
        """A verb; AT: its REPO (and a second repo, as copy-file's) may be written REPO@REF[:PATH] (pachctl 1.9)."""
        s = under.add_parser(name, parents=[common], help=help_, description=help_, aliases=aliases)
        dests, metavars, needed = [], [], 0
        for flags, kwargs in arguments:
            if at and not flags[0].startswith("-"):  # a positional: optional to argparse, counted in Slots
                dests.append(flags[0])
                metavars.append(kwargs["metavar"])
                needed = needed if "nargs" in kwargs else len(dests)
                kwargs = {"help": AT_HELP, **kwargs} if flags[0].endswith("repo") else kwargs
                kwargs = {**kwargs, "nargs": "?"}
            s.add_argument(*flags, **kwargs)
        slots = forms.Slots(tuple(dests), tuple(metavars), needed, s) if at else None
        if slots:
            s.usage = slots.usage()
        s.set_defaults(fn=fn, slots=slots, usage_of=s)
        return s

    def a(*flags, **kwargs):
        return flags, kwargs

    repo = a("repo", metavar="REPO")
    ref = a("ref", metavar="REF", help="a branch name or commit id (branch^ and branch~N name ancestors)")
    raw = a("--raw", action="store_true", help="print JSON")
    message = a("-m", "--message", "--description", dest="message", default="", metavar="TEXT",
                help="what the commit holds, shown by list-commit and inspect-commit (finish-commit's replaces "
                     "start-commit's)")

    sub.add_parser("server", help="run a pfs server (see `pfs server --help`)", add_help=False)
    verb("version", cmd_version, "print the versions of this client and of its server",
         a("--client-only", action="store_true", help="print only the client's version, asking no server"))
    verb("create-repo", cmd_create_repo, "create a repo", repo, a("-d", "--description", default=""))
    verb("list-repo", cmd_list_repo, "list repos", raw)
    verb("inspect-repo", cmd_inspect_repo, "show a repo", repo, raw)
    gc = a("--gc", action="store_true", help="then collect the garbage (pfs garbage-collect; the root's command)")
    verb("delete-repo", cmd_delete_repo, "delete a repo, all its commits and the jobs that wrote them",
         a("repo", metavar="REPO", nargs="?"), gc,
         a("-f", "--force", action="store_true", help="delete it though pipelines read it (they make no job until "
           "it is back)"),
         a("-a", "--all", action="store_true", help="every repo (each one refused is said; the others are deleted; a "
           "pipeline's output goes with its pipeline: pfs delete-all)"))
    verb("start-commit", cmd_start_commit, "start a commit on a branch (default master); prints its id", repo,
         a("branch", metavar="BRANCH", nargs="?"),
         a("-p", "--parent", help="the parent commit (default: the branch head)"), message, at=True)
    verb("finish-commit", cmd_finish_commit, "finish a commit; it never changes again", repo,
         a("commit", metavar="COMMIT"), message, at=True)
    verb("list-commit", cmd_list_commit, "list commits, newest first", repo,
         a("branch", metavar="BRANCH", nargs="?"), a("-n", "--number", type=int, default=0, help="at most N"), raw)
    verb("inspect-commit", cmd_inspect_commit, "show a commit", repo, a("commit", metavar="REF"), raw, at=True)
    verb("delete-commit", cmd_delete_commit, "delete a commit that has no children", repo,
         a("commit", metavar="REF"), gc, at=True)
    verb("garbage-collect", cmd_garbage_collect, "free the chunks, packs and objects no commit, staged job output "
         "or upload in flight can reach (the root's command)",
         a("--dry-run", action="store_true", help="say what would be freed; free nothing"))
    verb("check", cmd_check, "walk every commit's trees; list each missing object or chunk as `repo commit path: "
         "what` and exit 1, or print a summary (the root's command)",
         a("--read-data", action="store_true",
           help="read every chunk, and compare its bytes with its address (one found corrupt is set aside: put its "
                "data again to heal the commits that hold it)"))
    verb("subscribe-commit", cmd_subscribe_commit,
         "print finished commits on a branch, from the first, then each new one as it finishes", repo,
         a("branch", metavar="BRANCH"), a("--new", action="store_true", help="only commits finished from now on"),
         at=True)
    verb("list-branch", cmd_list_branch, "list a repo's branches", repo)
    verb("set-branch", cmd_set_branch, "point a branch at a commit", repo, a("commit", metavar="COMMIT"),
         a("branch", metavar="BRANCH"))
    verb("create-branch", cmd_create_branch, "point BRANCH at a commit, made if it is not there (pachctl 1.7's name "
         "for set-branch)", repo, a("branch", metavar="BRANCH"),
         a("--head", dest="commit", metavar="COMMIT", help="the commit (without it: pfs has no empty branches, and "
           "makes a new one with its first commit, which a write to it starts)"), at=True)
    verb("delete-branch", cmd_delete_branch, "delete a branch (its commits stay, by id)", repo,
         a("branch", metavar="BRANCH"),
         a("-f", "--force", action="store_true", help="delete it though pipelines read it (they make no job until it "
           "is back)"), at=True)
    verb("put-file", cmd_put_file, "put a file (appending to an existing one unless -o)", repo, ref,
         a("path", metavar="PATH", nargs="?", help="where in the commit (default: named after the source)"),
         a("-f", "--file", action="append",
           help="a local file or directory, an http(s) URL, or - for stdin (the default, as pachctl's); several "
                "-f put each named as given, below PATH where one is given"),
         a("-i", "--input-file", metavar="FILE",
           help="put the files and URLs FILE lists, one a line, as several -f (FILE: a path, - for stdin, or a URL)"),
         a("-r", "--recursive", action="store_true", help="put a directory tree"),
         a("-c", "--commit", action="store_true", help="start and finish a commit on branch REF around it, even "
           "where the branch has one open (without -c the files go into that one; where it has none, put-file "
           "starts one and finishes it itself)"),
         a("--wait", type=_seconds, default=COMMIT_WAIT, metavar="SECONDS",
           help="when put-file starts a commit (-c, or a branch whose head is finished): how long to wait for "
                "one open on the branch to finish first (default "
                f"{COMMIT_WAIT:g}; 0: fail at once)"),
         a("-o", "--overwrite", action="store_true", help="replace the file instead of appending"),
         a("--delimiter", choices=DELIMITERS, default="line",
           help="cut chunks only at line ends (line, the default) or anywhere (none)"),
         a("--split", choices=split.KINDS, help="put the file as a directory PATH of many, named by their index "
           f"({splits.name(0)}, ...), cut between lines or between JSON values (pachctl's --split); put again, the "
           "new ones follow those there"),
         a("--target-file-datums", type=_count, default=0, metavar="N",
           help="with --split: N lines or values a file (default: one, unless --target-file-bytes)"),
         a("--target-file-bytes", type=_count, default=0, metavar="N",
           help="with --split: lines or values a file until it holds N bytes or more (a line is never cut)"),
         at=True)
    verb("copy-file", cmd_copy_file, "copy a file or directory tree from a commit into an open commit, appending "
         "to a file that is there unless -o (its chunks are recorded again: nothing is read or sent)",
         a("src_repo", metavar="SRC_REPO"), a("src_ref", metavar="SRC_REF"), a("src_path", metavar="SRC_PATH"),
         a("dst_repo", metavar="DST_REPO"), a("dst_ref", metavar="DST_REF"), a("dst_path", metavar="DST_PATH"),
         a("-o", "--overwrite", action="store_true", help="replace the file instead of appending"), at=True)
    verb("get-file", cmd_get_file, "print a file's contents, or fetch a directory tree (-r -o DIR)", repo, ref,
         a("path", metavar="PATH"),
         a("-o", "--output", metavar="FILE", help="write to FILE instead of stdout (with -r: into the directory FILE)"),
         a("-r", "--recursive", action="store_true",
           help="PATH may be a directory: its tree (files, and directories even when empty) is written into the "
                "directory -o names, made if missing; files there of the same names are replaced"), at=True)
    verb("list-file", cmd_list_file, "list a directory's files, or (PATH with *, ? or [...]) the paths a glob pattern "
         "matches, as glob-file", repo, ref, a("path", metavar="PATH", nargs="?"), raw, at=True)
    verb("glob-file", cmd_glob_file, "list the files and directories whose paths match a glob pattern: * ? [...] "
         "in a name, ** for any directories (pachctl's glob-file)", repo, ref, a("path", metavar="PATTERN"), raw,
         at=True)
    verb("inspect-file", cmd_inspect_file, "show a file", repo, ref, a("path", metavar="PATH"), raw, at=True)
    verb("delete-file", cmd_delete_file, "delete a file or directory from an open commit", repo, ref,
         a("path", metavar="PATH"), at=True)
    verb("mount", cmd_mount, "mount every repo at DIR/<repo>/<branch or commit>/ (read-only; Ctrl-C unmounts)",
         a("mountpoint", metavar="DIR"),
         a("--shard", default="0/1", metavar="i/N", help="show only worker i of N's part (default 0/1: all)"),
         a("--method", choices=METHODS, default="global",
           help="how a shard is cut: map (blocks of every file), reduce (whole files), global (all)"),
         a("--no-direct", action="store_true",
           help="always read chunks through the server, even where it offers them straight from its store "
                "(its data dir on this machine, or URLs of its bucket)"),
         a("--commit", metavar="REPO@REF", help="mount only this commit's files, at DIR itself"),
         a("--inputs", metavar="FILE",
           help="mount a worker's inputs, DIR/<name> for each: one line of FILE (- : standard input, read once the "
                "mount has started), a JSON object {inputs: [{name, commit, method, shard, since, incremental}, "
                "...], token: the token to read them with, or null}"),
         a("--allow-other", action="store_true",
           help="let other users of this machine read it too (FUSE's allow_other: as root, or where "
                "/etc/fuse.conf has user_allow_other)"),
         a("--since", metavar="COMMIT", help="with --commit: show only what changed after this earlier commit"),
         a("--incremental", choices=("diff", "full"), default="diff",
           help="with --since: the data added to each file (diff), or whole files that changed (full)"),
         a(ready.FLAG, type=ready.ready_fd, metavar="N",
           help='once mounted, write {"mountpoint": ...} as a JSON line to file descriptor N and close it'))
    verb("unmount", cmd_unmount, "unmount a pfs mount", a("mountpoint", metavar="DIR", nargs="?"),
         a("-a", "--all", action="store_true", help="unmount every pfs mount of this machine"))
    manifest_file = a("-f", "--file", required=True, metavar="FILE",
                      help="the pipeline manifest (JSON, 1.x fields): a path, - for stdin, or a URL")
    pipeline = a("pipeline", metavar="PIPELINE")
    push = a("--push-images", action="store_true",
             help="push the manifest's image first (to the registry it names, else the server's --registry), "
                  "and pin the pipeline to the pushed digest")
    verb("create-pipeline", pipelines.cmd_create_pipeline,
         "create a pipeline: a job for every finished commit of its inputs, output in a repo of its name",
         manifest_file, push)
    verb("update-pipeline", pipelines.cmd_update_pipeline,
         "give a pipeline a new manifest; it applies to the commits to come", manifest_file, push,
         a("--reprocess", action="store_true", help="also run it again on the inputs' current heads"))
    verb("list-pipeline", pipelines.cmd_list_pipeline, "list pipelines", raw)
    verb("inspect-pipeline", pipelines.cmd_inspect_pipeline, "show a pipeline", pipeline, raw)
    verb("delete-pipeline", pipelines.cmd_delete_pipeline,
         "delete a pipeline (its jobs stay, and its output repo unless --delete-repo)",
         a("pipeline", metavar="PIPELINE", nargs="?"), a("--all", action="store_true", help="every pipeline"),
         a("--delete-repo", action="store_true", help="delete its output repo too (refused while a pipeline that "
           "is not deleted reads it)"))
    verb("delete-all", pipelines.cmd_delete_all, "delete every pipeline, then every repo with its commits, files "
         "and jobs, once y is read from stdin (pachctl's delete-all)")
    verb("stop-pipeline", pipelines.cmd_stop_pipeline, "stop making jobs for a pipeline", pipeline)
    verb("start-pipeline", pipelines.cmd_start_pipeline,
         "make jobs for a stopped pipeline again (for the commits it missed too)", pipeline)
    verb("flush-commit", pipelines.cmd_flush_commit,
         "wait until every job downstream of the commits is done; print their output commits",
         a("commits", metavar="REPO/REF", nargs="+"))
    verb("create-job", jobs.cmd_create_job, "run a transform once over input commits (a job manifest); prints its id",
         a("-f", "--file", required=True, metavar="FILE", help="the job manifest: a path, - for stdin, or a URL"))
    verb("list-job", jobs.cmd_list_job, "list jobs, newest first",
         a("-p", "--pipeline", metavar="PIPELINE", help="only this pipeline's jobs"), raw)
    verb("inspect-job", jobs.cmd_inspect_job, "show a job and its shards", a("job", metavar="JOB"), raw)
    verb("stop-job", jobs.cmd_stop_job, "stop a running job: its workers are killed and it fails; its pipeline goes "
         "on to the commits after it", a("job", metavar="JOB"))
    verb("get-logs", jobs.cmd_get_logs, "print the logs of a job's workers (stdout, stderr and the shim's lines)",
         a("given_job", metavar="JOB", nargs="?", help="the job (as --job; 1.x's get-logs JOB)"),
         a("--job", metavar="JOB"), a("-p", "--pipeline", metavar="PIPELINE"),
         a("--raw", action="store_true", help="print each line as JSON, with its shard, time and stream"),
         a("-f", "--follow", action="store_true",
           help="then print each line as it comes, until the job ends (a pipeline's: until Ctrl-C)"),
         a("--tail", type=_count, default=0, metavar="N", help="only the last N lines there are (0: all)"),
         aliases=("logs",))
    deploy = verb("deploy", None, "pfs servers on a cluster: print their manifests, or apply them")
    targets = deploy.add_subparsers(dest="deploy_target", metavar="TARGET", required=True)
    namespace = a("--namespace", default="pfs", type=_namespace, help="where they go (default pfs)")
    verb("kubernetes", deploy_cli.cmd_deploy_kubernetes,
         "pfs servers on Kubernetes (1.24 or later): print the manifests, for kubectl apply -f -, or apply them to "
         "the cluster $KUBECONFIG names (--apply)", namespace,
         a("--replicas", type=int, default=1, help="pfs servers (default 1)"),
         a("--image", default=manifests.DEFAULT_IMAGE,
           help=f"the servers' image, with pfs[cluster] (default {manifests.DEFAULT_IMAGE}: make server-image)"),
         a("--storage", metavar="s3://BUCKET/PREFIX", help="where chunks go: an S3 bucket (keys from "
           "$AWS_ACCESS_KEY_ID and $AWS_SECRET_ACCESS_KEY, put in the Secret pfs-credentials)"),
         a("--meta", metavar="postgresql://USER@HOST:PORT/DB",
           help="where metadata goes: a PostgreSQL database (its password from $PGPASSWORD, put in the Secret)"),
         a("--s3-endpoint", metavar="URL", help="an S3-compatible server for --storage (default: AWS)"),
         a("--local", action="store_true",
           help="instead of --storage and --meta: SeaweedFS and PostgreSQL in the cluster, on volumes of their own"),
         a("--tls-secret", metavar="NAME", help="serve TLS with the certificate of this kubernetes.io/tls Secret "
           "(tls.crt, tls.key, and ca.crt, what workers trust it by); without it the servers serve the cluster's "
           "network in the clear, every call still with a token"),
         a("--host-network", action="store_true",
           help="run every pod on its node's network (a cluster without a pod network)"),
         a("--worker-address", metavar="HOST:PORT", help="where workers reach the servers (default their Service)"),
         a("--registry", metavar="HOST:PORT", help="the registry the nodes pull from: where create-pipeline "
           "--push-images pushes an image that names none"),
         a("--api-address", metavar="HOST:PORT", help="where the servers reach the Kubernetes API (default the "
           "Service kubernetes; give it where that does not route from their pods, as without kube-proxy)"),
         a("--worker-fuse", default="privileged", metavar="MODE", type=kube.fuse_mode,
           help="how workers get FUSE: privileged (the default), hostpath, or a device plugin's resource name"),
         a("--pull-policy", default="IfNotPresent", choices=kube.PULL_POLICIES,
           help="imagePullPolicy of every pod (default IfNotPresent: images imported into the nodes work)"),
         a("--seaweedfs-image", default=manifests.DEFAULT_SEAWEEDFS_IMAGE, help="with --local"),
         a("--postgres-image", default=manifests.DEFAULT_POSTGRES_IMAGE, help="with --local"),
         a("--volume-size", default="10Gi", help="with --local: each volume's size (default 10Gi)"),
         a("--local-host", metavar="HOST", help="with --local: where the servers reach SeaweedFS and PostgreSQL "
           "(default their Services' names; give it where the cluster has no DNS, such as 127.0.0.1 on a "
           "one-node cluster whose pods are on its network)"),
         a("--apply", action="store_true", help="apply them to the cluster instead of printing them"),
         under=targets)
    verb("undeploy", deploy_cli.cmd_undeploy, "remove what pfs deploy made (the data's volumes only with "
         "--delete-data)", namespace,
         a("--delete-data", action="store_true", help="delete the --local volumes too: their data is lost"))
    auth = verb("auth", None, "tokens: log in, see who you are, and (the cluster's root) make and revoke tokens")
    verbs = auth.add_subparsers(dest="auth_command", metavar="COMMAND", required=True)
    verb("login", tokens.cmd_login, "read a token from stdin and keep it (~/.pfs/token, mode 0600) for the "
         "commands to come", under=verbs)
    verb("whoami", tokens.cmd_whoami, "print whom your token stands for", under=verbs)
    verb("create-token", tokens.cmd_create_token, "make a token for a user and print it (the root's command)",
         a("subject", metavar="NAME"),
         a("--ttl", metavar="DURATION", help="how long it lasts: 30m, 12h, 7d (default: until revoked)"), under=verbs)
    verb("revoke", tokens.cmd_revoke, "revoke every token of a user, or (no NAME) the token read from stdin "
         "(the root's command)", a("subject", metavar="NAME", nargs="?"), under=verbs)
    verb("set-role", tokens.cmd_set_role, "give a user a role on a repo: reader, writer or owner (none takes it "
         "away; the repo's owner's command)", repo, a("subject", metavar="USER"),
         a("role", metavar="ROLE", choices=("reader", "writer", "owner", "none")), under=verbs)
    verb("get-roles", tokens.cmd_get_roles, "list the users with a role on a repo", repo, under=verbs)
    return p


def main(argv: list[str] | None = None) -> NoReturn:
    """Runs the command ARGV (or the process's arguments) names, then ends the process (see _end)."""
    try:
        _run(sys.argv[1:] if argv is None else argv)
    except SystemExit as done:
        _end(done.code)
    _end(0)


def _end(code: int | str | None) -> NoReturn:
    """Exits with CODE (as sys.exit would), without the interpreter's teardown: a command has closed its files,
    its client and its threads' work by then, and freeing every module one by one and shutting gRPC's core down
    took 25 ms of each command's 0.15 s. Only what stdout and stderr hold is written first."""
    if isinstance(code, str):
        print(code, file=sys.stderr)
    for stream in (sys.stdout, sys.stderr):
        with contextlib.suppress(OSError, ValueError):  # a reader gone, or a stream closed: nothing to write to
            stream.flush()
    os._exit(code if isinstance(code, int) else 0 if code is None else 1)


def _run(argv: list[str]) -> None:
    if argv[:1] == ["server"]:  # the server is its own program; pfs/ never imports server/
        # -P: not the working directory first on the path (a /pfs there, as in a worker, is not this pfs)
        os.execv(sys.executable, [sys.executable, "-P", "-m", "server", *argv[1:]])
    args, unknown = parser().parse_known_args(argv)
    if unknown:  # said by the verb's parser, with its usage, not the command's
        args.usage_of.error(f"unrecognized arguments: {' '.join(unknown)}")
    if args.slots:
        args.slots.spread(args)
    keep_freed_memory()
    client = None
    try:
        if hasattr(args, "tls_ca"):  # for the client, and for what it starts (a mount)
            os.environ["PFS_TLS_CA"] = args.tls_ca
        token_file = getattr(args, "token_file", None)
        client = Client(getattr(args, "address", None), read_token(token_file) if token_file else None)
        args.fn(args, client)
    except PfsError as err:
        output.error(str(err))
        sys.exit(1)
    except KeyboardInterrupt:
        sys.exit(130)
    except BrokenPipeError:
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        sys.exit(1)
    except OSError as err:
        output.error(f"{err.filename}: {err.strerror}" if err.filename and err.strerror else err.strerror or str(err))
        sys.exit(1)
    except Exception as err:  # noqa: BLE001 - the last resort: a bug is one line too, never a traceback
        output.error(f"unexpected error, a bug of pfs: {type(err).__name__}: {err}".splitlines()[0])
        sys.exit(1)
    finally:
        if client is not None:
            client.close()

"""Roles per repo, and the rule of every RPC: a table of RPC x caller -> allowed or refused, made from the service
definitions themselves, so that an RPC added without a rule fails here. Real server, real tokens, raw gRPC."""

import pathlib

import grpc
import pytest
from google.protobuf import message_factory
from google.protobuf.descriptor import FieldDescriptor

from conftest import assert_one_line_error, needs, run_pfs, wait_for
from test_controller import slow_job, workers_of
from test_pipelines import put
from pfs.client import Client, auth
from pfs.core.errors import NotFound, PermissionDenied, Unauthenticated
from pfs.core.model import CommitRef
from pfs.proto import auth_pb2, chunks_pb2, pfs_pb2, pps_pb2
from server.roles import OWNER, RANK, READER, WRITER
from server.rpc.rules import ANY, JOB, RULES
from server.tokens import ROOT

REPO = "r"
MODULES = (pfs_pb2, chunks_pb2, pps_pb2, auth_pb2)
METHODS = [(f"/{s.full_name}/{m.name}", m) for mod in MODULES for s in mod.DESCRIPTOR.services_by_name.values()
           for m in s.methods]
SUBJECTS = ("nobody", "reader", "writer", "owner")  # each with that role on REPO (nobody: none)
DENIED = {grpc.StatusCode.PERMISSION_DENIED, grpc.StatusCode.UNAUTHENTICATED}


def test_every_rpc_has_the_rule_its_verb_calls_for():
    assert {name for name, _ in METHODS} == set(RULES)
    assert {name: rule.need for name, rule in RULES.items()} == {name: expected(name) for name, _ in METHODS}


def aimed(descriptor):
    """A request of DESCRIPTOR's type naming REPO wherever it names a repo (repo, name, pipeline, a commit's repo) and
    master wherever it names a ref; its other fields empty."""
    message = message_factory.GetMessageClass(descriptor)()
    for field in descriptor.fields:
        if field.type == FieldDescriptor.TYPE_STRING and field.name in ("repo", "name", "pipeline") and \
                not field.is_repeated:
            setattr(message, field.name, REPO)
        elif field.name == "ref" and field.type == FieldDescriptor.TYPE_STRING:
            message.ref = "master"
        elif field.type == FieldDescriptor.TYPE_MESSAGE and field.name == "commit":
            getattr(message, field.name).CopyFrom(aimed(field.message_type))
    return message


@pytest.fixture
def callers(server):
    """A token for each of SUBJECTS, and the root's (the server's own)."""
    with server.client() as root:
        tokens = {s: root.create_token(s)[0] for s in SUBJECTS}
    return {**tokens, ROOT: server.token}


def restore(server) -> None:
    """REPO as every call expects to find it: there, with a finished commit holding a file, and the roles."""
    with server.client() as root:
        try:
            root.inspect_repo(REPO)
        except NotFound:
            root.create_repo(REPO)
        if "master" not in {b.name for b in root.list_branches(REPO)}:
            server.pfs("put-file", REPO, "master", "f", "-c", "-f", "-", input=b"x\n")
        head = root.inspect_commit(CommitRef(REPO, "master"))
        if not head.is_finished:  # a writer's StartCommit
            root.finish_commit(CommitRef(REPO, head.id))
        for role in RANK:
            root.set_role(REPO, role, role)


def outcome(server, token: str, name: str, method) -> grpc.StatusCode:
    body = aimed(method.input_type).SerializeToString()
    with auth.channel(server.address, token) as channel:
        if method.client_streaming:
            call = channel.stream_unary(name)
            request = iter([body])
        else:
            call = (channel.unary_stream if method.server_streaming else channel.unary_unary)(name)
            request = body
        try:
            answer = call(request, timeout=3)
            if method.server_streaming:
                next(iter(answer), None)
        except grpc.RpcError as err:
            return err.code()
    return grpc.StatusCode.OK


def expected(name: str) -> str:
    """What calling NAME should take, by what the method does: its service and its verb."""
    service, method = name.split("/")[1:]
    if service == "pps.PPS":  # a pipeline is its output repo's; workers' reports their job's; raw jobs the root's
        return {"FlushCommit": READER, "InspectPipeline": READER, "DeletePipeline": OWNER, "StopPipeline": OWNER,
                "StartPipeline": OWNER, "CreateJob": ROOT, "StartShard": JOB, "PutShardFiles": JOB,
                "FinishShard": JOB, "PutLogs": JOB}.get(method, ANY)  # the rest check inputs, or filter
    if service == "pfs.Chunks" or method in ("Info", "CreateRepo", "ListRepo", "WhoAmI"):
        return ANY
    if method in ("CreateToken", "Revoke", "GarbageCollect", "Check"):  # the whole store's
        return ROOT
    if method in ("DeleteRepo", "SetRole"):
        return OWNER
    return READER if method.startswith(("Inspect", "List", "Subscribe", "Get")) else WRITER


# what a servicer asks beyond its rule, which lets any token ask: the logs and jobs of a pipeline take reading its
# output
SERVICER = {"/pps.PPS/GetLogs": READER, "/pps.PPS/ListJob": READER}


def allowed(need: str, subject: str) -> bool:
    """Whether SUBJECT (none of them a job's) may call what takes NEED."""
    if subject == ROOT or need == ANY:
        return True
    return need not in (ROOT, JOB) and RANK.get(subject, 0) >= RANK[need]


@pytest.mark.slow  # some 200 calls, each after putting the repo back as it was
def test_every_rpc_allows_exactly_the_callers_its_rule_names(server, callers):
    wrong = []
    for name, method in METHODS:
        for subject, token in callers.items():
            restore(server)
            code = outcome(server, token, name, method)
            if (code not in DENIED) != allowed(SERVICER.get(name, expected(name)), subject):
                wrong.append((name, subject, code))
    assert wrong == []


def test_roles_decide_what_a_user_may_do_and_refusals_are_one_line(server, callers):
    server.pfs("create-repo", REPO)
    env = {"PFS_ADDRESS": server.address}
    as_ = lambda who, *args, **kw: run_pfs(*args, env={**env, "PFS_TOKEN": callers[who]}, **kw)  # noqa: E731
    refused = as_("nobody", "list-file", REPO, "master", check=False)
    assert_one_line_error(refused, "nobody may not read repo 'r'", "pfs auth set-role r nobody reader")
    assert REPO not in as_("nobody", "list-repo").text  # a repo one may not read is not listed
    server.pfs("auth", "set-role", REPO, "writer", "writer")
    as_("writer", "put-file", REPO, "master", "f", "-c", "-f", "-", input=b"w\n")
    assert_one_line_error(as_("writer", "delete-repo", REPO, check=False), "takes owner")
    assert_one_line_error(as_("writer", "auth", "set-role", REPO, "nobody", "reader", check=False), "takes owner")
    as_("writer", "create-repo", "mine")  # a repo one creates is one's own
    as_("writer", "auth", "set-role", "mine", "nobody", "reader")
    assert as_("nobody", "auth", "get-roles", "mine").text.split() == ["USER", "ROLE", "nobody", "reader", "writer",
                                                                       "owner"]
    server.pfs("auth", "set-role", REPO, "writer", "none")
    assert_one_line_error(as_("writer", "get-file", REPO, "master", "f", check=False), "has no role there")


def test_a_subscription_ends_when_its_token_is_revoked_or_its_role_taken_away(server, callers):
    """A stream checks its caller again before each commit it sends: what was allowed as it began may not be now."""
    restore(server)
    for who in ("reader", "owner"):
        with Client(server.address, token=callers[who]) as client, server.client() as root:
            stream = client.subscribe_commits(REPO, "master")
            for _ in root.list_commits(REPO):  # what there is: sent as the call began
                next(stream)
            if who == "reader":
                server.pfs("auth", "revoke", who)
            else:
                server.pfs("auth", "set-role", REPO, who, "none")
            server.pfs("put-file", REPO, "master", "g", "-c", "-f", "-", input=b"after\n")
            with pytest.raises((Unauthenticated, PermissionDenied), match="revoked" if who == "reader" else "no role"):
                next(stream)


def test_a_refusal_of_a_name_of_megabytes_is_said_and_logged_short(server, callers):
    """A refusal names the repo asked for, and is logged: of a name no repo may have, only its start."""
    before = server.log.stat().st_size
    with Client(server.address, token=callers["nobody"]) as client:
        for _ in range(3):
            with pytest.raises(PermissionDenied) as err:
                client.inspect_repo("x" * (8 << 20))
            assert len(str(err.value)) < 1000
    assert server.log.stat().st_size - before < 10_000


def test_only_the_cluster_s_own_callers_learn_where_its_data_dir_is(server, callers):
    """The data dir's path is offered (for reads straight from the chunk files) to the root and its workers, who may
    read it; a user's token learns nothing of it."""
    with Client(server.address, token=callers["owner"]) as user, server.client() as root:
        assert user.direct_read is None
        assert root.direct_read.root == str(server.data_dir.resolve())


def test_a_commit_s_provenance_names_only_commits_its_writer_may_read(server, callers):
    restore(server)  # REPO, which "writer" may write
    server.pfs("create-repo", "hidden")
    server.pfs("put-file", "hidden", "master", "s", "-c", "-f", "-", input=b"s\n")
    with Client(server.address, callers["writer"]) as writer:
        with pytest.raises(PermissionDenied, match="writer may not name commits of repo 'hidden'"):
            writer.start_commit(REPO, "other", provenance=[CommitRef("hidden", "master")])
    server.pfs("auth", "set-role", "hidden", "writer", "reader")
    with Client(server.address, callers["writer"]) as writer:
        writer.start_commit(REPO, "other", provenance=[CommitRef("hidden", "master")])


def worker_token(job_id: str) -> str:
    """The token job JOB_ID's job-shim carries (in its environment: root may read it)."""
    for pid in workers_of(job_id):
        try:
            environ = pathlib.Path(f"/proc/{pid}/environ").read_bytes().split(b"\0")
        except OSError:
            continue
        for var in environ:
            if var.startswith(b"PFS_TOKEN="):
                return var.removeprefix(b"PFS_TOKEN=").decode()
    raise AssertionError(f"no worker of job {job_id} carries a token")


@pytest.mark.slow
@needs("fusermount3", "setpriv", root=True, fuse=True)
def test_a_worker_s_token_reads_its_inputs_and_reports_for_its_own_job_only(server, tmp_path, host_dir):
    put(server, "other", {"y": b"2\n"})
    job = slow_job(server, tmp_path, host_dir)  # its worker is running now
    token = worker_token(job["id"])
    assert token != server.token
    env = {"PFS_ADDRESS": server.address, "PFS_TOKEN": token}
    assert run_pfs("auth", "whoami", env=env).text.startswith(f"job:{job['id']} ")
    assert run_pfs("get-file", "data", "master", "x", env=env).stdout == b"1\n"  # its input commit
    later = put(server, "data", {"x": b"2\n"}, create=False)  # the next job's, not this one's
    assert_one_line_error(run_pfs("get-file", "data", later, "x", env=env, check=False), f"may not read data@{later}",
                          "reads only its job's input commits")
    assert_one_line_error(run_pfs("get-file", "other", "master", "y", env=env, check=False), "may not read other@")
    assert_one_line_error(run_pfs("put-file", "data", "master", "z", "-c", "-f", "-", input=b"z", env=env,
                                  check=False), "may not call StartCommit")
    for verb in ("list-pipeline", "list-repo"):
        assert_one_line_error(run_pfs(verb, env=env, check=False), "reads its job's commits and reports for it")
    with auth.channel(server.address, token) as channel:  # another job's reports
        for call, request in (("StartShard", pps_pb2.ShardRequest(job="f" * 32, shard=0)),
                              ("FinishShard", pps_pb2.ShardResult(job="f" * 32, shard=0, attempt=1))):
            with pytest.raises(grpc.RpcError) as err:
                channel.unary_unary(f"/pps.PPS/{call}")(request.SerializeToString(), timeout=10)
            assert err.value.code() == grpc.StatusCode.PERMISSION_DENIED and "only a job's own workers" in \
                err.value.details()
    assert_one_line_error(run_pfs("stop-job", job["id"], env=env, check=False), "may not call StopJob")
    with server.client() as root:  # stopping a job takes owning its output repo, as stopping its pipeline does
        reader = root.create_token("reader")[0]
        root.set_role("slow", "reader", "writer")
    assert_one_line_error(run_pfs("stop-job", job["id"], env={**env, "PFS_TOKEN": reader}, check=False),
                          "reader may not stop the jobs of repo 'slow'", "takes owner")
    server.pfs("stop-pipeline", "slow")  # the job ends: its token goes with it
    wait_for(lambda: run_pfs("auth", "whoami", env=env, check=False).returncode != 0, 30)
    assert_one_line_error(run_pfs("auth", "whoami", env=env, check=False), "was revoked")

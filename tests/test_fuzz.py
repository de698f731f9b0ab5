"""Bad input, as a careless user or an attacker sends it: mutated manifests, and raw bytes to every RPC.

Every manifest is accepted or refused with one line; every RPC is answered (any status, within a
deadline), the server stays up, and its log holds no traceback. Seeded, so a failure repeats.
"""

import copy
import json
import random
from collections.abc import Iterator

import grpc
from google.protobuf import descriptor, message_factory

from conftest import assert_one_line_error
from pfs.core import manifest
from pfs.core.errors import PfsError
from pfs.proto import auth_pb2, chunks_pb2, pfs_pb2, pps_pb2

VALID = {
    "pipeline": {"name": "p"},
    "description": "a valid 1.x manifest",
    "transform": {"image": "debian:bookworm-slim", "cmd": ["sh", "-c", "cat /pfs/data/* > /pfs/out/all"],
                  "stdin": ["echo hi"], "env": {"A": "1"}, "accept_return_code": [1], "overwrite": False},
    "parallelism_spec": {"strategy": "CONSTANT", "constant": 2},
    "inputs": [{"repo": {"name": "data"}, "method": {"partition": "FILE", "incremental": "DIFF"},
                "run_empty": False}],
}
ODD = [None, True, False, 0, -1, 1.5, -(2**63) - 1, 2**64, 10**400, float("inf"), float("nan"), "", " ", "\0",
       "a\0b", "x" * 10_000, "\n", "é☃𝄞", "\ud800", "../..", "/", "p", "data", "CONSTANT", "COEFFICIENT", "map",
       [], {}, [[[[[]]]]], {"name": None}, {"": ""}]
MANIFESTS = 400  # mutated manifests
CLI_EVERY = 50  # of which these through the CLI as well
SERVICES = [s for m in (pfs_pb2, chunks_pb2, pps_pb2, auth_pb2) for s in m.DESCRIPTOR.services_by_name.values()]


def odd(r: random.Random):
    """A value of some wrong type, size or content."""
    value = copy.deepcopy(r.choice(ODD))
    for _ in range(r.choice([0, 0, 0, 50, 500])):  # deep nesting now and then
        value = [value] if r.random() < 0.5 else {"n": value}
    return value


def mutate(doc, r: random.Random):
    """DOC with one change at a random place: a value replaced, a field removed or added, a list emptied..."""
    if not isinstance(doc, (dict, list)) or not doc or r.random() < 0.25:
        return odd(r)
    doc = copy.copy(doc)
    key = r.choice(list(doc)) if isinstance(doc, dict) else r.randrange(len(doc))
    roll = r.random()
    if isinstance(doc, dict) and roll < 0.15:
        del doc[key]
    elif isinstance(doc, dict) and roll < 0.3:
        doc[r.choice(["unknown", "Name", "inputs", "parallelism", "PipelineName", "\0", "é"])] = odd(r)
    elif isinstance(doc, list) and roll < 0.3:
        doc.append(doc[key] if r.random() < 0.5 else odd(r))
    else:
        doc[key] = mutate(doc[key], r)
    return doc


def manifests() -> Iterator[tuple[int, object]]:
    r = random.Random(1234)
    for i in range(MANIFESTS):
        doc = VALID
        for _ in range(r.choice([1, 1, 2, 3])):
            doc = mutate(doc, r)
        yield i, doc


def test_mutated_manifests_are_accepted_or_refused_in_one_line(server):
    """Each through the parser; those it accepts through the client to the server; a sample through the CLI."""
    server.pfs("create-repo", "data")  # never given a commit, so an accepted pipeline runs no job
    with server.client() as client:
        for i, doc in manifests():
            try:
                spec = manifest.pipeline(doc)
                client.create_pipeline(spec)
                client.delete_pipeline(spec.name)
            except PfsError as err:
                assert "\n" not in str(err), (i, doc, str(err))
            if i % CLI_EVERY == 0:
                r = server.pfs("create-pipeline", "-f", "-", input=json.dumps(doc).encode(), check=False)
                if r.returncode:
                    assert_one_line_error(r)
                else:
                    assert not r.stderr, r.stderr
                    server.pfs("delete-pipeline", manifest.pipeline(doc).name)
    server.pfs("list-pipeline")  # still up
    assert_no_traceback(server)


def assert_no_traceback(server) -> None:
    log = server.log.read_text()
    assert "Traceback" not in log and "Exception" not in log, log[-5000:]


def sample(message: descriptor.Descriptor, r: random.Random, depth: int = 0):
    """A message of type MESSAGE with every field set (to depth 3), so its encoding has something to break."""
    m = message_factory.GetMessageClass(message)()
    for field in message.fields:
        if field.message_type is not None:
            if depth < 3 and not field.message_type.GetOptions().map_entry:
                value = sample(field.message_type, r, depth + 1)
                (getattr(m, field.name).append(value) if field.is_repeated
                 else getattr(m, field.name).CopyFrom(value))
            continue
        value = {descriptor.FieldDescriptor.CPPTYPE_STRING: "x" * r.randint(1, 40),
                 descriptor.FieldDescriptor.CPPTYPE_BOOL: True,
                 descriptor.FieldDescriptor.CPPTYPE_DOUBLE: 1.5, descriptor.FieldDescriptor.CPPTYPE_FLOAT: 1.5,
                 }.get(field.cpp_type, r.randint(1, 3))
        if field.type == descriptor.FieldDescriptor.TYPE_BYTES:
            value = r.randbytes(32)
        elif field.enum_type is not None:
            value = field.enum_type.values[-1].number
        if field.is_repeated:
            getattr(m, field.name).append(value)
        else:
            setattr(m, field.name, value)
    return m


def bodies(message: descriptor.Descriptor, r: random.Random) -> Iterator[bytes]:
    """Random bytes, and a valid message of the method's type truncated or with bits flipped."""
    for n in (1, 7, 64, 1000):
        yield r.randbytes(n)
    yield b"\xff" * 16  # a field number beyond any, of an invalid wire type
    valid = sample(message, r).SerializeToString()
    for _ in range(3):
        yield valid[: r.randrange(len(valid))] if valid else b"\x0a\x05ab"
    for _ in range(3):
        flipped = bytearray(valid or b"\x0a\x01x")
        for _ in range(r.randint(1, 4)):
            flipped[r.randrange(len(flipped))] ^= 1 << r.randrange(8)
        yield bytes(flipped)


def call(channel: grpc.Channel, service: descriptor.ServiceDescriptor, method: descriptor.MethodDescriptor,
         body: bytes) -> grpc.StatusCode:
    """Sends BODY as METHOD's request (every message of a stream, for a streaming one); the status it ends with."""
    path = f"/{service.full_name}/{method.name}"
    kind = ("stream_" if method.client_streaming else "unary_") + ("stream" if method.server_streaming else "unary")
    stub = getattr(channel, kind)(path, request_serializer=None, response_deserializer=None)
    request = iter([body, body]) if method.client_streaming else body
    try:
        if method.server_streaming:
            for _ in stub(request, timeout=5):
                pass
        else:
            stub(request, timeout=5)
    except grpc.RpcError as err:
        return err.code()
    return grpc.StatusCode.OK


def test_garbage_to_every_rpc_is_answered_and_the_server_stays_up(server):
    server.pfs("create-repo", "x")  # sampled messages name repo "x...": some get past the lookup
    r = random.Random(99)
    codes: dict[str, set[grpc.StatusCode]] = {}
    with server.channel() as channel:
        for service in SERVICES:
            for method in service.methods:
                for body in bodies(method.input_type, r):
                    code = call(channel, service, method, body)
                    assert code != grpc.StatusCode.DEADLINE_EXCEEDED or method.server_streaming, (method.name, body)
                    codes.setdefault(method.name, set()).add(code)
    assert {m for m, c in codes.items() if grpc.StatusCode.INVALID_ARGUMENT not in c} == set(), codes
    assert server.proc.poll() is None
    with server.client() as client:
        assert "x" in [repo.name for repo in client.list_repos()]  # a normal call works after
    assert_no_traceback(server)
    assert "does not decode" in server.log.read_text()  # one line for each such request

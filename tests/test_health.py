"""`pfs server --health-port`: the standard gRPC health service for a cluster's probes, on a port of its own, in plain
gRPC and with no token; SERVING while the server serves, NOT_SERVING from the moment it starts to stop."""

import signal
import socket

import grpc
from grpc_health.v1 import health_pb2, health_pb2_grpc

from conftest import Server


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_a_probe_sees_serving_then_not_serving_as_the_server_stops(tmp_path):
    port = free_port()
    server = Server(tmp_path / "data", args=("--health-port", str(port)))
    server.start()
    try:
        with grpc.insecure_channel(f"127.0.0.1:{port}") as channel:  # no TLS, no token: as a kubelet probes
            health = health_pb2_grpc.HealthStub(channel)
            reply = health.Check(health_pb2.HealthCheckRequest(service=""), timeout=10)
            assert reply.status == health_pb2.HealthCheckResponse.SERVING
            with grpc.insecure_channel(server.address) as pfs_port:  # the pfs port itself asks for its token
                try:
                    health_pb2_grpc.HealthStub(pfs_port).Check(health_pb2.HealthCheckRequest(), timeout=10)
                    raise AssertionError("the pfs port answered a call without a token")
                except grpc.RpcError as err:
                    assert err.code() in (grpc.StatusCode.UNAUTHENTICATED, grpc.StatusCode.UNIMPLEMENTED)
            watch = health.Watch(health_pb2.HealthCheckRequest(service=""), timeout=60)
            assert next(watch).status == health_pb2.HealthCheckResponse.SERVING
            server.proc.send_signal(signal.SIGTERM)
            assert next(watch).status == health_pb2.HealthCheckResponse.NOT_SERVING
            watch.cancel()
    finally:
        server.stop()


def test_a_health_port_in_use_is_refused_in_one_line(tmp_path):
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        server = Server(tmp_path / "data", args=("--health-port", str(port)))
        try:
            server.start()
            raise AssertionError("the server started on a health port in use")
        except RuntimeError as err:
            lines = str(err).strip().splitlines()
            assert lines[-1] == (f"pfs server: --health-port: cannot listen on 127.0.0.1:{port} (in use, or not an "
                                 "address of this machine)"), lines

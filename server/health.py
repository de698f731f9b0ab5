"""The standard gRPC health service (grpc.health.v1), on a port of its own, for a cluster's probes.

Plain gRPC and no token: a kubelet's gRPC probe speaks no TLS and carries no token, and the pfs port asks for both.
It answers only SERVING or NOT_SERVING for the server as a whole (service ''), so it tells nothing else. SERVING
from the moment the server serves and its controller runs, NOT_SERVING from the moment it starts to stop.
"""

import grpc
from grpc_health.v1 import health_pb2, health_pb2_grpc
from grpc_health.v1.health import aio


class Health:
    def __init__(self, listen: str, port: int) -> None:
        self.servicer = aio.HealthServicer()
        self.server = grpc.aio.server()
        health_pb2_grpc.add_HealthServicer_to_server(self.servicer, self.server)
        address = f"{listen}:{port}"
        try:
            bound = self.server.add_insecure_port(address)
        except RuntimeError:
            bound = 0
        if not bound:
            raise SystemExit(f"pfs server: --health-port: cannot listen on {address} (in use, or not an address "
                             "of this machine)")

    async def start(self) -> None:
        """Serves NOT_SERVING until serving()."""
        await self.servicer.set("", health_pb2.HealthCheckResponse.NOT_SERVING)
        await self.server.start()

    async def serving(self) -> None:
        await self.servicer.set("", health_pb2.HealthCheckResponse.SERVING)

    async def stopping(self) -> None:
        """NOT_SERVING from now on, for every service."""
        await self.servicer.enter_graceful_shutdown()

    async def stop(self, grace: float) -> None:
        await self.server.stop(grace)

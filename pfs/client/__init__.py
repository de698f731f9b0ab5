"""pfs.client: the typed gRPC client (proto <-> model, status -> domain error)."""

from pfs.client.client import Client, default_address

__all__ = ["Client", "default_address"]

"""pfs: a versioned data store and data-driven pipeline system."""

import os

__version__ = "0.1.0"

# gRPC's own log lines (a failed TLS handshake, say) would go to stderr once per try, besides the one line a
# command or the server says of what went wrong: only its errors, unless the environment asks for more. Set
# here, before any of pfs (and server/, which imports this first) loads grpc, which reads it then.
os.environ.setdefault("GRPC_VERBOSITY", "ERROR")

"""Thin gRPC servicers: request -> Store call -> response; domain errors -> status codes."""

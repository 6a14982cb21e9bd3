"""Thin blueprints: parse the request, call a service, serialise the answer."""

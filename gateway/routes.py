"""Which `[[routes]]` entry takes a call: the first whose pattern matches the dialed number.

A pattern is an exact user part, a prefix ending in `*`, or `*`; a route that names a trunk
takes only that trunk's calls. The route's Orga overrides are resolved in
`gateway/orga/settings.py`.
"""

from __future__ import annotations

from collections.abc import Iterable

from gateway.config.schema import Route


def route_matches(route: Route, callee: str, trunk: str | None) -> bool:
    if route.trunk is not None and route.trunk != trunk:
        return False
    if route.match == "*":
        return True
    if route.match.endswith("*"):
        return callee.startswith(route.match[:-1])
    return callee == route.match


def match_route(routes: Iterable[Route], callee: str, trunk: str | None) -> Route | None:
    """First route whose pattern matches the dialed user part (and trunk, if it names one)."""
    for route in routes:
        if route_matches(route, callee, trunk):
            return route
    return None

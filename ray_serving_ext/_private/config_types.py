"""Annotated types and validators shared by the option schemas (`config.py`)
and the config-file schema (`config_file.py`), and the one route-prefix rule.

Pure pydantic and stdlib: it imports nothing else from the package, so both
schema modules (and the controller) can import it without a cycle.
"""

from __future__ import annotations

from typing import Iterable, List, Optional, Tuple


def route_prefix_clashes(apps: Iterable[Tuple[str, Optional[str]]]) -> List[Tuple[str, str, str]]:
    """The route-prefix clashes among `apps`, given as (name, route_prefix) pairs.

    Each clash is (prefix, holder, newcomer): `newcomer` asks for a prefix that
    `holder`, earlier in `apps`, already has. A None prefix (no HTTP route)
    never clashes, and an application never clashes with itself.
    """
    owners: dict = {}
    clashes: List[Tuple[str, str, str]] = []
    for name, prefix in apps:
        if prefix is None:
            continue
        holder = owners.setdefault(prefix, name)
        if holder != name:
            clashes.append((prefix, holder, name))
    return clashes

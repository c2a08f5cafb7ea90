"""What only the reliability suite needs: reporting measured figures.

The backend process, waiting, launching and SSE reading are the whole suite's (tests/support/).
"""

from __future__ import annotations


def figure(name: str, value: float | int | str) -> None:
    """Report a measured figure (``pytest -s`` shows them; docs/reliability.md quotes them)."""
    print(f"\nFIGURE {name} = {value}", flush=True)

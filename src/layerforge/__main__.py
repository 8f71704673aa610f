"""`python -m layerforge ...` is the `layerforge` command (see cli.py)."""

from __future__ import annotations

from .cli import main

raise SystemExit(main())

#!/usr/bin/env python3
"""Extract the ``/responses*`` operations of OpenAI's OpenAPI spec, with every component they
reference (transitively), into one small self-contained spec for the fuzz tests.

    python scripts/extract_openapi_subset.py SPEC.json [OUT.json]

OUT defaults to ``tests/fixtures/openai-openapi-responses.json``. The full spec is several
megabytes and not part of this repository; the subset is checked in, and its ``info`` names
the source (title, version, and the SHA-256 of the file it came from) and the date it was
extracted (``x-source``). Paths spelled with a query string (``/responses?beta=true``) are
left out: they are the same operations under a beta flag, not paths a server routes.
"""
from __future__ import annotations

import datetime
import hashlib
import json
import sys
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
DEFAULT_OUT = ROOT / "tests" / "fixtures" / "openai-openapi-responses.json"
PREFIX = "/responses"


def _refs(node: Any) -> set[str]:
    """Every ``$ref`` string anywhere in ``node``."""
    found: set[str] = set()
    stack = [node]
    while stack:
        item = stack.pop()
        if isinstance(item, dict):
            ref = item.get("$ref")
            if isinstance(ref, str):
                found.add(ref)
            stack.extend(item.values())
        elif isinstance(item, list):
            stack.extend(item)
    return found


def _resolve(spec: dict, ref: str) -> Any:
    if not ref.startswith("#/"):
        raise ValueError(f"only local references are supported, got {ref!r}")
    node: Any = spec
    for part in ref[2:].split("/"):
        node = node[part.replace("~1", "/").replace("~0", "~")]
    return node


def subset(spec: dict, source_digest: str, today: str) -> dict:
    paths = {p: item for p, item in spec["paths"].items() if p.startswith(PREFIX) and "?" not in p}
    components: dict[str, dict[str, Any]] = {}
    pending, seen = list(_refs(paths)), set()
    while pending:
        ref = pending.pop()
        if ref in seen:
            continue
        seen.add(ref)
        root, section, name = ref[2:].split("/", 2)
        if root != "components":
            raise ValueError(f"only references into components are supported, got {ref!r}")
        node = _resolve(spec, ref)
        components.setdefault(section, {})[name] = node
        pending.extend(_refs(node) - seen)
    info = dict(spec.get("info", {}))
    info["x-source"] = {"title": spec.get("info", {}).get("title"), "version": spec.get("info", {}).get("version"),
                        "sha256": source_digest, "extracted": today,
                        "by": "scripts/extract_openapi_subset.py", "paths": f"{PREFIX}*"}
    out = {"openapi": spec["openapi"], "info": info, "paths": paths,
           "components": {k: dict(sorted(v.items())) for k, v in sorted(components.items())}}
    if "servers" in spec:
        out["servers"] = spec["servers"]
    return out


def main(argv: list[str]) -> int:
    if not 1 <= len(argv) <= 2:
        print(__doc__, file=sys.stderr)
        return 2
    raw = Path(argv[0]).read_bytes()
    out = Path(argv[1]) if len(argv) == 2 else DEFAULT_OUT
    result = subset(json.loads(raw), hashlib.sha256(raw).hexdigest(), datetime.date.today().isoformat())
    out.write_text(json.dumps(result, indent=1, sort_keys=False) + "\n")
    print(f"{out}: {len(result['paths'])} paths, "
          f"{sum(len(v) for v in result['components'].values())} components, {out.stat().st_size} bytes")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))

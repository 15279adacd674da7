"""Structure-aware mutation of JSON fuzz inputs (annotation and detection files), for atheris.

`mutate(data, max_size, seed)` is atheris' custom_mutator: most of the time it parses the input
as JSON, applies 1-4 structural edits (drop / add a field, change a value's type, put an extreme
number or an odd string in, duplicate / truncate a list, wrap or unwrap a value) and writes it
back; otherwise, and for inputs that are not JSON, it leaves the bytes to libFuzzer's own
mutator (atheris.Mutate), which reaches the JSON parser's error paths.
"""
from __future__ import annotations

import json
import random

KEYS = ("id", "image_id", "category_id", "bbox", "keypoints", "score", "file_name", "width", "height", "iscrowd",
        "area", "num_keypoints", "images", "annotations", "categories", "crowdIndex", "name", "image", "center",
        "scale", "joints", "joints_vis", "head_box")
ODD = (None, True, False, 0, -1, 1, 2, 0.5, -0.0, 3, 17, 1e-45, 1e39, -1e39, 1.7e308, -1.7e308, 2**31, 2**63,
       -2**63, 10**30, "", "0", "1", "785", "x", "a\nb", "\u00b2", "\u0663", "..", "/", "a.jpg", [], {}, [0],
       [0, 0, 0, 0], [1, 2, 3, 4], [[0, 0]], {"id": 1}, float("nan"), float("inf"))


def _nodes(value, out: list, depth: int = 0) -> list:
    """(container, key) of every value inside `value` (depth-first, bounded)."""
    if depth > 12 or len(out) > 4000:
        return out
    if isinstance(value, dict):
        for k, v in value.items():
            out.append((value, k))
            _nodes(v, out, depth + 1)
    elif isinstance(value, list):
        for i, v in enumerate(value):
            out.append((value, i))
            _nodes(v, out, depth + 1)
    return out


def _new_value(rng: random.Random, old):
    r = rng.random()
    if r < 0.45:
        return rng.choice(ODD)
    if r < 0.65 and isinstance(old, (int, float)) and not isinstance(old, bool):
        return rng.choice((old + 1, old - 1, -old, old * 1e30, int(old) if abs(old) < 1e18 else old, float(old)))
    if r < 0.75:
        return [old]
    if r < 0.85 and isinstance(old, (list, dict)) and old:
        return rng.choice(list(old.values()) if isinstance(old, dict) else old)
    if r < 0.92 and isinstance(old, str):
        return old + rng.choice(("0", "\n", "\u00e9", "/..", "\x00")) if old else "\u00b2"
    return str(old)[:40]


def _edit(rng: random.Random, doc):
    """One structural edit of `doc` (in place where possible); returns the new document."""
    nodes = _nodes(doc, [])
    if not nodes:
        return rng.choice((doc, [doc], {"images": doc}, rng.choice(ODD)))
    parent, key = rng.choice(nodes)
    op = rng.random()
    if op < 0.2:                                  # drop a field / element
        del parent[key]
    elif op < 0.3 and isinstance(parent, dict):   # add a field
        parent[rng.choice(KEYS)] = rng.choice(ODD)
    elif op < 0.4 and isinstance(parent, list):   # duplicate / truncate a list
        if rng.random() < 0.5:
            parent.insert(key, json.loads(json.dumps(parent[key])))
        else:
            del parent[key:]
    else:                                         # change a value
        parent[key] = _new_value(rng, parent[key])
    return doc


def mutate(data: bytes, max_size: int, seed: int) -> bytes:
    import atheris      # only under the fuzzer; imported here so that the module loads without it

    rng = random.Random(seed)
    if rng.random() < 0.8:
        try:
            doc = json.loads(data)
        except (ValueError, RecursionError):
            doc = None
        if doc is not None or data.strip() == b"null":
            for _ in range(rng.randint(1, 4)):
                doc = _edit(rng, doc)
            try:
                out = json.dumps(doc, ensure_ascii=rng.random() < 0.5).encode("utf-8", "surrogatepass")
            except (ValueError, TypeError, RecursionError):
                out = b""
            if out and len(out) <= max_size:
                return out
    return atheris.Mutate(data, max_size)

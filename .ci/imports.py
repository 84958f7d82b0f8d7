#!/usr/bin/env python3
"""The import graph of src/: which file uses which, its circles, and the edges that run up
DESIGN §7's stack. Run from the repository root:

    python3 .ci/imports.py            # summary: files, edges, circles, upward edges (listed)
    python3 .ci/imports.py --edges    # every edge, "from -> to"
    python3 .ci/imports.py --check    # exit 1 if there is a circle or an upward edge (CI)

An edge is any `crate::…` or `super::…` path in a file's code (in `use` lines and in
expressions, tests included; comments and doc links are not imports), resolved to the deepest file that exists: `crate::config::TlsSpec` is src/config.rs,
`crate::probe::http::Client` is src/probe/http.rs. A parent module's own re-exports (`pub use`
of its children) and `mod` lines are not edges: they are how Rust spells "this room holds that".
A file and its own sub-files (`probe.rs` and `probe/*.rs`) form one room; edges inside a room
are allowed to point either way, except that a room's sub-files never form a circle among
themselves.
"""
import os
import re
import sys

# DESIGN §7, lowest first. A file's layer is its top-level module's; src/lib.rs and the binary
# are above everything.
LAYERS = [
    # the floor: shared small types and helpers
    {"health", "outcome", "redact", "grpc_code", "tls", "auth", "trace_context", "net_error"},
    # the Probe trait and each kind beside its spec
    {"probe"},
    # config: raw mirror and validation into the probe kinds' specs
    {"config"},
    # the published view, pure data (the engine builds it, everyone above reads it)
    {"snapshot"},
    # the registry and the engine's instruments (health gauges read snapshots at scrape time)
    {"metrics"},
    {"engine"},
    # the control plane: reload, runtime layer, state file (drives the engine; fronts call it)
    {"control"},
    # what the fronts share: accepting under limits, trace export
    {"listener", "telemetry"},
    # the fronts
    {"grpc", "http"},
    {"lib", "main", "cli", "fuzzing"},
]
ORDER_WITHIN = {}

COMMENT = re.compile(r"//.*$")
PATH = re.compile(r"\b(crate|super)((?:::[A-Za-z_][A-Za-z0-9_]*)*)(::\{([^}]*)\})?")


def module_of(path):
    """src/probe/http/client.rs -> ['probe', 'http', 'client']; src/probe.rs -> ['probe']."""
    rel = os.path.relpath(path, "src")[:-3]
    parts = rel.split(os.sep)
    if parts[-1] == "mod":
        parts = parts[:-1]
    return parts


def file_of(parts):
    """The deepest existing file for a module path."""
    for n in range(len(parts), 0, -1):
        candidate = os.path.join("src", *parts[:n]) + ".rs"
        if os.path.exists(candidate):
            return candidate
        candidate = os.path.join("src", *parts[:n], "mod.rs")
        if os.path.exists(candidate):
            return candidate
    return None


def top(path):
    parts = module_of(path)
    return parts[0]


def layer(path):
    name = top(path)
    for i, names in enumerate(LAYERS):
        if name in names:
            return i
    return None


def edges_of(path, files):
    me = module_of(path)
    if me in (["lib"], ["main"]):
        return set()
    text = open(path, encoding="utf-8").read()
    out = set()
    for line in text.splitlines():
        # Comments (doc links included) name things; they do not import them.
        line = COMMENT.sub("", line)
        stripped = line.strip()
        # A parent re-exporting its own child is not an edge (see the module docs).
        reexport = stripped.startswith("pub") and " use " in f" {stripped} "
        for m in PATH.finditer(line):
            root, rest, _, group = m.groups()
            segs = [s for s in rest.split("::") if s]
            if root == "crate":
                base = []
            else:
                base = me[:-1]
                while segs and segs[0] == "super":
                    base = base[:-1]
                    segs = segs[1:]
            items = [g.strip().split(" ")[0].split("::")[0] for g in (group or "").split(",")]
            items = [i for i in items if i and i != "self"] or [None]
            for item in items:
                parts = base + segs + ([item] if item else [])
                target = file_of(parts) if parts else None
                if target is None or target == path:
                    continue
                tparts = module_of(target)
                if reexport and tparts[: len(me)] == me:
                    continue
                out.add(target)
    return out


def circles(graph):
    """Strongly connected components with more than one file (Tarjan)."""
    index, low, stack, on, out = {}, {}, [], set(), []
    counter = [0]

    def visit(v):
        index[v] = low[v] = counter[0]
        counter[0] += 1
        stack.append(v)
        on.add(v)
        for w in graph.get(v, ()):
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            comp = []
            while True:
                w = stack.pop()
                on.discard(w)
                comp.append(w)
                if w == v:
                    break
            if len(comp) > 1:
                out.append(sorted(comp))

    sys.setrecursionlimit(10000)
    for v in sorted(graph):
        if v not in index:
            visit(v)
    return out


def upward(graph):
    bad = []
    for src, targets in sorted(graph.items()):
        for dst in sorted(targets):
            a, b = layer(src), layer(dst)
            if a is None or b is None:
                bad.append((src, dst, "unknown layer"))
            elif b > a:
                bad.append((src, dst, f"layer {a} uses layer {b}"))
            elif a == b and (top(src), top(dst)) in ORDER_WITHIN:
                bad.append((src, dst, ORDER_WITHIN[(top(src), top(dst))]))
    return bad


def main():
    files = sorted(
        os.path.join(d, f) for d, _, fs in os.walk("src") for f in fs if f.endswith(".rs")
    )
    graph = {f: edges_of(f, files) for f in files}
    if "--edges" in sys.argv:
        for src in sorted(graph):
            for dst in sorted(graph[src]):
                print(f"{src} -> {dst}")
        return 0
    # Circles count between rooms (top-level modules) and between files.
    rooms = {}
    for src, targets in graph.items():
        rooms.setdefault(top(src), set()).update(top(t) for t in targets if top(t) != top(src))
    room_circles = circles(rooms)
    file_circles = circles(graph)
    up = upward(graph)
    n_edges = sum(len(t) for t in graph.values())
    print(f"files {len(files)}, edges {n_edges}")
    print(f"circles between rooms: {len(room_circles)}")
    for c in room_circles:
        print("  " + " <-> ".join(c))
    print(f"circles between files: {len(file_circles)}")
    for c in file_circles:
        print("  " + " <-> ".join(c))
    print(f"upward edges: {len(up)}")
    for src, dst, why in up:
        print(f"  {src} -> {dst} ({why})")
    if "--check" in sys.argv and (room_circles or file_circles or up):
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())

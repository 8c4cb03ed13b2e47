#!/usr/bin/env python3
"""No file-level import cycles: within each crate named on the command line,
the graph of paths between source files (tests modules left out) has no
cycle. A path counts when it is `crate::`, `super::` or `self::`, or starts
with a child module the file declares (`mod child;` and `use child::X`);
an item defined in the crate's root file (not re-exported there) counts as
that file. Prints each cycle and exits 1 if there is one.

A path in a doc comment counts too: documentation that points back at a
module that imports this one is the same knot for a reader."""
import os
import re
import sys

PATH = re.compile(r"\b(crate|super|self)::((?:[A-Za-z_][A-Za-z0-9_]*::)*)([A-Za-z_][A-Za-z0-9_]*|\{[^{}]*\})")


def paths(m):
    """The paths one match names: `a::b::C`, or each of `a::{b, c::D}`."""
    head = [p for p in m.group(2).split("::") if p]
    last = m.group(3)
    if not last.startswith("{"):
        return [head + [last]]
    return [head + [i.strip().split("::")[0]] for i in last[1:-1].split(",") if i.strip()]


def module_file(src, parts):
    base = os.path.join(src, *parts)
    for cand in (base + ".rs", os.path.join(base, "mod.rs")):
        if os.path.exists(cand):
            return cand
    return None


def module_path(src, f):
    rel = os.path.relpath(f, src)[:-3].split(os.sep)
    return rel[:-1] if rel[-1] in ("mod", "lib", "main") else rel


ITEM = r"^\s*(?:pub(?:\([a-z]+\))?\s+)?(?:async\s+)?(?:struct|enum|union|fn|trait|const|static|type)\s+([A-Za-z_][A-Za-z0-9_]*)"


def graph(src):
    files = [os.path.join(r, f) for r, _, fs in os.walk(src) for f in fs if f.endswith(".rs")]
    edges = {}
    # The crate's root file: an item defined there (not one re-exported) is
    # as much a dependency as one in any module.
    root = next((os.path.join(src, r) for r in ("lib.rs", "main.rs") if os.path.exists(os.path.join(src, r))), None)
    root_items = set()
    if root:
        root_text = re.sub(r"#\[cfg\(test\)\]\s*mod tests \{.*", "", open(root, encoding="utf-8").read(), flags=re.S)
        root_items = set(re.findall(ITEM, root_text, flags=re.M))
    for f in files:
        text = open(f, encoding="utf-8").read()
        text = re.sub(r"#\[cfg\(test\)\]\s*mod tests \{.*", "", text, flags=re.S)
        here = module_path(src, f)
        # Child modules this file declares, named by relative paths
        # (`use child::X`, `child::f()`).
        children = set(re.findall(r"^\s*(?:pub(?:\([a-z]+\))?\s+)?mod\s+([A-Za-z_][A-Za-z0-9_]*)\s*;", text, flags=re.M))
        for name in children:
            for m in re.finditer(r"(?<![A-Za-z0-9_:])" + name + r"::", text):
                t = module_file(src, here + [name])
                if t and t != f:
                    edges.setdefault(f, set()).add(t)
        for m in PATH.finditer(text):
          kind = m.group(1)
          for rest in paths(m):
            if rest[-1] == "self":
                rest = rest[:-1]
            target = rest if kind == "crate" else (here[:-1] + rest if kind == "super" else here + rest)
            for k in range(len(target), 0, -1):
                t = module_file(src, target[:k])
                if t:
                    if t != f:
                        edges.setdefault(f, set()).add(t)
                    break
            else:
                if root and target and target[0] in root_items and root != f:
                    edges.setdefault(f, set()).add(root)
    return edges


def cycles(edges):
    index, low, stack, on, out, n = {}, {}, [], set(), [], [0]

    def visit(v):
        index[v] = low[v] = n[0]
        n[0] += 1
        stack.append(v)
        on.add(v)
        for w in edges.get(v, ()):
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
    for v in list(edges):
        if v not in index:
            visit(v)
    return out


bad = False
for crate in sys.argv[1:]:
    for c in cycles(graph(os.path.join(crate, "src"))):
        bad = True
        print(f"{crate}: files importing each other: {', '.join(c)}")
sys.exit(1 if bad else 0)

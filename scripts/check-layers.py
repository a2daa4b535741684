#!/usr/bin/env python3
"""Checks that the crate's imports follow the layering of docs/ARCHITECTURE.md.

Reads every `crate::`, `super::` and `self::` path in src/ (in `use`
declarations, multi-line groups included, and in inline paths such as
`crate::engine::Engine::open(..)`), plus paths that start with a child
module a file declares (`mod writer;` ... `writer::Flusher`), resolves each
to the file that defines the item (following one `pub use` re-export), and
fails when:

- a module imports a module its layer may not import (LAYERS below: a
  module may import only modules of a strictly lower layer, and the named
  rules: engine imports nothing above it; protocol no engine, node or front
  end; replication, backup and coordinator no front end and not the node;
  config no cli);
- two top-level modules import each other, directly or through others;
- two files import each other, directly or through other files.

The one exception, also stated in ARCHITECTURE.md: a child may use items
defined in its parent's module root (`engine/writer.rs` may use what
`engine/mod.rs` defines, since `engine/mod.rs` declares it), and a module
nested deeper the items of an enclosing module's root
(`coordinator/etcd/pool.rs` what `coordinator/mod.rs` defines). Nothing
else is exempt: not sibling files, not other modules.

Comments, string and character literals are ignored. Plain python3, no
third-party imports.

    scripts/check-layers.py [--src DIR]      check (exit 1 and one line per violation)
    scripts/check-layers.py --graph          print the module graph and exit
"""

import argparse
import os
import re
import sys
from collections import defaultdict

# Layers, bottom first. A module may import modules of a strictly lower
# layer only, so modules of one layer are independent of each other.
# `crate` (lib.rs) declares the modules and imports nothing.
LAYERS = [
    ["durable", "lifecycle", "security"],
    ["engine", "protocol", "coordinator"],
    ["replication", "client"],
    ["metrics"],
    ["backup"],
    ["node"],
    ["config", "resp"],
    ["server"],
    ["cli"],
]

# The rules the layering exists for, checked on their own so that a change
# of LAYERS cannot silently drop them: (importer, forbidden imports).
FORBIDDEN = [
    ("engine", {"protocol", "security", "replication", "coordinator", "metrics", "client",
                "backup", "node", "server", "resp", "config", "cli", "lifecycle"}),
    ("protocol", {"engine", "node", "server", "resp", "replication", "backup", "client", "cli"}),
    ("replication", {"server", "resp", "node", "cli"}),
    ("backup", {"server", "resp", "node", "cli"}),
    ("coordinator", {"engine", "server", "resp", "node", "cli"}),
    ("config", {"cli"}),
]

IDENT = r"[A-Za-z_][A-Za-z0-9_]*"


def strip_comments_and_strings(text):
    """The text with comments, string and char literals blanked out (same
    length, newlines kept, so positions and line numbers stay valid)."""
    out = []
    i, n = 0, len(text)

    def blank(s):
        return "".join("\n" if c == "\n" else " " for c in s)

    while i < n:
        c = text[i]
        if text.startswith("//", i):
            j = text.find("\n", i)
            j = n if j < 0 else j
            out.append(blank(text[i:j]))
            i = j
        elif text.startswith("/*", i):
            depth, j = 1, i + 2
            while j < n and depth:
                if text.startswith("/*", j):
                    depth, j = depth + 1, j + 2
                elif text.startswith("*/", j):
                    depth, j = depth - 1, j + 2
                else:
                    j += 1
            out.append(blank(text[i:j]))
            i = j
        elif re.match(r'(?:b|c)?r(#*)"', text[i:i + 40]) and (i == 0 or not re.match(r"[A-Za-z0-9_]", text[i - 1])):
            m = re.match(r'(?:b|c)?r(#*)"', text[i:])
            close = '"' + m.group(1)
            j = text.find(close, i + m.end())
            j = n if j < 0 else j + len(close)
            out.append(blank(text[i:j]))
            i = j
        elif c == '"' or (c in "bc" and text.startswith('"', i + 1) and (i == 0 or not re.match(r"[A-Za-z0-9_]", text[i - 1]))):
            j = i + (1 if c == '"' else 2)
            while j < n and text[j] != '"':
                j += 2 if text[j] == "\\" else 1
            j = min(n, j + 1)
            out.append(blank(text[i:j]))
            i = j
        elif c == "'":
            # A char literal ('a', '\n', '\u{1F600}') or a lifetime ('a).
            m = re.match(r"'(\\u\{[0-9A-Fa-f]+\}|\\.|[^\\'\n])'", text[i:])
            if m:
                out.append(blank(m.group(0)))
                i += m.end()
            else:
                out.append(c)
                i += 1
        else:
            out.append(c)
            i += 1
    return "".join(out)


def expand_use_tree(tree):
    """`a::{b, c::{self, d}}` -> [[a,b], [a,c], [a,c,d]] (aliases dropped)."""
    tree = re.sub(r"\s+as\s+" + IDENT, "", tree)
    tree = re.sub(r"\s+", "", tree)

    def split_top(s):
        parts, depth, cur = [], 0, ""
        for ch in s:
            if ch == "{":
                depth += 1
            elif ch == "}":
                depth -= 1
            if ch == "," and depth == 0:
                parts.append(cur)
                cur = ""
            else:
                cur += ch
        if cur:
            parts.append(cur)
        return parts

    def expand(prefix, s):
        if "{" in s:
            head, _, body = s.partition("{")
            body = body[: body.rfind("}")]
            head_segs = [x for x in head.split("::") if x]
            result = []
            for part in split_top(body):
                if part == "self":
                    result.append(prefix + head_segs)
                else:
                    result.extend(expand(prefix + head_segs, part))
            return result
        segs = [x for x in s.split("::") if x]
        return [prefix + segs]

    return expand([], tree)


class Crate:
    def __init__(self, src):
        self.src = src
        self.files = {}  # module path tuple -> file path (relative to src)
        for root, _dirs, names in os.walk(src):
            for name in names:
                if not name.endswith(".rs"):
                    continue
                rel = os.path.relpath(os.path.join(root, name), src)
                if rel == "main.rs":
                    continue  # the binary: a crate of its own
                parts = rel[:-3].split(os.sep)
                if parts == ["lib"]:
                    mod = ()
                elif parts[-1] == "mod":
                    mod = tuple(parts[:-1])
                else:
                    mod = tuple(parts)
                self.files[mod] = rel
        self.text = {}
        self.children = defaultdict(set)
        for mod, rel in self.files.items():
            with open(os.path.join(src, rel), encoding="utf-8") as f:
                self.text[mod] = strip_comments_and_strings(f.read())
        for mod in self.files:
            if mod:
                self.children[mod[:-1]].add(mod[-1])
        self.reexports = {mod: self._reexports(mod) for mod in self.files}

    def _reexports(self, mod):
        """`pub use child::Item;` in `mod`'s file: Item -> full path."""
        out = {}
        for m in re.finditer(r"\bpub(?:\s*\([^)]*\))?\s+use\s+([^;]+);", self.text[mod]):
            for segs in expand_use_tree(m.group(1)):
                if not segs or segs[-1] == "*":
                    continue
                full = self.absolute(mod, segs, 0)
                if full is not None:
                    out[segs[-1]] = full
        return out

    def absolute(self, mod, segs, inline_depth):
        """The absolute module path of `segs` written in `mod` (inside
        `inline_depth` inline modules), or None for other crates."""
        segs = list(segs)
        base = None
        first = segs[0]
        if first == "crate":
            base, segs = [], segs[1:]
        elif first in ("super", "self"):
            base = list(mod)
            depth = inline_depth
            while segs and segs[0] in ("super", "self"):
                if segs[0] == "super":
                    if depth > 0:
                        depth -= 1
                    elif base:
                        base.pop()
                    else:
                        return None
                segs = segs[1:]
        elif inline_depth == 0 and first in self.children.get(mod, ()):
            base = list(mod)
        else:
            return None
        return tuple(base) + tuple(segs)

    def resolve(self, full, follow=True):
        """The module (file) that defines the item named by `full`."""
        cur = ()
        rest = list(full)
        while rest and cur + (rest[0],) in self.files:
            cur = cur + (rest.pop(0),)
        if follow and rest and rest[0] in self.reexports.get(cur, {}):
            target = self.reexports[cur][rest[0]]
            if target != full:
                return self.resolve(target, follow=False)
        return cur

    def inline_spans(self, mod):
        """(start, end) of every inline `mod name { ... }` body."""
        text = self.text[mod]
        spans = []
        for m in re.finditer(r"\bmod\s+" + IDENT + r"\s*\{", text):
            depth, j = 1, m.end()
            while j < len(text) and depth:
                if text[j] == "{":
                    depth += 1
                elif text[j] == "}":
                    depth -= 1
                j += 1
            spans.append((m.end(), j))
        return spans

    def imports(self, mod):
        """[(target module, line, path text)] for every path in `mod`."""
        text = self.text[mod]
        spans = self.inline_spans(mod)

        def depth_at(pos):
            return sum(1 for a, b in spans if a <= pos < b)

        def line_at(pos):
            return text.count("\n", 0, pos) + 1

        found = []
        # Visibility paths (`pub(in crate::a)`) name no dependency.
        text_wo_vis = re.sub(r"\bpub\s*\(\s*in\s+[^)]*\)", lambda m: " " * len(m.group(0)), text)
        uses = list(re.finditer(r"\buse\s+([^;{]*(?:\{[^;]*)?);", text_wo_vis))
        covered = []
        for m in uses:
            covered.append((m.start(), m.end()))
            for segs in expand_use_tree(m.group(1)):
                if not segs or segs[-1] == "*" and len(segs) == 1:
                    continue
                segs = [s for s in segs if s != "*"]
                full = self.absolute(mod, segs, depth_at(m.start()))
                if full is not None:
                    found.append((self.resolve(full), line_at(m.start()), "::".join(segs)))
        children = "|".join(sorted(self.children.get(mod, ()))) or "(?!)"
        inline = re.compile(
            r"(?<![A-Za-z0-9_:])((?:crate|super|self|" + children + r")(?:\s*::\s*" + IDENT + r")+)"
        )
        for m in inline.finditer(text_wo_vis):
            if any(a <= m.start() < b for a, b in covered):
                continue
            segs = [s.strip() for s in m.group(1).split("::")]
            if len(segs) < 2 and segs[0] not in ("crate",):
                continue
            full = self.absolute(mod, segs, depth_at(m.start()))
            if full is not None:
                found.append((self.resolve(full), line_at(m.start()), "::".join(segs)))
        return found


def top(mod):
    return mod[0] if mod else "crate"


def layer_of(name):
    for i, layer in enumerate(LAYERS):
        if name in layer:
            return i
    return None


def sccs(graph):
    """Strongly connected components with more than one node (Tarjan)."""
    index, low, stack, on, out = {}, {}, [], set(), []
    counter = [0]

    def visit(v):
        index[v] = low[v] = counter[0]
        counter[0] += 1
        stack.append(v)
        on.add(v)
        for w in sorted(graph.get(v, ())):
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


def cycle_in(graph, comp):
    """The shortest cycle inside the strongly connected component `comp`,
    as a list that starts and ends with the same node."""
    members, best = set(comp), None
    for start in comp:
        parent, queue, found = {start: None}, [start], None
        while queue and found is None:
            v = queue.pop(0)
            for w in sorted(graph.get(v, ())):
                if w == start:
                    found = v
                    break
                if w in members and w not in parent:
                    parent[w] = v
                    queue.append(w)
        if found is None:
            continue
        path, x = [], found
        while x is not None:
            path.append(x)
            x = parent[x]
        cycle = path[::-1] + [start]
        if best is None or len(cycle) < len(best):
            best = cycle
    return best or comp + comp[:1]


def check(src):
    crate = Crate(src)
    errors = []
    file_graph = defaultdict(set)
    module_graph = defaultdict(set)
    for mod in sorted(crate.files):
        rel = crate.files[mod]
        for target, line, path in crate.imports(mod):
            if target == mod:
                continue
            a, b = top(mod), top(target)
            if a != b:
                module_graph[a].add(b)
                la, lb = layer_of(a), layer_of(b)
                if la is None:
                    errors.append(f"src/{rel}:{line}: module `{a}` has no layer in scripts/check-layers.py LAYERS")
                elif lb is None:
                    errors.append(f"src/{rel}:{line}: `{path}`: module `{b}` has no layer in scripts/check-layers.py LAYERS")
                elif lb >= la:
                    errors.append(
                        f"src/{rel}:{line}: `{path}`: {a} (layer {la}) may not import {b} (layer {lb})"
                    )
                for importer, banned in FORBIDDEN:
                    if a == importer and b in banned:
                        errors.append(f"src/{rel}:{line}: `{path}`: {a} must not import {b}")
            # The one exemption: a file using its parent's module root (or,
            # for a module nested deeper, an enclosing module's root).
            if len(target) < len(mod) and mod[: len(target)] == target:
                continue
            file_graph[rel].add(crate.files[target])
    for comp in sccs(module_graph):
        errors.append(
            f"import cycle between modules ({len(comp)} tangled, shortest cycle shown): "
            + " -> ".join(cycle_in(module_graph, comp))
        )
    for comp in sccs(file_graph):
        cycle = cycle_in(file_graph, comp)
        errors.append(
            f"import cycle between files ({len(comp)} tangled, shortest cycle shown): "
            + " -> ".join("src/" + f for f in cycle)
        )
    return errors, module_graph, file_graph


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    here = os.path.dirname(os.path.abspath(__file__))
    parser.add_argument("--src", default=os.path.join(here, "..", "src"))
    parser.add_argument("--graph", action="store_true", help="print the module graph")
    args = parser.parse_args()
    errors, modules, _files = check(args.src)
    if args.graph:
        for name in sorted(set(modules) | {b for v in modules.values() for b in v}):
            print(f"{name} -> {', '.join(sorted(modules.get(name, ()))) or '(nothing)'}")
        return 0
    for e in errors:
        print(e)
    if errors:
        print(f"check-layers: {len(errors)} violation(s) of the layering (docs/ARCHITECTURE.md)")
        return 1
    print("check-layers: imports follow the layering")
    return 0


if __name__ == "__main__":
    sys.exit(main())

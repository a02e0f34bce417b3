#!/usr/bin/env python3
"""List the imports between the crate's modules (`use crate::...`, `use super::...`, and paths
such as `crate::kernels::Matrix` or `$crate::...` in code) and fail if they form a circle.

A module is a file: src/kernels/mod.rs is `kernels`, src/kernels/exact.rs is `kernels::exact`.
An import names the longest module that prefixes its path. Comments (and so doc links) do not
count; `mod x;` declarations do not count (a parent may declare its children), but `pub use
child::X` in a parent does. Files that are test modules (`#[cfg(test)] mod x;`) are left out.

Usage: python3 scripts/import_cycles.py [--edges]   (run from the repository root)
"""
import os
import re
import sys

SRC = "src"


def module_of(path):
    rel = os.path.relpath(path, SRC)[:-3].split(os.sep)
    if rel[-1] in ("mod", "lib", "main"):
        rel = rel[:-1]
    return "::".join(rel)


def strip_comments(text):
    text = re.sub(r"/\*.*?\*/", "", text, flags=re.S)
    return "\n".join(line.split("//")[0] if "\"" not in line else re.sub(r"^\s*//.*", "", line)
                     for line in text.split("\n"))


def expand_use(tree):
    """`a::{b, c::{d, self}}` -> ['a::b', 'a::c::d', 'a::c']"""
    tree = tree.strip()
    m = re.match(r"^([\w:$]*?)(::)?\{(.*)\}$", tree, flags=re.S)
    if not m:
        return [re.sub(r"\s+as\s+\w+$", "", tree)]
    prefix, inner = m.group(1), m.group(3)
    parts, depth, cur = [], 0, ""
    for ch in inner:
        if ch == "," and depth == 0:
            parts.append(cur)
            cur = ""
            continue
        depth += ch == "{"
        depth -= ch == "}"
        cur += ch
    parts.append(cur)
    out = []
    for part in filter(str.strip, parts):
        for sub in expand_use(part):
            out.append(prefix if sub == "self" else (prefix + "::" + sub if prefix else sub))
    return out


def resolve(module, path, modules):
    parts = path.split("::")
    if parts[0] in ("crate", "$crate"):
        base = []
    elif parts[0] == "super":
        base = module.split("::")[:-1] if module else []
        parts = parts[1:]
        while parts and parts[0] == "super":
            base, parts = base[:-1], parts[1:]
        parts = ["crate"] + parts
    elif parts[0] == "self":
        base, parts = (module.split("::") if module else []), ["crate"] + parts[1:]
    else:
        return None
    names = base + parts[1:]
    for n in range(len(names), -1, -1):
        candidate = "::".join(names[:n])
        if candidate in modules:
            return candidate
    return None


def main():
    files = [os.path.join(d, f) for d, _, fs in os.walk(SRC) for f in fs if f.endswith(".rs")]
    texts = {f: open(f).read() for f in files}
    test_modules = set()
    for f, text in texts.items():
        for name in re.findall(r"#\[cfg\(test\)\]\s*(?:pub(?:\(crate\))?\s+)?mod\s+(\w+);", text):
            parent = module_of(f)
            test_modules.add(f"{parent}::{name}" if parent else name)
    modules = {module_of(f): f for f in files if module_of(f) not in test_modules}
    modules.pop("", None)  # lib.rs / main.rs: the crate root only re-exports and declares
    edges = set()
    for module, f in modules.items():
        code = strip_comments(texts[f])
        # Leave out inline test modules.
        code = re.split(r"#\[cfg\(test\)\]\s*mod\s+tests\s*\{", code)[0]
        paths = []
        for tree in re.findall(r"\buse\s+([^;]+);", code, flags=re.S):
            paths += expand_use(" ".join(tree.split()))
        paths += re.findall(r"(?<![\w:])((?:\$?crate|super)(?:::\w+)+)", code)
        for path in paths:
            target = resolve(module, path.replace(" ", ""), modules)
            if target and target != module:
                edges.add((module, target))
    if "--edges" in sys.argv:
        for a, b in sorted(edges):
            print(f"{a} -> {b}")
    # Circles: strongly connected components of more than one module.
    graph = {m: sorted(b for a, b in edges if a == m) for m in modules}
    index, low, stack, on, sccs, counter = {}, {}, [], set(), [], [0]

    def visit(v):
        index[v] = low[v] = counter[0]
        counter[0] += 1
        stack.append(v)
        on.add(v)
        for w in graph[v]:
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            scc = []
            while True:
                w = stack.pop()
                on.discard(w)
                scc.append(w)
                if w == v:
                    break
            if len(scc) > 1:
                sccs.append(sorted(scc))

    for m in sorted(modules):
        if m not in index:
            visit(m)
    print(f"{len(modules)} modules, {len(edges)} imports between them")
    for scc in sccs:
        print("circle:", " <-> ".join(scc))
    sys.exit(1 if sccs else 0)


if __name__ == "__main__":
    main()

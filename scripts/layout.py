#!/usr/bin/env python3
"""The shape of src/: import cycles between files, files and functions past their size limits.

    python3 scripts/layout.py            # report; exit 1 when a limit is broken
    python3 scripts/layout.py --graph    # also print every file's imports

Limits (CONTRIBUTING.md): no import cycle between files of `src/`; no file over 600 lines outside
its tests; no function over 120 lines. Test code is left out of all three: files named `tests.rs`
or `*_tests.rs`, and a file's `#[cfg(test)] mod tests` block (which the project puts at the end).

An import is any path through `crate::` or `super::` (in `use` trees, braces included, and inline),
resolved to the file of the longest module prefix. A `mod x;` declaration is not an import; a
parent's `pub use x::Y` is. Rust's parser is not used: the scan strips comments and string
literals first, which is exact enough for this crate's code.
"""

import os
import re
import sys

SRC = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "src")
FILE_LIMIT = 600
FN_LIMIT = 120


def module_path(rel):
    parts = rel[:-3].split("/")
    if parts[-1] in ("mod", "lib", "main"):
        parts = parts[:-1]
    return tuple(parts)


def is_test_file(rel):
    name = os.path.basename(rel)
    return name == "tests.rs" or name.endswith("_tests.rs")


def strip(text):
    """Comments and string/char literals blanked (newlines kept, so line numbers hold)."""
    out = []
    i, n = 0, len(text)
    while i < n:
        c = text[i]
        if text.startswith("//", i):
            j = text.find("\n", i)
            j = n if j < 0 else j
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
            out.append("\n" * text.count("\n", i, j))
            i = j
        elif c == "r" and re.match(r'r#*"', text[i:i + 8]) and (i == 0 or not (text[i - 1].isalnum() or text[i - 1] == "_")):
            hashes = re.match(r'r(#*)"', text[i:]).group(1)
            end = text.find('"' + hashes, i + 2 + len(hashes))
            end = n if end < 0 else end + 1 + len(hashes)
            out.append('""' + "\n" * text.count("\n", i, end))
            i = end
        elif c == '"':
            j = i + 1
            while j < n and text[j] != '"':
                j += 2 if text[j] == "\\" else 1
            out.append('""' + "\n" * text.count("\n", i, j))
            i = j + 1
        elif c == "'":
            m = re.match(r"'(\\.[^']*|[^\\'])'", text[i:])
            if m:
                out.append("' '")
                i += m.end()
            else:  # a lifetime
                out.append(c)
                i += 1
        else:
            out.append(c)
            i += 1
    return "".join(out)


def cut_tests(code):
    m = re.search(r"#\[cfg\(test\)\]\s*(pub(\([a-z]+\))?\s+)?mod\s+\w+\s*\{", code)
    return code[: m.start()] if m else code


def use_paths(tree, prefix=""):
    """Paths of a `use` tree: `a::{b, c::{d, e}}` → a::b, a::c::d, a::c::e."""
    tree = tree.strip()
    m = re.match(r"^([\w:]*?)(::)?\{(.*)\}$", tree, re.S)
    if m:
        base = prefix + m.group(1) + ("::" if m.group(1) else "")
        body, depth, cur, items = m.group(3), 0, "", []
        for ch in body:
            if ch == "," and depth == 0:
                items.append(cur)
                cur = ""
                continue
            depth += ch == "{"
            depth -= ch == "}"
            cur += ch
        items.append(cur)
        paths = []
        for item in items:
            if item.strip():
                paths += use_paths(item, base)
        return paths
    tree = re.sub(r"\s+as\s+\w+$", "", tree)
    return [prefix + tree]


def resolve(path, here, modules):
    segs = [s for s in re.split(r"\s*::\s*", path.strip()) if s]
    if not segs:
        return None
    if segs[0] == "crate":
        cur, segs = (), segs[1:]
    elif segs[0] in ("super", "self"):
        cur = here
        while segs and segs[0] in ("super", "self"):
            if segs[0] == "super":
                cur = cur[:-1]
            segs = segs[1:]
    else:
        return None
    best = cur if cur in modules else None
    for k in range(1, len(segs) + 1):
        cand = cur + tuple(segs[:k])
        if cand in modules:
            best = cand
    return best


def functions(code):
    """(name, first line, line count) of every `fn` with a body."""
    found = []
    for m in re.finditer(r"\bfn\s+(\w+)", code):
        i = m.end()
        depth = 0
        while i < len(code) and code[i] not in "{;":
            if code[i] in "([<":
                depth += 1
            elif code[i] in ")]>":
                depth -= 1
            i += 1
        if i >= len(code) or code[i] == ";":
            continue
        j, depth = i, 0
        while j < len(code):
            if code[j] == "{":
                depth += 1
            elif code[j] == "}":
                depth -= 1
                if depth == 0:
                    break
            j += 1
        start = code.count("\n", 0, m.start()) + 1
        found.append((m.group(1), start, code.count("\n", m.start(), j) + 1))
    return found


def cycles(graph):
    index, low, stack, on, comps, counter = {}, {}, [], set(), [], [0]

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
                comps.append(sorted(comp))

    sys.setrecursionlimit(10000)
    for v in sorted(graph):
        if v not in index:
            visit(v)
    return comps


def main():
    files = {}
    for root, _, names in os.walk(SRC):
        for name in names:
            if name.endswith(".rs"):
                rel = os.path.relpath(os.path.join(root, name), SRC)
                files[rel] = open(os.path.join(root, name), encoding="utf-8").read()
    modules = {module_path(rel): rel for rel in files if rel != "main.rs"}
    graph, long_files, long_fns = {}, [], []
    for rel, text in sorted(files.items()):
        if is_test_file(rel) or rel == "main.rs":
            continue
        code = cut_tests(strip(text))
        here = module_path(rel)
        paths = []
        for u in re.finditer(r"\buse\s+([^;]+);", code):
            paths += use_paths(u.group(1))
        paths += re.findall(r"\b(?:crate|super)(?:\s*::\s*\w+)+", code)
        deps = set()
        for p in paths:
            target = resolve(p, here, modules)
            if target is not None and modules[target] != rel and not is_test_file(modules[target]):
                deps.add(modules[target])
        graph[rel] = deps
        lines = code.count("\n") + 1
        if lines > FILE_LIMIT:
            long_files.append((lines, rel))
        for name, line, length in functions(code):
            long_fns.append((length, f"{rel}:{line} {name}"))
    if "--graph" in sys.argv:
        for rel in sorted(graph):
            print(f"{rel}: {' '.join(sorted(graph[rel]))}")
    found = cycles(graph)
    long_fns.sort(reverse=True)
    print(f"import cycles between files of src/: {len(found)}")
    for comp in found:
        print("  " + " ⇄ ".join(comp))
    print(f"files over {FILE_LIMIT} lines (tests left out): {len(long_files)}")
    for lines, rel in sorted(long_files, reverse=True):
        print(f"  {lines:5} {rel}")
    over = [f for f in long_fns if f[0] > FN_LIMIT]
    print(f"functions over {FN_LIMIT} lines: {len(over)}; the longest five:")
    for length, where in long_fns[:5]:
        print(f"  {length:5} {where}")
    return 1 if found or long_files or over else 0


if __name__ == "__main__":
    sys.exit(main())

#!/usr/bin/env python3
"""Byte-identical check of two vmshim builds:
same-reports.py OLD_VMSHIM NEW_VMSHIM DIR [-j N] [--added TEXT]...

For every trace under DIR (a file that starts with the 8 bytes VMSHIMT1), runs
`vmshim report T`, `vmshim report --json T` and `vmshim report --html F T` with both binaries
and compares stdout, stderr, the exit status and the HTML page. Prints the count compared and
every difference; exits 1 on any. DIR is only read (the pages go to a temporary directory).
`--added TEXT` leaves out of the comparison the lines of the new build's output that contain
TEXT: a field the newer build adds on purpose (say which in the commit or note).
"""
import argparse
import concurrent.futures
import difflib
import os
import subprocess
import sys
import tempfile

MAGIC = b"VMSHIMT1"


def traces(root):
    for d, _, files in os.walk(root):
        for f in sorted(files):
            p = os.path.join(d, f)
            try:
                if os.path.isfile(p) and not os.path.islink(p):
                    with open(p, "rb") as fh:
                        if fh.read(8) == MAGIC:
                            yield p
            except OSError:
                pass


def run(vmshim, args, tmp):
    page = os.path.join(tmp, "page.html")
    argv = [vmshim, "report"] + [page if a == "@PAGE" else a for a in args]
    r = subprocess.run(argv, capture_output=True, timeout=600)
    html = None
    if "@PAGE" in args and os.path.exists(page):
        with open(page, "rb") as fh:
            html = fh.read()
        os.unlink(page)
    # The binary's own path may appear in a message (the shim beside it): name it alike.
    norm = lambda b: b.replace(os.fsencode(vmshim), b"VMSHIM")
    return r.returncode, norm(r.stdout), norm(r.stderr), html


def first_difference(a, b, what):
    if a == b:
        return None
    if a is None or b is None:
        return f"{what}: present in one only"
    al = a.decode("utf-8", "replace").splitlines()
    bl = b.decode("utf-8", "replace").splitlines()
    diff = list(difflib.unified_diff(al, bl, "old", "new", lineterm="", n=1))
    return f"{what}:\n" + "\n".join(line[:300] for line in diff[:40])


ADDED = []


def without_added(b):
    if b is None or not ADDED:
        return b
    return b"".join(l for l in b.splitlines(keepends=True) if not any(t in l for t in ADDED))


def compare(old, new, trace):
    out = []
    with tempfile.TemporaryDirectory() as tmp:
        for args in ([trace], ["--json", trace], ["--html", "@PAGE", trace]):
            o = run(old, args, tmp)
            n = run(new, args, tmp)
            n = (n[0], without_added(n[1]), n[2], n[3])
            name = "vmshim report " + " ".join(args)
            if o[0] != n[0]:
                out.append(f"{name}: exit {o[0]} -> {n[0]}")
            for i, what in ((1, "stdout"), (2, "stderr"), (3, "html")):
                d = first_difference(o[i], n[i], f"{name} {what}")
                if d:
                    out.append(d)
    return trace, out


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("old")
    ap.add_argument("new")
    ap.add_argument("dir")
    ap.add_argument("-j", type=int, default=2)
    ap.add_argument("--added", action="append", default=[], help="a text the new build adds on purpose")
    a = ap.parse_args()
    ADDED.extend(t.encode() for t in a.added)
    old, new = os.path.abspath(a.old), os.path.abspath(a.new)
    found = list(traces(a.dir))
    differing = 0
    with concurrent.futures.ThreadPoolExecutor(a.j) as pool:
        for n, (trace, diffs) in enumerate(pool.map(lambda t: compare(old, new, t), found), 1):
            if diffs:
                differing += 1
                print(f"== {trace}", flush=True)
                for d in diffs:
                    print(d, flush=True)
            if n % 100 == 0:
                print(f"same-reports: {n} of {len(found)} compared, {differing} differ", file=sys.stderr, flush=True)
    print(f"compared {len(found)} traces x 3 reports (text, --json, --html): {differing} differ")
    sys.exit(1 if differing else 0)


if __name__ == "__main__":
    main()

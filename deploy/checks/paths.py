#!/usr/bin/env python3
"""Every deploy/ path the runbooks and the manifests name exists (scripts/check-deploy).

A runbook that describes an overlay, a component or a file of deploy/ that is not there
cannot be followed (issue #17: the "signer in its own cluster" overlay was described but
did not exist). Read: docs/runbooks/*.md and every YAML and Markdown file under deploy/.
Named paths: "deploy/<dir>/..." (a leading "../" of a site overlay dropped) and
"../../<dir>/..." as an overlay or component names them (deploy/<dir>/...), where <dir>
is one of deploy/'s own directories. (What kustomize itself resolves, it checks when
check-deploy renders the overlays.) --self-test requires a named path that does not exist to fail.
Exit status 0 when all exist, 1 otherwise.
"""

import argparse
import pathlib
import re
import sys


def deploy_dirs(root):
    return sorted(p.name for p in (root / "deploy").iterdir() if p.is_dir())


def named_paths(text, dirs):
    alt = "|".join(map(re.escape, dirs))
    rooted = re.findall(rf"(?<![\w./-])(?:\.\./)*(deploy/(?:{alt})(?:/[\w.-]+)*)", text)
    relative = re.findall(rf"(?<![\w./-])((?:\.\./)+(?:{alt})(?:/[\w.-]+)*)", text)
    return rooted, relative


def check(root, files, dirs):
    problems, seen = [], 0
    for f in files:
        text = f.read_text()
        rooted, relative = named_paths(text, dirs)
        for p in rooted:
            seen += 1
            target = root / p.rstrip(".")
            if not target.exists():
                problems.append(f"{f.relative_to(root)}: names {p}, which does not exist")
        for p in relative:
            seen += 1
            target = "deploy/" + re.sub(r"^(?:\.\./)+", "", p).rstrip(".")
            if not (root / target).exists():
                problems.append(f"{f.relative_to(root)}: names {p} (as in an overlay: {target}), "
                                f"which does not exist")
    return problems, seen


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--root", default=".")
    ap.add_argument("--self-test", action="store_true")
    args = ap.parse_args()
    root = pathlib.Path(args.root).resolve()
    dirs = deploy_dirs(root)
    files = sorted((root / "docs" / "runbooks").glob("*.md"))
    files += sorted(p for p in (root / "deploy").rglob("*") if p.suffix in (".yaml", ".md"))
    problems, seen = check(root, files, dirs)
    print(f"    {seen} deploy/ paths named in {len(files)} files")
    if args.self_test:
        probe = root / "target" / "paths-self-test" / "deploy" / "overlays" / "x" / "kustomization.yaml"
        probe.parent.mkdir(parents=True, exist_ok=True)
        probe.write_text("# lists ../../base/pki/no-such-dir and deploy/overlays/no-such-overlay\n")
        found, _ = check(root / "target" / "paths-self-test", [probe], dirs)
        if len(found) != 2:
            problems.append(f"self-test: {len(found)} of 2 missing paths caught in {probe}")
        else:
            print("    self-test: 2 of 2 missing paths caught")
    for p in problems:
        print(f"ERROR {p}")
    return 1 if problems else 0


if __name__ == "__main__":
    sys.exit(main())

#!/usr/bin/env python3
"""Every deploy/ path the runbooks and the manifests name exists (scripts/check-deploy).

A runbook that describes an overlay, a component or a file of deploy/ that is not there
cannot be followed (issue #17: the "signer in its own cluster" overlay was described but
did not exist). Read: docs/runbooks/*.md and every YAML and Markdown file under deploy/.
Named paths: "deploy/<dir>/..." (a leading "../" of a site overlay dropped) and
"../../<dir>/..." as an overlay or component names them (deploy/<dir>/...), where <dir>
is one of deploy/'s own directories. (What kustomize itself resolves, it checks when
check-deploy renders the overlays.) Given the rendered overlays, also: every kubectl
TYPE/NAME of a Sealtrail workload in that Markdown (deployment/..., statefulset/...,
cronjob/..., pod/<statefulset>-<n>) names a workload of that kind. --self-test requires a
named path that does not exist, a Deployment that is a StatefulSet and a pod ordinal of a
non-StatefulSet to fail.
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


# kubectl's TYPE/NAME forms of the workload kinds the runbooks address.
WORKLOAD_TYPES = {"deployment": "Deployment", "deploy": "Deployment", "statefulset": "StatefulSet",
                  "sts": "StatefulSet", "daemonset": "DaemonSet", "ds": "DaemonSet",
                  "cronjob": "CronJob", "cj": "CronJob"}


def rendered_workloads(paths):
    """{(kind, name)} of the workloads in the rendered overlays, and the StatefulSets'
    names (their pods are <name>-<ordinal>)."""
    import yaml
    found = set()
    for p in paths:
        for d in yaml.safe_load_all(pathlib.Path(p).read_text()):
            if isinstance(d, dict) and d.get("kind") in set(WORKLOAD_TYPES.values()):
                found.add((d["kind"], (d.get("metadata") or {}).get("name")))
    return found


def check_workloads(root, files, workloads):
    """kubectl's TYPE/NAME (and pod/<statefulset>-<n>) of a Sealtrail workload in a runbook
    must name a workload of that kind in the rendered overlays: a runbook that says
    `deployment/sealtrail-ingester` for a StatefulSet cannot be followed."""
    problems, seen = [], 0
    alt = "|".join(WORKLOAD_TYPES)
    sts = {n for k, n in workloads if k == "StatefulSet"}
    for f in files:
        text = f.read_text()
        for typ, name in re.findall(rf"(?<![\w./-])({alt})/(sealtrail-[a-z0-9-]*[a-z0-9])\b", text):
            seen += 1
            if (WORKLOAD_TYPES[typ], name) not in workloads:
                have = sorted(k for k, n in workloads if n == name)
                problems.append(f"{f.relative_to(root)}: names {typ}/{name}, but the rendered overlays have "
                                f"{' and '.join(have) + ' ' + name if have else 'no such workload'}")
        for name in re.findall(r"(?<![\w./-])pod/(sealtrail-[a-z0-9-]+?)-[0-9]+\b", text):
            seen += 1
            if name not in sts:
                problems.append(f"{f.relative_to(root)}: names pod/{name}-<n>, but {name} is no StatefulSet "
                                f"of the rendered overlays (its pods have no stable names)")
    return problems, seen


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--root", default=".")
    ap.add_argument("--self-test", action="store_true")
    ap.add_argument("rendered", nargs="*", help="rendered overlays: check the workloads runbooks name too")
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
    if args.rendered:
        workloads = rendered_workloads(args.rendered)
        texts = [f for f in files if f.suffix == ".md"]
        found, seen = check_workloads(root, texts, workloads)
        problems += found
        print(f"    {seen} kubectl workload names in {len(texts)} Markdown files, {len(workloads)} workloads rendered")
        if args.self_test:
            probe = root / "target" / "paths-self-test" / "runbook.md"
            probe.write_text("kubectl -n sealtrail rollout status deployment/sealtrail-ingester\n"
                             "kubectl logs pod/sealtrail-verify-0\n")
            caught, _ = check_workloads(root, [probe], workloads | {("Deployment", "sealtrail-verify")})
            if len(caught) != 2:
                problems.append(f"self-test: {len(caught)} of 2 wrong workload names caught in {probe}")
            else:
                print("    self-test: 2 of 2 wrong workload names caught")
    for p in problems:
        print(f"ERROR {p}")
    return 1 if problems else 0


if __name__ == "__main__":
    sys.exit(main())

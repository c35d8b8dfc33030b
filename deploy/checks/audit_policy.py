#!/usr/bin/env python3
"""The audit policy's levels, evaluated the way kube-apiserver does (first matching rule).

  audit_policy.py [--self-test] POLICY
      checks that writes of pods and workload controllers are logged at Request or
      above (their spec, image, hostPath volumes, privileges and service account are
      evidence), and that Secrets, ConfigMaps and token requests never are (issue #17,
      item 7; tests/tests/deploy.rs checks the rest of the policy's order).
  audit_policy.py --measure EVENTS --baseline OLD_POLICY POLICY
      the size impact on a set of sample events (JSON Lines, one audit event each): each
      event is given the level each policy assigns to its request and cut to that level
      (None: dropped; Metadata: no request or response object; Request: no response
      object; a stage in omitStages: dropped), and the bytes of the compact JSON of what
      remains are summed. An event
      captured at a lower level than the policy assigns keeps what it has (the sample
      cannot add bodies it lacks); the report counts them.
Exit status 0 when the checks hold, 1 otherwise.
"""

import argparse
import copy
import json
import pathlib
import sys

import yaml

LEVELS = ["None", "Metadata", "Request", "RequestResponse"]
# Writes whose request body is evidence: (API group, resource) of pods and the workload
# controllers that create them.
WORKLOADS = [("", "pods"), ("", "replicationcontrollers"), ("", "podtemplates"),
             ("apps", "deployments"), ("apps", "daemonsets"), ("apps", "statefulsets"),
             ("apps", "replicasets"), ("batch", "jobs"), ("batch", "cronjobs")]
WRITES = ["create", "update", "patch"]
NEVER_BODIES = [("", "secrets"), ("", "configmaps"), ("", "serviceaccounts/token"),
                ("authentication.k8s.io", "tokenreviews")]
# Who writes workloads: a person, a CI robot, and the controllers themselves.
WRITERS = [("alice@example.com", ["system:authenticated"]),
           ("system:serviceaccount:ci:deployer", ["system:serviceaccounts", "system:serviceaccounts:ci", "system:authenticated"]),
           ("system:serviceaccount:kube-system:replicaset-controller",
            ["system:serviceaccounts", "system:serviceaccounts:kube-system", "system:authenticated"]),
           ("system:kube-controller-manager", ["system:authenticated"])]


def _url_match(pattern, url):
    return url.startswith(pattern[:-1]) if pattern.endswith("*") else url == pattern


def _resource_match(rule_resources, group, resource):
    """resource is "pods" or "pods/exec"."""
    for gr in rule_resources:
        if gr.get("group", "") != group:
            continue
        names = gr.get("resources") or []
        if not names:
            return True
        base, _, sub = resource.partition("/")
        for n in names:
            if n == resource or n == "*" or (n == f"{base}/*" and sub) or (n == f"*/{sub}" and sub):
                return True
    return False


def level_of(policy, req):
    """The level of the first rule that matches req (a dict: user, groups, verb and either
    group/resource/namespace or url), or "None" when no rule matches."""
    for rule in policy.get("rules") or []:
        if rule.get("users") and req["user"] not in rule["users"]:
            continue
        if rule.get("userGroups") and not set(rule["userGroups"]) & set(req["groups"]):
            continue
        if rule.get("verbs") and req["verb"] not in rule["verbs"]:
            continue
        if "url" in req:
            if "resources" in rule or "namespaces" in rule:
                continue
            if rule.get("nonResourceURLs") and not any(_url_match(p, req["url"]) for p in rule["nonResourceURLs"]):
                continue
        else:
            if "nonResourceURLs" in rule:
                continue
            if "resources" in rule and not _resource_match(rule["resources"], req["group"], req["resource"]):
                continue
            if "namespaces" in rule and req.get("namespace", "") not in rule["namespaces"]:
                continue
        return rule["level"]
    return "None"


def check(policy, where):
    problems = []
    for group, resource in WORKLOADS:
        for verb in WRITES:
            for user, groups in WRITERS:
                req = {"user": user, "groups": groups, "verb": verb, "group": group,
                       "resource": resource, "namespace": "default"}
                lvl = level_of(policy, req)
                if LEVELS.index(lvl) < LEVELS.index("Request"):
                    problems.append(f"{where}: {verb} {group or 'core'}/{resource} by {user} is logged at {lvl}, "
                                    f"not Request: the object's spec would not be in the trail")
    for group, resource in NEVER_BODIES:
        for verb in ["get", "list", "create", "update", "patch"]:
            req = {"user": "alice@example.com", "groups": ["system:authenticated"], "verb": verb,
                   "group": group, "resource": resource, "namespace": "default"}
            lvl = level_of(policy, req)
            if LEVELS.index(lvl) > LEVELS.index("Metadata"):
                problems.append(f"{where}: {verb} {group or 'core'}/{resource} is logged at {lvl}: its values "
                                f"would be kept in the immutable trail")
    return problems


def request_of(event):
    user = event.get("user") or {}
    req = {"user": user.get("username", ""), "groups": user.get("groups") or [], "verb": event.get("verb", "")}
    ref = event.get("objectRef")
    if ref:
        res = ref.get("resource", "")
        if ref.get("subresource"):
            res += "/" + ref["subresource"]
        req.update(group=ref.get("apiGroup", ""), resource=res, namespace=ref.get("namespace", ""))
    else:
        req["url"] = (event.get("requestURI") or "").split("?")[0]
    return req


def cut(event, level):
    e = dict(event)
    e["level"] = level
    if LEVELS.index(level) < LEVELS.index("RequestResponse"):
        e.pop("responseObject", None)
    if LEVELS.index(level) < LEVELS.index("Request"):
        e.pop("requestObject", None)
    return e


def size(event):
    return len(json.dumps(event, separators=(",", ":"), ensure_ascii=False).encode())


def measure(events_path, old, new):
    events = [json.loads(line) for line in pathlib.Path(events_path).read_text().splitlines() if line.strip()]
    totals = {"old": 0, "new": 0}
    kept = {"old": 0, "new": 0}
    changed, short = 0, 0
    for e in events:
        req = request_of(e)
        lv = {}
        for name, pol in (("old", old), ("new", new)):
            lv[name] = "None" if e.get("stage") in (pol.get("omitStages") or []) else level_of(pol, req)
            if lv[name] != "None":
                totals[name] += size(cut(e, lv[name]))
                kept[name] += 1
        if lv["old"] != lv["new"]:
            changed += 1
            if LEVELS.index(e.get("level", "None")) < LEVELS.index(lv["new"]):
                short += 1
    n = len(events)
    growth = (totals["new"] - totals["old"]) / totals["old"] * 100 if totals["old"] else 0.0
    print(f"{n} sample events; kept {kept['old']} (old policy) / {kept['new']} (new); "
          f"{changed} change level ({short} captured below the new level, counted as captured)")
    print(f"bytes stored: old {totals['old']} ({totals['old'] / max(kept['old'], 1):.0f}/event), "
          f"new {totals['new']} ({totals['new'] / max(kept['new'], 1):.0f}/event): {growth:+.1f}%")


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--self-test", action="store_true")
    ap.add_argument("--measure", metavar="EVENTS")
    ap.add_argument("--baseline", metavar="OLD_POLICY")
    ap.add_argument("policy")
    args = ap.parse_args()
    policy = yaml.safe_load(pathlib.Path(args.policy).read_text())
    if args.measure:
        if not args.baseline:
            ap.error("--measure needs --baseline")
        measure(args.measure, yaml.safe_load(pathlib.Path(args.baseline).read_text()), policy)
        return 0
    problems = check(policy, args.policy)
    n_rules = len(policy.get("rules") or [])
    print(f"    {args.policy}: {n_rules} rules; {len(WORKLOADS) * len(WRITES) * len(WRITERS)} workload writes "
          f"and {len(NEVER_BODIES) * 5} secret-bearing requests evaluated")
    if args.self_test:
        # Not vacuous: without the workload rule (the policy before issue #17), and with
        # Secrets raised to Request, the check must fail.
        missed = []
        bad = copy.deepcopy(policy)
        bad["rules"] = [r for r in bad["rules"] if not any(
            _resource_match(r.get("resources") or [], "apps", "deployments") and r["level"] == "Request" for _ in [0])]
        if not check(bad, "self-test"):
            missed.append("the policy without its Request rule for workloads")
        bad = copy.deepcopy(policy)
        bad["rules"].insert(0, {"level": "Request", "resources": [{"group": "", "resources": ["secrets"]}]})
        if not check(bad, "self-test"):
            missed.append("Secrets at Request")
        bad = copy.deepcopy(policy)
        bad["rules"].insert(0, {"level": "Metadata", "verbs": ["patch"],
                                "resources": [{"group": "apps", "resources": ["daemonsets"]}]})
        if not check(bad, "self-test"):
            missed.append("DaemonSet patches at Metadata")
        for m in missed:
            problems.append(f"self-test: not caught: {m}")
        print(f"    self-test: {3 - len(missed)} of 3 broken policies caught")
    for p in problems:
        print(f"ERROR {p}")
    return 1 if problems else 0


if __name__ == "__main__":
    sys.exit(main())

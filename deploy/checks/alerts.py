#!/usr/bin/env python3
"""Checks that every alert can fire (scripts/check-deploy; issue #17, item 8).

For each PrometheusRule of the rendered overlays given (and the dashboard's queries,
--dashboard, for the first point):
  - every metric an alert expression reads is exported: a Sealtrail metric (sealtrail_*,
    audit_*) by the Rust source of the crate behind it, found by reading the source (the
    names registered with prometheus-client, under a registry's prefix, and the
    `# TYPE` lines the verifier writes), not by a list kept here; an alert that selects
    job="sealtrail-<component>" must read a metric that component's crates export; any
    other metric must come from an exporter in EXTERNAL that the rendered objects (or
    kube-prometheus-stack) scrape;
  - the verifier's metrics reach Prometheus: a container of the verifier CronJob's pod
    runs sealtrail-push-metrics on the verifier's --metrics-file, in a volume both mount,
    and a ServiceMonitor scrapes the Pushgateway with honorLabels;
  - the apiserver-drop alert counts both plugins that drop events bound to the webhook
    ("webhook" after its retries, "buffered" when the batch buffer is full);
  - every runbook_url names a runbook of docs/runbooks and a section (heading anchor) it
    has, and every alert of the capture group has one;
  - no two Services a ServiceMonitor selects expose its port for the same pods (a double
    scrape doubles every sum).
--self-test breaks copies (a metric no binary exports, the drop alert on plugin="webhook"
only, the CronJob without its pusher, no cert-manager ServiceMonitor, ...) and requires
each to fail. Exit status 0 when all holds, 1 otherwise.
"""

import argparse
import copy
import pathlib
import re
import sys

import yaml

# job label -> the crates whose metrics that scrape target (or push group) carries.
JOB_CRATES = {
    "sealtrail-ingester": ("ingester", "ops"),
    "sealtrail-signer": ("signer", "ops"),
    "sealtrail-anchor": ("signer", "ops"),
    "sealtrail-verify": ("verifier",),
    "sealtrail-cloudwatch": ("cloudwatch", "ops"),
}
OWN_PREFIXES = ("sealtrail_", "audit_")


def _sm_selects(docs, namespace, label, value, honor=False):
    for d in docs:
        if d["kind"] != "ServiceMonitor" or (d.get("metadata") or {}).get("namespace") != namespace:
            continue
        spec = d.get("spec") or {}
        if ((spec.get("selector") or {}).get("matchLabels") or {}).get(label) != value:
            continue
        if not honor or all(e.get("honorLabels") is True for e in spec.get("endpoints") or []):
            return True
    return False


# Metrics of other exporters: (name pattern, exporter, whether the rendered objects make
# Prometheus scrape it; None: kube-prometheus-stack scrapes it itself, install-eks.md step 3).
EXTERNAL = [
    (r"kube_.*", "kube-state-metrics", None),
    (r"apiserver_.*", "kube-apiserver", None),
    (r"up", "Prometheus (scrape health)", None),
    (r"certmanager_.*", "cert-manager's controller",
     lambda docs: _sm_selects(docs, "cert-manager", "app.kubernetes.io/name", "cert-manager")),
    (r"push_time_seconds|push_failure_time_seconds", "the Prometheus Pushgateway",
     lambda docs: _sm_selects(docs, "monitoring", "app.kubernetes.io/name", "prometheus-pushgateway", honor=True)),
]

errors = []


def error(msg):
    errors.append(msg)


# ---------------------------------------------------------------------------------------
# What the binaries export, from the Rust source


def exported_by_source(root):
    """crate -> set of metric names (with the exposition's suffixes) its source exports."""
    out = {}
    for crate in sorted({c for cs in JOB_CRATES.values() for c in cs}):
        names = set()
        for path in sorted((root / crate / "src").rglob("*.rs")):
            # Unit tests register metrics of their own: the code before them only.
            text = path.read_text().split("#[cfg(test)]")[0]
            prefixes = re.findall(r'Registry::with_prefix\(\s*"([a-z_][a-z0-9_]*)"\s*\)', text)
            prefix = prefixes[0] + "_" if prefixes else ""
            local = dict(re.findall(r'let\s+(\w+)\s*=\s*"([a-z_][a-z0-9_]*)"\s*;', text))
            for m in re.finditer(r'\.register(?:_with_unit)?\(\s*(?:"([a-z_:][a-z0-9_:]*)"|'
                                 r'format!\(\s*"\{(\w+)\}([a-z0-9_]*)"|format!\(\s*"\{(\w+)\}\{(\w+)\}")', text):
                literal, var, tail, var2, loopvar = m.groups()
                if literal:
                    names.add(prefix + literal)
                elif var in local:
                    names.add(local[var] + tail)
                elif var2 in local:
                    # Registered in a loop over (name, help, metric) tuples of this file.
                    for t in re.findall(r'(?<!register)\(\s*"([a-z][a-z0-9_]*)",\s*"', text):
                        names.add(local[var2] + t)
            # Text exposition written by hand (the verifier's --metrics-file).
            names |= set(re.findall(r"# TYPE ([a-z_:][a-z0-9_:]*) (?:gauge|counter|histogram|summary)", text))
        exposed = set()
        for n in names:
            exposed |= {n, n + "_total", n + "_bucket", n + "_sum", n + "_count", n + "_created", n + "_info"}
        out[crate] = exposed
    return out


# ---------------------------------------------------------------------------------------
# PromQL: the selectors an expression reads

AGGREGATIONS = {"sum", "min", "max", "avg", "count", "stddev", "stdvar", "topk", "bottomk",
                "quantile", "count_values", "group", "limitk", "limit_ratio"}
KEYWORDS = {"and", "or", "unless", "bool", "offset", "by", "without", "on", "ignoring",
            "group_left", "group_right", "atan2", "inf", "nan"}
LABEL_LISTS = {"by", "without", "on", "ignoring", "group_left", "group_right"}


def _skip_string(expr, i):
    q = expr[i]
    i += 1
    while i < len(expr) and expr[i] != q:
        i += 2 if expr[i] == "\\" else 1
    return i + 1


def _matchers(expr, i):
    """Parses {a="b", c=~"d"} from i (at "{"); returns ({label: (op, value)}, index after)."""
    out, i = {}, i + 1
    while i < len(expr) and expr[i] != "}":
        m = re.compile(r'\s*([a-zA-Z_][a-zA-Z0-9_]*)\s*(=~|!~|!=|=)\s*').match(expr, i)
        if not m:
            i += 1
            continue
        label, op = m.group(1), m.group(2)
        j = m.end()
        if j < len(expr) and expr[j] in "\"'`":
            end = _skip_string(expr, j)
            out[label] = (op, expr[j + 1:end - 1])
            i = end
        else:
            i = j
        while i < len(expr) and expr[i] in " ,\n":
            i += 1
    return out, i + 1


def selectors(expr):
    """[(metric name, {label: (op, value)})] that expr reads."""
    out, i, n = [], 0, len(expr)
    while i < n:
        c = expr[i]
        if c in "\"'`":
            i = _skip_string(expr, i)
        elif c == "[":
            i = expr.index("]", i) + 1
        elif c == "{":
            m, i = _matchers(expr, i)
            if "__name__" in m:
                out.append((m["__name__"][1], m))
        elif c.isdigit() or (c == "." and i + 1 < n and expr[i + 1].isdigit()):
            m = re.compile(r"[0-9.]+(?:e[+-]?[0-9]+)?(?:[smhdwy]|ms)*").match(expr, i)
            i = m.end()
        elif c.isalpha() or c in "_:":
            m = re.compile(r"[a-zA-Z_:][a-zA-Z0-9_:]*").match(expr, i)
            word, i = m.group(0), m.end()
            k = i
            while k < n and expr[k].isspace():
                k += 1
            if word in LABEL_LISTS:
                if k < n and expr[k] == "(":
                    i = expr.index(")", k) + 1
                continue
            if word in KEYWORDS or word in AGGREGATIONS or (k < n and expr[k] == "("):
                continue
            matchers = {}
            if k < n and expr[k] == "{":
                matchers, i = _matchers(expr, k)
            out.append((word, matchers))
        else:
            i += 1
    return out


def matches(matcher, value):
    """Whether a label matcher (op, pattern) admits value."""
    op, pattern = matcher
    if op == "=":
        return value == pattern
    if op == "!=":
        return value != pattern
    hit = re.fullmatch(pattern, value) is not None
    return hit if op == "=~" else not hit


# ---------------------------------------------------------------------------------------
# Checks


def dig(obj, *path):
    for key in path:
        obj = obj.get(key) if isinstance(obj, dict) else None
    return obj


def alerts(docs):
    for d in docs:
        if d["kind"] != "PrometheusRule":
            continue
        for g in dig(d, "spec", "groups") or []:
            for r in g.get("rules") or []:
                if "alert" in r:
                    yield r


def check_metrics(where, docs, exported, panels=()):
    everything = set().union(*exported.values())
    n = 0
    for rule in list(alerts(docs)) + list(panels):
        for metric, labels in selectors(str(rule.get("expr", ""))):
            n += 1
            what = f"{where}: alert {rule['alert']}: {metric}"
            job = labels.get("job")
            if metric.startswith(OWN_PREFIXES):
                if metric not in everything:
                    error(f"{what}: no Sealtrail binary exports it (searched the Rust source of "
                          f"{', '.join(sorted(exported))})")
                    continue
                if job:
                    crates = [c for j, cs in JOB_CRATES.items() if matches(job, j) for c in cs]
                    if not crates:
                        error(f"{what}: job {job[1]!r} is none of {sorted(JOB_CRATES)}")
                    elif not any(metric in exported[c] for c in crates):
                        error(f"{what}: the job {job[1]!r} does not export it (its crates: {', '.join(crates)})")
                continue
            ext = next((e for e in EXTERNAL if re.fullmatch(e[0], metric)), None)
            if ext is None:
                error(f"{what}: neither a Sealtrail metric nor one of a known exporter (EXTERNAL in deploy/checks/alerts.py)")
            elif ext[2] is not None and not ext[2](docs):
                error(f"{what}: {ext[1]} exports it, but no ServiceMonitor of the rendered objects scrapes it")
    return n


def check_apiserver_drops(where, docs):
    found = False
    for rule in alerts(docs):
        for metric, labels in selectors(str(rule.get("expr", ""))):
            if metric != "apiserver_audit_error_total":
                continue
            found = True
            plugin = labels.get("plugin")
            for p in ("webhook", "buffered"):
                if plugin and not matches(plugin, p):
                    error(f"{where}: alert {rule['alert']}: apiserver_audit_error_total{{plugin{plugin[0]}{plugin[1]!r}}} "
                          f"misses the events dropped by the {p!r} plugin")
    if not found:
        error(f"{where}: no alert reads apiserver_audit_error_total (events the apiserver dropped)")


def check_verifier_push(where, docs):
    uses = [r for r in alerts(docs) for m, l in selectors(str(r.get("expr", "")))
            if "job" in l and matches(l["job"], "sealtrail-verify")]
    if not uses:
        error(f"{where}: no alert reads the verifier's own metrics (job=\"sealtrail-verify\")")
    cron = next((d for d in docs if d["kind"] == "CronJob"
                 and (d.get("metadata") or {}).get("name") == "sealtrail-verify"), None)
    if cron is None:
        return
    pod = dig(cron, "spec", "jobTemplate", "spec", "template", "spec") or {}
    containers = (pod.get("initContainers") or []) + (pod.get("containers") or [])
    verify = next((c for c in containers if (c.get("command") or [""])[0].endswith("sealtrail-verify")), None)
    path = next((a.split("=", 1)[1] for a in (verify or {}).get("args") or [] if a.startswith("--metrics-file=")), None)
    if path is None:
        error(f"{where}: CronJob sealtrail-verify: the verifier writes no --metrics-file")
        return
    def mount_of(c):
        return next((m["name"] for m in c.get("volumeMounts") or []
                     if path.startswith(m["mountPath"].rstrip("/") + "/")), None)
    vol = mount_of(verify)
    pusher = [c for c in containers if (c.get("command") or [""])[0].endswith("sealtrail-push-metrics")]
    ok = [c for c in pusher if (c.get("args") or [None])[0] == path and vol and mount_of(c) == vol
          and (c in (pod.get("containers") or []) or c.get("restartPolicy") == "Always")]
    if not ok:
        error(f"{where}: CronJob sealtrail-verify: no sidecar (a container, or an init container with "
              f"restartPolicy Always) runs sealtrail-push-metrics on {path} in the verifier's volume {vol}: "
              f"the verifier's metrics never reach Prometheus")
    if not _sm_selects(docs, "monitoring", "app.kubernetes.io/name", "prometheus-pushgateway", honor=True):
        error(f"{where}: no ServiceMonitor scrapes the Pushgateway with honorLabels (the pushed job label would be lost)")


def dashboard_panels(path):
    """The dashboard's queries as {"alert": "panel <title>", "expr": ...} (checked like alerts)."""
    import json
    out = []
    def walk(panels):
        for p in panels or []:
            for t in p.get("targets") or []:
                if t.get("expr"):
                    out.append({"alert": f"dashboard panel {p.get('title')!r}", "expr": t["expr"]})
            walk(p.get("panels"))
    walk(json.loads(pathlib.Path(path).read_text()).get("panels"))
    return out


# Groups whose every alert must say where its runbook is (the capture alerts, issue #10).
RUNBOOK_REQUIRED_GROUPS = {"sealtrail.capture"}
ROOT = pathlib.Path(".")


def heading_anchors(text):
    """GitHub's anchors of a Markdown file's headings (lowercase, punctuation dropped,
    spaces to "-", repeats numbered)."""
    out, seen = set(), {}
    fence = False
    for line in text.splitlines():
        if line.startswith("```"):
            fence = not fence
        m = None if fence else re.match(r"^#{1,6}\s+(.*?)\s*#*\s*$", line)
        if not m:
            continue
        a = re.sub(r"[^\w\- ]", "", m.group(1).lower()).replace(" ", "-")
        n = seen.get(a, 0)
        seen[a] = n + 1
        out.add(a if n == 0 else f"{a}-{n}")
    return out


def check_runbooks(where, docs, root=None):
    """Every runbook_url names a runbook of this repository and a section it has; the
    alerts of RUNBOOK_REQUIRED_GROUPS all have one."""
    root = root or ROOT
    for d in docs:
        if d["kind"] != "PrometheusRule":
            continue
        for g in dig(d, "spec", "groups") or []:
            for r in g.get("rules") or []:
                if "alert" not in r:
                    continue
                url = (r.get("annotations") or {}).get("runbook_url")
                what = f"{where}: alert {r['alert']}"
                if not url:
                    if g.get("name") in RUNBOOK_REQUIRED_GROUPS:
                        error(f"{what}: no runbook_url (every alert of group {g['name']} needs one)")
                    continue
                path, _, anchor = url.partition("#")
                if not path.startswith("docs/runbooks/") or not (root / path).is_file():
                    error(f"{what}: runbook_url {url}: {path} is not a runbook of docs/runbooks")
                    continue
                if anchor and anchor not in heading_anchors((root / path).read_text()):
                    error(f"{what}: runbook_url {url}: {path} has no section #{anchor}")


def check_double_scrape(where, docs):
    """No two Services a ServiceMonitor selects expose its endpoint port for the same pods:
    each pod would be scraped twice and every sum over its job doubled (the ingester's
    headless Service beside its webhook Service)."""
    services = [d for d in docs if d["kind"] == "Service"]
    for sm in docs:
        if sm["kind"] != "ServiceMonitor":
            continue
        ns = dig(sm, "metadata", "namespace")
        want = dig(sm, "spec", "selector", "matchLabels") or {}
        for ep in dig(sm, "spec", "endpoints") or []:
            by_pods = {}
            for svc in services:
                labels = dig(svc, "metadata", "labels") or {}
                if dig(svc, "metadata", "namespace") != ns or any(labels.get(k) != v for k, v in want.items()):
                    continue
                if not any(pt.get("name") == ep.get("port") for pt in dig(svc, "spec", "ports") or []):
                    continue
                pods = tuple(sorted((dig(svc, "spec", "selector") or {}).items()))
                by_pods.setdefault(pods, []).append(dig(svc, "metadata", "name"))
            for pods, names in by_pods.items():
                if len(names) > 1:
                    error(f"{where}: ServiceMonitor {ns}/{dig(sm, 'metadata', 'name')}: Services {', '.join(names)} "
                          f"both expose port {ep.get('port')!r} for the same pods: each is scraped twice")


def check_file(path, docs, exported, panels=()):
    n = check_metrics(path, docs, exported, panels)
    check_apiserver_drops(path, docs)
    check_verifier_push(path, docs)
    check_runbooks(path, docs)
    check_double_scrape(path, docs)
    return n


# ---------------------------------------------------------------------------------------
# Self-test


def breakages(docs):
    out = []

    def broken(what, change):
        d = copy.deepcopy(docs)
        try:
            change(d)
        except (StopIteration, KeyError, IndexError, TypeError) as e:
            out.append((f"{what} (nothing to break: {e!r})", None))
            return
        out.append((what, d))

    def rule(d, name):
        return next(r for r in alerts(d) if r["alert"] == name)

    def add_alert(expr):
        def f(d):
            rule(d, "SealtrailSignErrors")["expr"] = expr
        return f
    broken("a metric no binary exports", add_alert("sum(rate(sealtrail_signer_self_test_missing_total[5m])) > 0"))
    broken("an ingester metric on the signer's job",
           add_alert('sum(rate(sealtrail_ingester_events_stored_total{job="sealtrail-signer"}[5m])) > 0'))
    broken("a metric of no known exporter", add_alert("selftest_unknown_metric > 0"))

    def webhook_only(d):
        r = rule(d, "SealtrailApiserverDroppedEvents")
        r["expr"] = 'sum by (instance) (increase(apiserver_audit_error_total{plugin="webhook"}[5m])) > 0'
    broken("the apiserver drop alert on plugin=\"webhook\" only (before issue #17)", webhook_only)

    def no_pusher(d):
        cron = next(x for x in d if x["kind"] == "CronJob")
        pod = cron["spec"]["jobTemplate"]["spec"]["template"]["spec"]
        pod["initContainers"] = [c for c in pod.get("initContainers") or []
                                 if not c["command"][0].endswith("sealtrail-push-metrics")]
        if not pod["initContainers"]:
            del pod["initContainers"]
    broken("the verifier CronJob without its pusher", no_pusher)

    def pusher_not_sidecar(d):
        cron = next(x for x in d if x["kind"] == "CronJob")
        pod = cron["spec"]["jobTemplate"]["spec"]["template"]["spec"]
        next(c for c in pod["initContainers"] if c["command"][0].endswith("sealtrail-push-metrics")).pop("restartPolicy")
    broken("the pusher as a plain init container (runs before the verifier)", pusher_not_sidecar)

    def drop_sm(name):
        def f(d):
            idx = next(i for i, x in enumerate(d) if x["kind"] == "ServiceMonitor" and x["metadata"]["name"] == name)
            del d[idx]
        return f
    def runbook(url):
        def f(d):
            rule(d, "SealtrailSpoolDamaged")["annotations"]["runbook_url"] = url
        return f
    broken("a runbook_url to a section the runbook lacks",
           runbook("docs/runbooks/unsealed-batches.md#no-such-section-self-test"))
    broken("a runbook_url to a runbook that does not exist", runbook("docs/runbooks/self-test-missing.md"))
    broken("a capture alert without runbook_url",
           lambda d: rule(d, "SealtrailUnsealedBatchesCritical")["annotations"].pop("runbook_url"))
    def headless_metrics(d):
        svc = next(x for x in d if x["kind"] == "Service" and x["metadata"]["name"] == "sealtrail-ingester-pods")
        svc["spec"]["ports"].append({"name": "metrics", "port": 9090, "targetPort": "metrics"})
    broken("the ingester's headless Service with a metrics port (double scrape)", headless_metrics)
    broken("no ServiceMonitor for cert-manager", drop_sm("sealtrail-cert-manager"))
    broken("no ServiceMonitor for the Pushgateway", drop_sm("sealtrail-pushgateway"))
    return out


def self_test(path, docs, exported):
    global errors
    cases = breakages(docs)
    missed = []
    for what, d in cases:
        if d is None:
            missed.append(what)
            continue
        saved, errors = errors, []
        check_file("self-test", d, exported)
        caught, errors = bool(errors), saved
        if not caught:
            missed.append(what)
    # The source reader is not vacuous: it finds metrics of every crate behind a job.
    for crate, names in exported.items():
        if not names:
            missed.append(f"no metric found in the source of {crate}")
    for what in missed:
        error(f"self-test: not caught: {what}")
    print(f"    self-test: {len(cases) - len(missed)} of {len(cases)} broken copies caught")


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--root", default=".")
    ap.add_argument("--self-test", action="store_true")
    ap.add_argument("--dashboard", help="a Grafana dashboard whose queries are checked like the alerts")
    ap.add_argument("files", nargs="+", help="rendered overlays")
    args = ap.parse_args()
    global ROOT
    ROOT = pathlib.Path(args.root)
    exported = exported_by_source(ROOT)
    panels = dashboard_panels(args.dashboard) if args.dashboard else []
    first = None
    for f in args.files:
        docs = [d for d in yaml.safe_load_all(pathlib.Path(f).read_text()) if isinstance(d, dict) and "kind" in d]
        if not any(d["kind"] == "PrometheusRule" for d in docs):
            print(f"    {f}: no PrometheusRule")
            continue
        n = check_file(f, docs, exported, panels)
        first = first or (f, docs)
        print(f"    {f}: {sum(1 for _ in alerts(docs))} alerts and {len(panels)} dashboard queries, {n} metric selectors; "
              f"source: {', '.join(f'{c} {len(v) // 7}' for c, v in sorted(exported.items()))} metrics")
    if args.self_test and first:
        self_test(first[0], first[1], exported)
    for e in errors:
        print(f"ERROR {e}")
    return 1 if errors else 0


if __name__ == "__main__":
    sys.exit(main())

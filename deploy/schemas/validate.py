#!/usr/bin/env python3
"""Validates rendered kustomize output (scripts/check-deploy runs it in target/deploy-venv).

Every document of every file given must pass one of:
  - a Kubernetes kind: kubernetes-validate's strict JSON schemas (unknown fields are errors),
    for each --kubernetes-version;
  - a custom resource (cert-manager, Prometheus Operator): Sealtrail's own JSON Schema of
    the part of that kind the manifests use, deploy/schemas/<group>_<kind>.schema.json
    (unknown fields are errors, as the API server's strict field validation makes them;
    metadata is checked as a Kubernetes ObjectMeta), plus a few checks a schema cannot
    express (Certificate: duration at least 1h, renewBefore at least 5m and shorter).
A kind that neither knows fails. Also checked, on the rendered objects:
  - scope: namespaced objects carry a namespace, cluster-scoped ones do not; no duplicates;
  - restricted Pod Security for every container (non-root, no privilege escalation,
    read-only root filesystem, ALL capabilities dropped, RuntimeDefault seccomp) and no
    host namespaces or hostPath volumes;
  - images: each container's image is .../sealtrail-<target>:<tag> for a target of the
    Dockerfile (or of deploy/images/Dockerfile) whose image holds the binary the
    container's command runs;
  - files: every Secret, ConfigMap or projected volume a container mounts is readable by
    that container's user (kubelet writes them owned by root, group fsGroup when set:
    mode 0440 without fsGroup, or 0400 for a non-root user, cannot be read), for every
    kind with a pod template (Deployment, StatefulSet, DaemonSet, Job, CronJob, Pod);
  - pinned identities (PINNED_IDENTITIES): a Certificate for kube-apiserver or for
    sealtrail-ingester names a namespaced Issuer of its own namespace that the rendered
    objects define (never a ClusterIssuer, which any namespace's editors could use), and
    kube-apiserver's lives in the signer's namespace;
  - priority: the signer's and the ingester's pods name a PriorityClass that the rendered
    objects define;
  - the ingester's spool: --spool-dir is on a volumeClaimTemplate of its StatefulSet (not an
    emptyDir, not the root filesystem), the claim is larger than --spool-max-bytes, and
    terminationGracePeriodSeconds exceeds body timeout + store ack timeout + seal drain;
  - the Dockerfile and .dockerignore admit every workspace member of Cargo.toml.
The schema files themselves are checked first (valid JSON Schema, no duplicate keys, every
object schema says what it does with unknown fields). --self-test then breaks copies of the
objects (unknown fields at every level of every custom resource, wrong enum values,
patterns, types, missing required fields, a kind without schema, a command its image
lacks) and requires each copy to fail.
Exit status 0 when all holds, 1 otherwise (each problem on a line of its own).
"""

import argparse
import copy
import json
import os
import pathlib
import re
import sys
import tomllib

import jsonschema
import referencing
import yaml
from kubernetes_validate import utils as kv

# Kubernetes kinds that are cluster-scoped (any other known kind is namespaced).
CLUSTER_SCOPED = {
    "Namespace", "Node", "PersistentVolume", "StorageClass", "ClusterRole",
    "ClusterRoleBinding", "CustomResourceDefinition", "PriorityClass", "RuntimeClass",
    "ValidatingWebhookConfiguration", "MutatingWebhookConfiguration", "APIService",
    "CSIDriver", "CSINode", "IngressClass", "VolumeAttachment", "CertificateSigningRequest",
    "ValidatingAdmissionPolicy", "ValidatingAdmissionPolicyBinding", "ClusterIssuer",
}
POD_SPEC_PATHS = {
    "Pod": ["spec"],
    "Deployment": ["spec", "template", "spec"],
    "StatefulSet": ["spec", "template", "spec"],
    "DaemonSet": ["spec", "template", "spec"],
    "ReplicaSet": ["spec", "template", "spec"],
    "Job": ["spec", "template", "spec"],
    "CronJob": ["spec", "jobTemplate", "spec", "template", "spec"],
}
DEFINITIONS_ID = "https://kubernetes.io/api/_definitions.json"
OBJECT_META = {"$ref": DEFINITIONS_ID + "#/$defs/io.k8s.apimachinery.pkg.apis.meta.v1.ObjectMeta"}

errors = []


def error(msg):
    errors.append(msg)


# ---------------------------------------------------------------------------------------
# Sealtrail's schemas of the custom resources

SCHEMA_DIALECT = "https://json-schema.org/draft/2020-12/schema"
SCOPES = ("Namespaced", "Cluster")


def _no_duplicate_keys(pairs):
    keys = [k for k, _ in pairs]
    dups = sorted({k for k in keys if keys.count(k) > 1})
    if dups:
        raise ValueError(f"duplicate keys {dups}")
    return dict(pairs)


FRAGMENT_KEYS = ("if", "then", "else", "not", "anyOf", "oneOf", "allOf")


def _open_objects(node, where="#", fragment=False):
    """Places in a schema that describe an object but do not say what happens to fields
    they do not list (JSON Schema's default admits them silently). Under if/then/not/anyOf
    and the like, `properties` only adds conditions to an object described elsewhere; a
    `type: object` there still has to say."""
    found = []
    if isinstance(node, dict):
        is_object = node.get("type") == "object" or ("properties" in node and not fragment)
        if is_object and "additionalProperties" not in node and "unevaluatedProperties" not in node:
            found.append(where)
        for key, value in node.items():
            if key in ("enum", "const", "required", "examples"):
                continue
            found += _open_objects(value, f"{where}/{key}", fragment or key in FRAGMENT_KEYS)
    elif isinstance(node, list):
        for i, value in enumerate(node):
            found += _open_objects(value, f"{where}/{i}", fragment)
    return found


def load_schemas(directory):
    """(apiVersion, kind) -> (JSON Schema, scope, file name) for every
    <group>_<kind>.schema.json in the directory, after checking each file's form."""
    schemas = {}
    for path in sorted(pathlib.Path(directory).glob("*.schema.json")):
        try:
            schema = json.loads(path.read_text(), object_pairs_hook=_no_duplicate_keys)
        except ValueError as e:
            error(f"{path}: not a JSON document: {e}")
            continue
        props = schema.get("properties") or {}
        api_version = (props.get("apiVersion") or {}).get("const")
        kind = (props.get("kind") or {}).get("const")
        scope = schema.get("x-sealtrail-scope")
        problems = []
        if schema.get("$schema") != SCHEMA_DIALECT:
            problems.append(f"$schema is not {SCHEMA_DIALECT}")
        if not (isinstance(api_version, str) and "/" in api_version and isinstance(kind, str)):
            problems.append("properties.apiVersion and properties.kind must each be a const")
        elif path.name != f"{api_version.split('/')[0]}_{kind.lower()}.schema.json":
            problems.append(f"should be named {api_version.split('/')[0]}_{kind.lower()}.schema.json")
        if scope not in SCOPES:
            problems.append(f"x-sealtrail-scope must be one of {SCOPES}")
        if props.get("metadata") != OBJECT_META:
            problems.append(f"properties.metadata must be {OBJECT_META} (Kubernetes' ObjectMeta)")
        if not {"apiVersion", "kind", "metadata", "spec"} <= set(schema.get("required") or []):
            problems.append("must require apiVersion, kind, metadata and spec")
        for where in _open_objects(schema):
            problems.append(f"{where}: an object schema without additionalProperties "
                            f"(false, or the schema of a map's values)")
        try:
            jsonschema.Draft202012Validator.check_schema(schema)
        except jsonschema.SchemaError as e:
            problems.append(f"not a valid JSON Schema: {e.message}")
        for p in problems:
            error(f"{path}: {p}")
        if problems:
            continue
        if (api_version, kind) in schemas:
            error(f"{path}: a second schema for {kind} ({api_version})")
        schemas[(api_version, kind)] = (schema, scope, path.name)
    if not schemas:
        error(f"{directory}: no *.schema.json")
    return schemas


def schema_error_text(e):
    """jsonschema's message, except for rules over several fields, whose message quotes the
    whole object: those say which rule instead (the schema's $comment or description)."""
    if e.validator in ("not", "oneOf", "anyOf", "minProperties", "maxProperties"):
        why = e.schema.get("$comment") or e.schema.get("description")
        return f"breaks the schema's {e.validator} rule" + (f": {why}" if why else "")
    return e.message


GO_DURATION_UNITS = {"ns": 1e-9, "us": 1e-6, "µs": 1e-6, "ms": 1e-3, "s": 1, "m": 60, "h": 3600}


def go_duration_seconds(text):
    """Seconds in a Go duration string the schema already admitted (else None)."""
    if not isinstance(text, str):
        return None
    parts = re.findall(r"([0-9]+(?:\.[0-9]+)?)(ns|us|µs|ms|s|m|h)", text)
    if text != "0" and "".join(n + u for n, u in parts) != text:
        return None
    return sum(float(n) * GO_DURATION_UNITS[u] for n, u in parts)


def check_certificate(where, spec):
    """What cert-manager's webhook refuses and a schema cannot compare."""
    duration = go_duration_seconds(spec.get("duration", "2160h"))  # cert-manager's default: 90 days
    renew = go_duration_seconds(spec.get("renewBefore"))
    if duration is not None and duration < 3600:
        error(f"{where}: spec.duration: {spec.get('duration')!r} is shorter than 1h, "
              f"cert-manager's minimum")
    if renew is not None:
        if renew < 300:
            error(f"{where}: spec.renewBefore: {spec['renewBefore']!r} is shorter than 5m, "
                  f"cert-manager's minimum")
        if duration is not None and renew >= duration:
            error(f"{where}: spec.renewBefore: {spec['renewBefore']!r} is not shorter than "
                  f"the duration {spec.get('duration', '2160h (default)')!r}")


SEMANTIC_CHECKS = {("cert-manager.io/v1", "Certificate"): check_certificate}


# ---------------------------------------------------------------------------------------
# Dockerfile


def dockerfile_stages(path):
    """Stage name -> set of /out binaries its image holds (its own COPYs and its base's)."""
    stages, parent, current = {}, {}, None
    for raw in path.read_text().splitlines():
        line = raw.strip()
        m = re.match(r"FROM\s+(\S+)\s+AS\s+(\S+)$", line, re.IGNORECASE)
        if m:
            current = m.group(2)
            stages[current] = set()
            if m.group(1) in stages:
                parent[current] = m.group(1)
            continue
        m = re.match(r"COPY\s+--from=builder\s+/out/(\S+)\s", line)
        if m and current:
            stages[current].add(m.group(1))
        # A file of the build context installed as a command (deploy/images/Dockerfile).
        m = re.match(r"COPY\s+(?:--chmod=0?755\s+)(?!--)(\S+)\s+/usr/local/bin/(\S+)$", line)
        if m and current:
            stages[current].add(m.group(2))
    resolved = {}
    for name in stages:
        bins, s = set(), name
        while s:
            bins |= stages[s]
            s = parent.get(s)
        resolved[name] = bins
    return resolved


def check_build_context(root):
    members = tomllib.loads((root / "Cargo.toml").read_text())["workspace"]["members"]
    dockerfile = (root / "Dockerfile").read_text()
    ignore = (root / ".dockerignore").read_text().splitlines()
    for m in members:
        if not re.search(rf"^COPY\s+{re.escape(m)}\s+{re.escape(m)}\s*$", dockerfile, re.MULTILINE):
            error(f"Dockerfile: workspace member {m} is not copied into the builder (COPY {m} {m})")
        if f"!{m}/" not in ignore:
            error(f".dockerignore: workspace member {m} is not admitted (!{m}/)")


# ---------------------------------------------------------------------------------------
# Rendered objects


def dig(obj, path):
    for key in path:
        if not isinstance(obj, dict):
            return None
        obj = obj.get(key)
    return obj


def volume_file_modes(vol):
    """(what, [modes of the files]) of a Secret, ConfigMap or projected volume, else None.
    Kubernetes' default mode for these is 0644; items[].mode overrides defaultMode."""
    def modes(source, default):
        base = source.get("defaultMode", default)
        items = source.get("items") or []
        return [i.get("mode", base) for i in items] or [base]
    for kind in ("secret", "configMap"):
        if isinstance(vol.get(kind), dict):
            name = vol[kind].get("secretName") or vol[kind].get("name")
            return f"{kind} {name}", modes(vol[kind], 0o644)
    if isinstance(vol.get("projected"), dict):
        proj = vol["projected"]
        base = proj.get("defaultMode", 0o644)
        found = []
        for src in proj.get("sources") or []:
            for kind in ("secret", "configMap"):
                if isinstance(src.get(kind), dict):
                    found += [i.get("mode", base) for i in src[kind].get("items") or []] or [base]
        return ("projected", found) if found else None
    return None


def readable(mode, uid, groups, fs_group):
    """Whether a file kubelet wrote with this mode (owner root, group fsGroup or root) can be
    read by a process of uid (None: the image's user, non-root here) in groups."""
    if uid == 0:
        return True
    owner_group = fs_group if fs_group is not None else 0
    if owner_group in groups and mode & 0o040:
        return True
    return bool(mode & 0o004)


def check_file_modes(where, pod, containers):
    psc = pod.get("securityContext") or {}
    fs_group = psc.get("fsGroup")
    volumes = {v.get("name"): v for v in pod.get("volumes") or []}
    for c in containers + (pod.get("ephemeralContainers") or []):
        sc = c.get("securityContext") or {}
        uid = sc.get("runAsUser", psc.get("runAsUser"))
        groups = {g for g in [sc.get("runAsGroup", psc.get("runAsGroup")), fs_group] if g is not None}
        groups |= set(psc.get("supplementalGroups") or [])
        for m in c.get("volumeMounts") or []:
            found = volume_file_modes(volumes.get(m.get("name")) or {})
            if found is None:
                continue
            what, modes = found
            for mode in modes:
                if not isinstance(mode, int):
                    continue
                if not readable(mode, uid, groups, fs_group):
                    error(f"{where} container {c.get('name')}: {what} mounted at {m.get('mountPath')} "
                          f"with mode {mode:04o} is unreadable by uid {uid if uid is not None else '(image)'} "
                          f"(files are root:{fs_group if fs_group is not None else 0}; "
                          f"{'set fsGroup' if fs_group is None else 'give the group read'})")


def check_pod(where, pod, stages):
    for field in ("hostNetwork", "hostPID", "hostIPC"):
        if pod.get(field):
            error(f"{where}: {field} is set")
    for vol in pod.get("volumes") or []:
        if "hostPath" in vol:
            error(f"{where}: hostPath volume {vol.get('name')}")
    psc = pod.get("securityContext") or {}
    containers = (pod.get("initContainers") or []) + (pod.get("containers") or [])
    check_file_modes(where, pod, containers)
    for c in containers:
        cw = f"{where} container {c.get('name')}"
        sc = c.get("securityContext") or {}
        if sc.get("allowPrivilegeEscalation") is not False:
            error(f"{cw}: allowPrivilegeEscalation is not false")
        if sc.get("readOnlyRootFilesystem") is not True:
            error(f"{cw}: readOnlyRootFilesystem is not true")
        if sc.get("privileged"):
            error(f"{cw}: privileged")
        if "ALL" not in (dig(sc, ["capabilities", "drop"]) or []):
            error(f"{cw}: capabilities do not drop ALL")
        if dig(sc, ["capabilities", "add"]):
            error(f"{cw}: adds capabilities")
        if sc.get("runAsNonRoot", psc.get("runAsNonRoot")) is not True:
            error(f"{cw}: runAsNonRoot is not true")
        if sc.get("runAsUser", psc.get("runAsUser")) == 0:
            error(f"{cw}: runs as uid 0")
        seccomp = dig(sc, ["seccompProfile", "type"]) or dig(psc, ["seccompProfile", "type"])
        if seccomp not in ("RuntimeDefault", "Localhost"):
            error(f"{cw}: seccompProfile is {seccomp!r}, not RuntimeDefault")
        image = c.get("image", "")
        m = re.match(r"^(?:.*/)?sealtrail-([a-z0-9-]+)(?::[\w.-]+)?(?:@sha256:[0-9a-f]{64})?$", image)
        command = (c.get("command") or [""])[0]
        if not m:
            error(f"{cw}: image {image!r} is not .../sealtrail-<Dockerfile target>:<tag>")
        elif m.group(1) not in stages:
            error(f"{cw}: image {image!r}: the Dockerfile has no target {m.group(1)!r}")
        elif pathlib.PurePath(command).name not in stages[m.group(1)]:
            error(f"{cw}: command {command!r} is not in image {image!r} "
                  f"(target {m.group(1)} holds {sorted(stages[m.group(1)])})")


def validate_doc(where, doc, schemas, k8s_versions, definitions, stages):
    """Validates one object; returns "kubernetes" or "custom" (what checked it), or None."""
    api_version, kind, meta = doc["apiVersion"], doc["kind"], doc.get("metadata") or {}
    checked = None
    if (api_version, kind) in schemas:
        schema, scope, source = schemas[(api_version, kind)]
        validator = jsonschema.Draft202012Validator(schema, registry=definitions)
        for e in sorted(validator.iter_errors(doc), key=lambda e: list(e.path)):
            field = ".".join(str(p) for p in e.path)
            error(f"{where}: {field}: {schema_error_text(e)} (deploy/schemas/{source})")
        if (api_version, kind) in SEMANTIC_CHECKS and isinstance(doc.get("spec"), dict):
            SEMANTIC_CHECKS[(api_version, kind)](where, doc["spec"])
        checked = "custom"
    else:
        scope = "Cluster" if kind in CLUSTER_SCOPED else "Namespaced"
        try:
            for v in k8s_versions:
                kv.validate(doc, v, strict=True)
            checked = "kubernetes"
        except kv.ValidationError as e:
            field = ".".join(str(p) for p in e.path)
            error(f"{where}: {field}: {e.message} (Kubernetes {e.version}, strict)")
            checked = "kubernetes"
        except kv.SchemaNotFoundError:
            error(f"{where}: unknown kind {kind} ({api_version}): no Kubernetes schema and no "
                  f"deploy/schemas/*.schema.json for it (write one: deploy/schemas/README.md)")
    if scope == "Namespaced" and not meta.get("namespace"):
        error(f"{where}: namespaced, but has no namespace (it would land in the "
              f"namespace of whoever applies it)")
    if scope == "Cluster" and meta.get("namespace"):
        error(f"{where}: cluster-scoped, but has a namespace")
    if kind in POD_SPEC_PATHS:
        pod = dig(doc, POD_SPEC_PATHS[kind])
        if isinstance(pod, dict):
            check_pod(where, pod, stages)
    return checked


# Identities whose certificate lets its holder put events into the trail: the apiserver's
# towards the ingester (may post), the ingester's towards the signer (may Append). Value:
# the component whose namespace must hold the Certificate (None: its own namespace).
# sealtrail-cloudwatch posts events like kube-apiserver: pinned the same way.
PINNED_IDENTITIES = {"kube-apiserver": "signer", "sealtrail-ingester": None, "sealtrail-cloudwatch": "signer"}
# Pods that must not be evicted for ordinary workloads (app.kubernetes.io/component).
PRIORITY_COMPONENTS = ("signer", "ingester")


# The ingester's capture (issue #10): its spool is what it acknowledges from, so it must be
# a volume of the replica's own that outlives the pod, large enough for --spool-max-bytes,
# and graceful shutdown must get to finish requests and the seal drain.
INGESTER_DEFAULTS = {"--body-timeout-secs": 20, "--store-ack-timeout-ms": 2000,
                     "--seal-drain-timeout-secs": 20, "--spool-max-bytes": 8 * 1024 ** 3}
QUANTITY = {"": 1, "k": 1000, "M": 1000 ** 2, "G": 1000 ** 3, "T": 1000 ** 4,
            "Ki": 1024, "Mi": 1024 ** 2, "Gi": 1024 ** 3, "Ti": 1024 ** 4}


def quantity_bytes(q):
    m = re.fullmatch(r"([0-9]+)(Ki|Mi|Gi|Ti|k|M|G|T)?", str(q))
    return int(m.group(1)) * QUANTITY[m.group(2) or ""] if m else None


def check_ingester_spool(where, d):
    pod = dig(d, POD_SPEC_PATHS[d["kind"]]) or {}
    for c in pod.get("containers") or []:
        if pathlib.PurePath((c.get("command") or [""])[0]).name != "sealtrail-ingester":
            continue
        flags = dict(a.split("=", 1) for a in c.get("args") or [] if a.startswith("--") and "=" in a)
        spool = flags.get("--spool-dir")
        if not spool:
            error(f"{where}: the ingester has no --spool-dir: it could acknowledge a batch only once "
                  f"the store holds it, and queued batches are lost to sealing when the pod stops")
            continue
        mount = max((m for m in c.get("volumeMounts") or []
                     if (spool.rstrip("/") + "/").startswith(m.get("mountPath", "").rstrip("/") + "/")),
                    key=lambda m: len(m.get("mountPath", "")), default=None)
        claims = {t.get("metadata", {}).get("name"): t for t in dig(d, ["spec", "volumeClaimTemplates"]) or []}
        if mount is None or mount.get("name") not in claims:
            what = "no volume" if mount is None else f"volume {mount.get('name')}"
            error(f"{where}: the ingester's --spool-dir={spool} is on {what}, not on a volumeClaimTemplate "
                  f"of a StatefulSet: acknowledged batches would not survive the pod")
        else:
            size = quantity_bytes(dig(claims[mount["name"]], ["spec", "resources", "requests", "storage"]))
            bound = int(flags.get("--spool-max-bytes", INGESTER_DEFAULTS["--spool-max-bytes"]))
            if size is None or size <= bound:
                error(f"{where}: the spool claim {mount['name']} ({size} bytes) is not larger than "
                      f"--spool-max-bytes={bound}: the filesystem fills before the spool's bound")
        need = (int(flags.get("--body-timeout-secs", INGESTER_DEFAULTS["--body-timeout-secs"]))
                + int(flags.get("--store-ack-timeout-ms", INGESTER_DEFAULTS["--store-ack-timeout-ms"])) / 1000
                + int(flags.get("--seal-drain-timeout-secs", INGESTER_DEFAULTS["--seal-drain-timeout-secs"])))
        grace = pod.get("terminationGracePeriodSeconds", 30)
        if grace <= need:
            error(f"{where}: terminationGracePeriodSeconds {grace} is not more than body timeout + store "
                  f"ack timeout + seal drain ({need:g} s): the kubelet kills the ingester mid-drain")


def cert_identities(spec):
    names = [spec.get("commonName")] + list(spec.get("dnsNames") or []) + list(spec.get("uris") or [])
    return {n for n in names if isinstance(n, str)}


def check_objects(path, docs):
    """Checks across the rendered objects of one file (pinned identities, priorities)."""
    def ns_name(d):
        meta = d.get("metadata") or {}
        return meta.get("namespace"), meta.get("name")
    issuers = {ns_name(d) for d in docs if d["kind"] == "Issuer" and d["apiVersion"].startswith("cert-manager.io/")}
    classes = {ns_name(d)[1] for d in docs if d["kind"] == "PriorityClass"}
    component_ns = {}
    for d in docs:
        if d["kind"] in POD_SPEC_PATHS:
            comp = ((d.get("metadata") or {}).get("labels") or {}).get("app.kubernetes.io/component")
            component_ns.setdefault(comp, ns_name(d)[0])
    for d in docs:
        where = where_of(os.path.relpath(path), d)
        if d["kind"] == "Certificate" and isinstance(d.get("spec"), dict):
            pinned = sorted(cert_identities(d["spec"]) & set(PINNED_IDENTITIES))
            ref = d["spec"].get("issuerRef") or {}
            kind, group = ref.get("kind", "Issuer"), ref.get("group", "cert-manager.io")
            ns = ns_name(d)[0]
            for ident in pinned:
                if kind.startswith("Cluster"):
                    error(f"{where}: the pinned identity {ident} is issued by {kind} {ref.get('name')}: "
                          f"a cluster-scoped issuer serves a Certificate in any namespace, so any "
                          f"namespace's editors could obtain {ident}; use a namespaced Issuer")
                elif group == "cert-manager.io" and (ns, ref.get("name")) not in issuers:
                    error(f"{where}: the pinned identity {ident} names Issuer {ref.get('name')}, "
                          f"which the rendered objects do not define in namespace {ns}")
                want = PINNED_IDENTITIES[ident]
                if want and component_ns.get(want, f"sealtrail-{want}") != ns:
                    error(f"{where}: the pinned identity {ident} must be issued in the {want}'s namespace "
                          f"{component_ns.get(want, f'sealtrail-{want}')} (security team only), not {ns}")
        if d["kind"] in POD_SPEC_PATHS:
            comp = ((d.get("metadata") or {}).get("labels") or {}).get("app.kubernetes.io/component")
            pod = dig(d, POD_SPEC_PATHS[d["kind"]])
            if comp == "ingester" and isinstance(pod, dict):
                check_ingester_spool(where, d)
            if comp in PRIORITY_COMPONENTS and isinstance(pod, dict):
                pc = pod.get("priorityClassName")
                if not pc:
                    error(f"{where}: no priorityClassName: the {comp} would be preempted or evicted "
                          f"before ordinary workloads")
                elif pc not in classes and not pc.startswith("system-"):
                    error(f"{where}: priorityClassName {pc} is not a PriorityClass of the rendered objects")


def load_docs(path):
    docs = [d for d in yaml.safe_load_all(pathlib.Path(path).read_text()) if d is not None]
    good = []
    for i, doc in enumerate(docs):
        if not isinstance(doc, dict) or not all(k in doc for k in ("apiVersion", "kind", "metadata")):
            error(f"{path}: document {i + 1} is not a Kubernetes object")
        else:
            good.append(doc)
    return docs, good


def where_of(path, doc):
    meta = doc.get("metadata") or {}
    return f"{path}: {doc['kind']} {meta.get('namespace', '')}/{meta.get('name')}".replace(" /", " ")


def validate_file(path, schemas, k8s_versions, definitions, stages):
    docs, good = load_docs(path)
    seen, counts = set(), {"kubernetes": 0, "custom": 0}
    for doc in good:
        meta = doc.get("metadata") or {}
        where = where_of(os.path.relpath(path), doc)
        key = (doc["apiVersion"].split("/")[0], doc["kind"], meta.get("namespace"), meta.get("name"))
        if key in seen:
            error(f"{where}: defined twice")
        seen.add(key)
        checked = validate_doc(where, doc, schemas, k8s_versions, definitions, stages)
        if checked:
            counts[checked] += 1
    check_objects(path, good)
    return len(docs), counts


def objects_in(node, path=()):
    """(path, dict) for every mapping in node, paths without list indices (spec.groups.rules)."""
    if isinstance(node, dict):
        yield path, node
        for key, value in node.items():
            yield from objects_in(value, path + (key,))
    elif isinstance(node, list):
        for value in node:
            yield from objects_in(value, path)


def _first(doc, *path):
    """The first mapping reached by following path (list items: the first one)."""
    node = doc
    for key in path:
        while isinstance(node, list):
            node = node[0] if node else None
        if not isinstance(node, dict):
            return None
        node = node.get(key)
    while isinstance(node, list):
        node = node[0] if node else None
    return node


def _set(**fields):
    return lambda node: node.update(fields)


def _drop(name):
    return lambda node: node.pop(name, None)


def _alert_to_record(rule):
    """An alerting rule turned into a recording rule that keeps its for/annotations."""
    rule.pop("alert", None)
    rule.update(record="sealtrail:self_test", annotations=rule.get("annotations") or {"a": "b"})


# What each custom kind's schema must refuse, beyond unknown fields: (kind, where in the
# first object of that kind, what is done there, what that breaks).
BREAKAGES = [
    ("Certificate", ("spec",), _drop("issuerRef"), "no issuerRef (required)"),
    ("Certificate", ("spec",), _drop("secretName"), "no secretName (required)"),
    ("Certificate", ("spec",), _set(usages=["server auth", "serverauth"]), "a usage cert-manager does not know"),
    ("Certificate", ("spec",), _set(duration="90d"), "a duration in days (not a Go duration)"),
    ("Certificate", ("spec",), _set(renewBefore="4m"), "renewBefore under 5m"),
    ("Certificate", ("spec",), _set(duration="720h", renewBefore="720h"), "renewBefore not shorter than duration"),
    ("Certificate", ("spec",), _set(renewBeforePercentage=33), "renewBefore and renewBeforePercentage both"),
    ("Certificate", ("spec", "privateKey"), _set(rotationPolicy="Sometimes"), "an unknown rotationPolicy"),
    ("Certificate", ("spec", "privateKey"), _set(algorithm="ECDSA", size=2048), "an ECDSA key of 2048 bits"),
    ("Certificate", ("spec", "privateKey"), _set(size="256"), "a key size as a string"),
    ("Certificate", ("spec", "issuerRef"), _set(kind="Issuers"), "an issuer kind cert-manager.io does not have"),
    ("Issuer", ("spec",), _set(ca={"secretName": "x"}, selfSigned={}), "two issuer types"),
    ("Issuer", ("spec",), _set(acme={"server": "https://acme.invalid"}), "an issuer type without schema here"),
    ("ServiceMonitor", ("spec",), _drop("selector"), "no selector (required)"),
    ("ServiceMonitor", ("spec", "endpoints"), _set(scheme="ftp"), "an unknown endpoint scheme"),
    ("ServiceMonitor", ("spec", "endpoints"), _set(interval="30 seconds"), "an interval that is not a Prometheus duration"),
    ("ServiceMonitor", ("spec", "endpoints"), _set(path="metrics"), "a path without a leading /"),
    ("ServiceMonitor", ("spec", "endpoints"), _set(relabelings=[{"action": "replace", "sourceLabels": ["x"]}]),
     "a replace relabelling without targetLabel"),
    ("ServiceMonitor", ("spec", "endpoints"), _set(tlsConfig={"minVersion": "TLS1.2"}), "an unknown TLS version"),
    ("ServiceMonitor", ("spec", "endpoints"), _drop("port"), "an endpoint with neither port nor targetPort"),
    ("PrometheusRule", ("spec", "groups"), _drop("name"), "a group without name (required)"),
    ("PrometheusRule", ("spec", "groups", "rules"), _drop("expr"), "a rule without expr (required)"),
    ("PrometheusRule", ("spec", "groups", "rules"), _set(record="sealtrail:x"), "a rule both alert and record"),
    ("PrometheusRule", ("spec", "groups", "rules"), _alert_to_record, "a recording rule with annotations"),
    ("PrometheusRule", ("spec", "groups", "rules"), _set(**{"for": "5 minutes"}), "a for that is not a Prometheus duration"),
    ("PrometheusRule", ("spec", "groups", "rules", "labels"), _set(**{"bad-name": "x"}), "a label name Prometheus refuses"),
]


# What each schema must still accept: fields an operator plausibly adds to these objects.
# A schema that refused them would be stricter than the API without saying so.
ADDITIONS = [
    ("Certificate", ("spec",), _set(secretTemplate={"labels": {"team": "security"}}, ipAddresses=["10.0.0.10"],
                                    subject={"organizations": ["Example"]}, revisionHistoryLimit=3),
     "secretTemplate, ipAddresses, subject, revisionHistoryLimit"),
    ("Certificate", ("spec", "privateKey"), _set(algorithm="RSA", size=4096, encoding="PKCS8", rotationPolicy="Never"),
     "an RSA 4096 PKCS#8 key kept across renewals"),
    ("ServiceMonitor", ("spec", "endpoints"),
     _set(scheme="https", scrapeTimeout="10s", honorLabels=False,
          tlsConfig={"ca": {"secret": {"name": "sealtrail-ca", "key": "ca.crt"}}, "serverName": "x.svc",
                     "minVersion": "TLS13"},
          relabelings=[{"sourceLabels": ["__meta_kubernetes_pod_node_name"], "targetLabel": "node"},
                       {"action": "labeldrop", "regex": "pod_template_hash"}],
          metricRelabelings=[{"action": "hashmod", "sourceLabels": ["instance"], "targetLabel": "shard",
                              "modulus": 4}]),
     "https with tlsConfig, scrapeTimeout, relabelings"),
    ("PrometheusRule", ("spec", "groups"),
     lambda g: g.update(interval="1m", rules=g["rules"] + [{"record": "sealtrail:events:rate5m",
                                                             "expr": "sum(rate(x[5m]))", "labels": {"a": "b"}}]),
     "a group interval and a recording rule"),
]


def cross_object_breakages(good):
    """(what, broken copy of all the objects) for the checks across objects."""
    out = []
    def pinned(d, ident):
        return d["kind"] == "Certificate" and ident in cert_identities(d.get("spec") or {})
    for ident in PINNED_IDENTITIES:
        if not any(pinned(d, ident) for d in good):
            out.append((f"{ident}: no Certificate for the pinned identity to break", None))
            continue
        docs = copy.deepcopy(good)
        for d in docs:
            if pinned(d, ident):
                d["spec"]["issuerRef"] = {"group": "cert-manager.io", "kind": "ClusterIssuer", "name": "sealtrail-ca"}
        docs.append({"apiVersion": "cert-manager.io/v1", "kind": "ClusterIssuer",
                     "metadata": {"name": "sealtrail-ca"}, "spec": {"ca": {"secretName": "sealtrail-ca"}}})
        out.append((f"a ClusterIssuer for the pinned identity {ident}", docs))
        docs = copy.deepcopy(good)
        for d in docs:
            if pinned(d, ident):
                d["spec"]["issuerRef"]["name"] = "sealtrail-self-test-missing"
        out.append((f"an Issuer the objects do not define for {ident}", docs))
    docs = copy.deepcopy(good)
    moved = False
    for d in docs:
        if pinned(d, "kube-apiserver"):
            d["metadata"]["namespace"], moved = "sealtrail", True
            d["spec"]["issuerRef"]["name"] = "sealtrail-ingest-ca"
    out.append(("kube-apiserver issued in the ingest namespace", docs if moved else None))
    def ingester_broken(what, change):
        docs = copy.deepcopy(good)
        found = False
        for d in docs:
            labels = (d.get("metadata") or {}).get("labels") or {}
            if d["kind"] in POD_SPEC_PATHS and labels.get("app.kubernetes.io/component") == "ingester":
                change(d, dig(d, POD_SPEC_PATHS[d["kind"]]))
                found = True
        out.append((what, docs if found else None))

    def args_of(pod):
        return next(c for c in pod["containers"] if c["command"][0].endswith("sealtrail-ingester"))["args"]

    def spool_on_emptydir(d, pod):
        d["spec"].pop("volumeClaimTemplates", None)
        pod["volumes"].append({"name": "spool", "emptyDir": {}})
    ingester_broken("the ingester's spool on an emptyDir", spool_on_emptydir)
    ingester_broken("the ingester without --spool-dir",
                    lambda d, pod: args_of(pod).__setitem__(slice(None), [a for a in args_of(pod)
                                                                           if not a.startswith("--spool-dir=")]))
    ingester_broken("the ingester's spool claim smaller than --spool-max-bytes",
                    lambda d, pod: args_of(pod).append("--spool-max-bytes=21474836480"))
    ingester_broken("the ingester's grace period shorter than its drain",
                    lambda d, pod: pod.update(terminationGracePeriodSeconds=30))
    for comp in PRIORITY_COMPONENTS:
        docs = copy.deepcopy(good)
        found = False
        for d in docs:
            labels = (d.get("metadata") or {}).get("labels") or {}
            if d["kind"] in POD_SPEC_PATHS and labels.get("app.kubernetes.io/component") == comp:
                dig(d, POD_SPEC_PATHS[d["kind"]]).pop("priorityClassName", None)
                found = True
        out.append((f"the {comp} without priorityClassName", docs if found else None))
        docs = [d for d in copy.deepcopy(good) if d["kind"] != "PriorityClass"]
        out.append((f"the {comp}'s PriorityClass not defined", docs if found else None))
    return out


def self_test(path, schemas, k8s_versions, definitions, stages):
    """The checks are not vacuous: each copy of an object broken in one way must fail.
    Kubernetes kinds: an unknown field in metadata and in spec. Custom resources: an
    unknown field at every level that holds fields (once per place in the schema), and
    each of BREAKAGES. Also a kind without schema, and a container whose image lacks its
    binary."""
    global errors
    _, good = load_docs(path)
    cases = []
    custom_places = set()
    for doc in good:
        custom = (doc["apiVersion"], doc["kind"]) in schemas
        parts = [("metadata",), ("spec",)]
        if custom:
            parts = [("metadata",)] + [p for p, _ in objects_in(doc.get("spec"), ("spec",))]
        for part in dict.fromkeys(parts):
            if custom and part != ("metadata",):
                if (doc["kind"], part) in custom_places:
                    continue
                custom_places.add((doc["kind"], part))
            bad = copy.deepcopy(doc)
            # The first mapping at that place (inside lists too: spec.groups.rules).
            target = next((node for p, node in objects_in(bad) if p == part), None)
            if target is None:
                continue
            # A boolean: refused both as an unknown field and as a map value that must be a string.
            target["sealtrailSelfTest"] = True
            cases.append((f"unknown field {'.'.join(part)}.sealtrailSelfTest in {where_of('', doc)}", bad))
    kinds = {k for _, k in schemas}
    for kind, place, breaker, what in BREAKAGES:
        doc = next((d for d in good if d["kind"] == kind and (d["apiVersion"], kind) in schemas), None)
        if doc is None:
            cases.append((f"{kind}: {what} (no {kind} in {os.path.relpath(path)} to break)", None))
            continue
        bad = copy.deepcopy(doc)
        node = _first(bad, *place)
        if not isinstance(node, dict):
            cases.append((f"{kind}: {what} (no {'.'.join(place)} to break)", None))
            continue
        breaker(node)
        cases.append((f"{what} in {where_of('', doc)}", bad))
    for kind in sorted(kinds - {k for k, *_ in BREAKAGES}):
        cases.append((f"{kind}: no breakage listed in BREAKAGES for its schema", None))
    accepted = 0
    for kind, place, change, what in ADDITIONS:
        doc = next((d for d in good if d["kind"] == kind and (d["apiVersion"], kind) in schemas), None)
        node = _first(copy.deepcopy(doc), *place) if doc else None
        if doc is None or not isinstance(node, dict):
            error(f"self-test: no {kind} {'.'.join(place)} in {os.path.relpath(path)} to extend")
            continue
        good_copy = copy.deepcopy(doc)
        change(_first(good_copy, *place))
        saved, errors = errors, []
        validate_doc("self-test", good_copy, schemas, k8s_versions[:1], definitions, stages)
        refused, errors = errors, saved
        for e in refused:
            error(f"self-test: refused, but the API accepts it ({what}): {e}")
        accepted += not refused
    cases.append(("unknown kind", {"apiVersion": "example.com/v1", "kind": "Widget",
                                   "metadata": {"name": "w", "namespace": "n"}}))
    for doc in good:
        pod = dig(doc, POD_SPEC_PATHS.get(doc["kind"], ["-"]))
        if isinstance(pod, dict):
            bad = copy.deepcopy(doc)
            c = dig(bad, POD_SPEC_PATHS[doc["kind"]])["containers"][0]
            c["command"] = ["sealtrail-self-test"] + c.get("command", [])[1:]
            cases.append((f"a command its image lacks in {where_of('', doc)}", bad))
    for doc in good:
        pod = dig(doc, POD_SPEC_PATHS.get(doc["kind"], ["-"]))
        if not isinstance(pod, dict) or not any("secret" in v for v in pod.get("volumes") or []):
            continue
        bad = copy.deepcopy(doc)
        bpod = dig(bad, POD_SPEC_PATHS[doc["kind"]])
        (bpod.get("securityContext") or {}).pop("fsGroup", None)
        for v in bpod.get("volumes") or []:
            if "secret" in v:
                v["secret"]["defaultMode"] = 0o440
        cases.append((f"a Secret at 0440 without fsGroup in {where_of('', doc)}", bad))
        bad = copy.deepcopy(doc)
        for v in dig(bad, POD_SPEC_PATHS[doc["kind"]]).get("volumes") or []:
            if "secret" in v:
                v["secret"]["defaultMode"] = 0o400
        cases.append((f"a Secret at 0400 (owner root only) in {where_of('', doc)}", bad))
    missed = []
    for what, docs in cross_object_breakages(good):
        saved, errors = errors, []
        if docs:
            check_objects("self-test", docs)
        caught, errors = bool(errors), saved
        if not caught:
            missed.append(what)
        cases.append((what, "cross-object"))
    for what, doc in cases:
        if doc == "cross-object":
            continue
        if doc is None:
            missed.append(what)
            continue
        saved, errors = errors, []
        validate_doc("self-test", doc, schemas, k8s_versions[:1], definitions, stages)
        caught, errors = bool(errors), saved
        if not caught:
            missed.append(what)
    for what in missed:
        error(f"self-test: not caught: {what}")
    print(f"    self-test: {len(cases) - len(missed)} of {len(cases)} broken objects caught "
          f"({len(custom_places)} places in custom resources, {len(BREAKAGES)} targeted breakages); "
          f"{accepted} of {len(ADDITIONS)} plausible additions accepted")


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--schemas", default=str(pathlib.Path(__file__).resolve().parent),
                    help="the directory of the custom resources' *.schema.json (default: this script's)")
    ap.add_argument("--root", default=".", help="the repository (Dockerfile, .dockerignore, Cargo.toml)")
    ap.add_argument("-k", "--kubernetes-version", action="append", dest="versions")
    ap.add_argument("--self-test", action="store_true",
                    help="also break copies of the objects of the first file and require each to fail")
    ap.add_argument("files", nargs="+")
    args = ap.parse_args()
    root = pathlib.Path(args.root)
    versions = args.versions or [kv.latest_version()]

    schemas = load_schemas(args.schemas)
    defs_json = kv.schema_contents(
        f"kubernetes-json-schema/v{kv.latest_version()}-local-strict/_definitions.json", kv.latest_version())
    definitions = referencing.Resource.from_contents(defs_json) @ referencing.Registry()
    stages = dockerfile_stages(root / "Dockerfile")
    helpers = root / "deploy" / "images" / "Dockerfile"
    if helpers.exists():
        for name, bins in dockerfile_stages(helpers).items():
            if name in stages:
                error(f"{helpers}: target {name} is also a target of the Dockerfile")
            stages[name] = bins
    check_build_context(root)

    for f in args.files:
        n, counts = validate_file(f, schemas, versions, definitions, stages)
        print(f"    {os.path.relpath(f)}: {n} objects: {counts['kubernetes']} Kubernetes kinds (strict schemas "
              f"{', '.join(versions)}), {counts['custom']} custom resources (deploy/schemas)")
    if args.self_test:
        self_test(args.files[0], schemas, versions, definitions, stages)
    for e in errors:
        print(f"ERROR {e}")
    return 1 if errors else 0


if __name__ == "__main__":
    sys.exit(main())

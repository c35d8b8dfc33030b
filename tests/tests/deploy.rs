//! The deployment files agree with the code they deploy:
//!
//! - the audit policy and the webhook kubeconfig parse, and the kubeconfig posts to the
//!   ingester's route (`sealtrail_ingester::WEBHOOK_PATH`) on the Service and port that the
//!   manifests and certificates name;
//! - every `--flag` given to a Sealtrail binary anywhere in `deploy/` (container commands
//!   and args, kustomize patches) or in a shell code block of `docs/runbooks/` (and of the
//!   Markdown files in `deploy/`) exists in that binary's (sub)command `--help`.
//!
//! The binaries are the ones `cargo test --workspace` builds next to this test's `deps/`.
#![allow(clippy::unwrap_used)]

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};
use std::process::Command;

use serde_norway::Value;

const BINARIES: [&str; 3] = ["sealtrail-signer", "sealtrail-ingester", "sealtrail-verify"];

fn root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("..")
}

fn read(rel: &str) -> String {
    let p = root().join(rel);
    std::fs::read_to_string(&p).unwrap_or_else(|e| panic!("{}: {e}", p.display()))
}

fn yaml_docs(text: &str, what: &str) -> Vec<Value> {
    let mut docs = Vec::new();
    for de in serde_norway::Deserializer::from_str(text) {
        let v = <Value as serde::Deserialize>::deserialize(de)
            .unwrap_or_else(|e| panic!("{what}: not YAML: {e}"));
        if !v.is_null() {
            docs.push(v);
        }
    }
    docs
}

fn get<'a>(v: &'a Value, key: &str) -> Option<&'a Value> {
    v.as_mapping().and_then(|m| m.get(key))
}

fn str_of<'a>(v: &'a Value, key: &str) -> Option<&'a str> {
    get(v, key).and_then(Value::as_str)
}

fn strings(v: Option<&Value>) -> Vec<String> {
    v.and_then(Value::as_sequence)
        .map(|s| {
            s.iter()
                .filter_map(|x| x.as_str().map(String::from))
                .collect()
        })
        .unwrap_or_default()
}

// ---------------------------------------------------------------------------------------
// Audit policy and webhook kubeconfig

#[test]
fn audit_policy_parses_and_orders_its_rules() {
    let docs = yaml_docs(
        &read("deploy/control-plane/audit-policy.yaml"),
        "audit policy",
    );
    assert_eq!(docs.len(), 1);
    let p = &docs[0];
    assert_eq!(str_of(p, "apiVersion"), Some("audit.k8s.io/v1"));
    assert_eq!(str_of(p, "kind"), Some("Policy"));
    assert!(strings(get(p, "omitStages")).contains(&"RequestReceived".to_string()));
    assert_eq!(
        get(p, "omitManagedFields").and_then(Value::as_bool),
        Some(true)
    );
    let rules = get(p, "rules").and_then(Value::as_sequence).unwrap();
    let levels = ["None", "Metadata", "Request", "RequestResponse"];
    for r in rules {
        assert!(levels.contains(&str_of(r, "level").unwrap()), "{r:?}");
    }
    // The resources a rule names, as "group/resource".
    let names = |r: &Value| -> Vec<String> {
        get(r, "resources")
            .and_then(Value::as_sequence)
            .map(|rs| {
                rs.iter()
                    .flat_map(|g| {
                        let group = str_of(g, "group").unwrap_or("").to_string();
                        let res = strings(get(g, "resources"));
                        if res.is_empty() {
                            vec![format!("{group}/*")]
                        } else {
                            res.into_iter().map(|x| format!("{group}/{x}")).collect()
                        }
                    })
                    .collect()
            })
            .unwrap_or_default()
    };
    let first = |what: &str| {
        rules
            .iter()
            .position(|r| names(r).iter().any(|n| n == what))
            .unwrap_or_else(|| panic!("no rule names {what}"))
    };
    // First match wins: Secrets are pinned at Metadata by a rule that only health-check
    // rules (non-resource URLs) precede, so nothing can raise them to a level that stores
    // their values, nor drop them.
    let secrets = first("/secrets");
    assert_eq!(str_of(&rules[secrets], "level"), Some("Metadata"));
    assert!(names(&rules[secrets]).contains(&"/configmaps".to_string()));
    assert!(names(&rules[secrets]).contains(&"/serviceaccounts/token".to_string()));
    for r in &rules[..secrets] {
        assert!(
            get(r, "resources").is_none() && get(r, "nonResourceURLs").is_some(),
            "{r:?}"
        );
    }
    for what in [
        "/pods/exec",
        "/pods/attach",
        "/pods/portforward",
        "rbac.authorization.k8s.io/clusterrolebindings",
        "rbac.authorization.k8s.io/roles",
    ] {
        assert_eq!(
            str_of(&rules[first(what)], "level"),
            Some("RequestResponse"),
            "{what}"
        );
    }
    // Node heartbeats are trimmed.
    let lease = first("coordination.k8s.io/leases");
    assert_eq!(str_of(&rules[lease], "level"), Some("None"));
    // The default is the last rule: Metadata for everything.
    let last = rules.last().unwrap();
    assert_eq!(str_of(last, "level"), Some("Metadata"));
    assert_eq!(
        last.as_mapping().unwrap().len(),
        1,
        "the default rule selects everything"
    );
}

/// `https://host:port/path` -> (host, port, path).
fn split_url(url: &str) -> (String, u16, String) {
    let rest = url.strip_prefix("https://").expect("https URL");
    let (authority, path) = rest.split_at(rest.find('/').unwrap_or(rest.len()));
    let (host, port) = authority.rsplit_once(':').expect("explicit port");
    (host.to_string(), port.parse().unwrap(), path.to_string())
}

fn objects(rel: &str) -> Vec<Value> {
    yaml_docs(&read(rel), rel)
}

#[test]
fn webhook_kubeconfig_posts_to_the_ingester_route() {
    let docs = yaml_docs(
        &read("deploy/control-plane/webhook-kubeconfig.yaml"),
        "kubeconfig",
    );
    let kc = &docs[0];
    assert_eq!(str_of(kc, "kind"), Some("Config"));
    let current = str_of(kc, "current-context").unwrap();
    let find = |list: &str, name: &str| -> Value {
        get(kc, list)
            .and_then(Value::as_sequence)
            .unwrap()
            .iter()
            .find(|e| str_of(e, "name") == Some(name))
            .unwrap_or_else(|| panic!("no {list} entry {name}"))
            .clone()
    };
    let ctx = get(&find("contexts", current), "context").unwrap().clone();
    let cluster = get(
        &find("clusters", str_of(&ctx, "cluster").unwrap()),
        "cluster",
    )
    .unwrap()
    .clone();
    let user = get(&find("users", str_of(&ctx, "user").unwrap()), "user")
        .unwrap()
        .clone();
    let server = str_of(&cluster, "server").unwrap();
    let (host, port, path) = split_url(server);
    assert_eq!(
        path,
        sealtrail_ingester::WEBHOOK_PATH,
        "kubeconfig server {server}"
    );
    assert!(str_of(&cluster, "certificate-authority").is_some());
    assert!(str_of(&user, "client-certificate").is_some());
    assert!(str_of(&user, "client-key").is_some());

    // The host is the ingester Service, on its webhook port, which the pods listen on.
    let (svc, ns) = host.split_once('.').unwrap();
    assert_eq!(ns, "sealtrail.svc");
    let service = objects("deploy/base/ingester/service.yaml");
    let service = service
        .iter()
        .find(|o| get(o, "metadata").and_then(|m| str_of(m, "name")) == Some(svc))
        .unwrap_or_else(|| panic!("no Service {svc}"));
    let ports = get(get(service, "spec").unwrap(), "ports")
        .and_then(Value::as_sequence)
        .unwrap();
    assert!(
        ports
            .iter()
            .any(|p| get(p, "port").and_then(Value::as_u64) == Some(port.into()))
    );
    let kust = objects("deploy/base/ingester/kustomization.yaml");
    assert_eq!(str_of(&kust[0], "namespace"), Some("sealtrail"));
    let deploy = read("deploy/base/ingester/statefulset.yaml");
    assert!(
        deploy.contains(&format!("--listen=0.0.0.0:{port}")),
        "ingester listens on {port}"
    );
    assert!(deploy.contains("--allow-client=kube-apiserver"));

    // The ingester's certificate names that host; the apiserver's client certificate
    // carries the identity the ingester allows.
    let mut certs = objects("deploy/base/pki/ingest/certificates.yaml");
    certs.extend(objects("deploy/base/pki/signer/certificates.yaml"));
    let spec_of = |name: &str| {
        get(
            certs
                .iter()
                .find(|c| get(c, "metadata").and_then(|m| str_of(m, "name")) == Some(name))
                .unwrap_or_else(|| panic!("no Certificate {name}")),
            "spec",
        )
        .unwrap()
        .clone()
    };
    assert!(strings(get(&spec_of("sealtrail-ingester-tls"), "dnsNames")).contains(&host));
    assert_eq!(
        str_of(&spec_of("kube-apiserver-audit-client"), "commonName"),
        Some("kube-apiserver")
    );
}

// ---------------------------------------------------------------------------------------
// Flags

fn binary(name: &str) -> PathBuf {
    let exe = std::env::current_exe().unwrap();
    let bin = exe.parent().unwrap().parent().unwrap().join(name);
    assert!(
        bin.exists(),
        "{} not built: run `cargo test --workspace` (it builds {name} because its crate has an \
         integration test), or `cargo build -p <its crate>` with the same profile",
        bin.display()
    );
    bin
}

fn help_of(bin: &Path, sub: Option<&str>) -> String {
    let mut cmd = Command::new(bin);
    if let Some(s) = sub {
        cmd.arg(s);
    }
    let out = cmd.arg("--help").output().unwrap();
    assert!(
        out.status.success(),
        "{} {sub:?} --help failed",
        bin.display()
    );
    String::from_utf8(out.stdout).unwrap()
}

fn flags_in(help: &str) -> BTreeSet<String> {
    let mut flags = BTreeSet::new();
    for word in help.split(|c: char| !(c.is_ascii_alphanumeric() || c == '-')) {
        if word.starts_with("--") && word.len() > 2 {
            flags.insert(word.to_string());
        }
    }
    flags
}

fn subcommands(help: &str) -> Vec<String> {
    let mut subs = Vec::new();
    let mut inside = false;
    for line in help.lines() {
        if line.trim_end() == "Commands:" {
            inside = true;
            continue;
        }
        if inside {
            if !line.starts_with("  ") {
                break;
            }
            if let Some(w) = line.split_whitespace().next()
                && w != "help"
            {
                subs.push(w.to_string());
            }
        }
    }
    subs
}

/// For each binary and (sub)command: the flags its `--help` lists.
struct Cli {
    subs: BTreeMap<&'static str, Vec<String>>,
    flags: BTreeMap<(String, Option<String>), BTreeSet<String>>,
}

impl Cli {
    fn load() -> Self {
        let mut subs = BTreeMap::new();
        let mut flags = BTreeMap::new();
        for name in BINARIES {
            let bin = binary(name);
            let top = help_of(&bin, None);
            let s = subcommands(&top);
            for sub in &s {
                flags.insert(
                    (name.to_string(), Some(sub.clone())),
                    flags_in(&help_of(&bin, Some(sub))),
                );
            }
            flags.insert((name.to_string(), None), flags_in(&top));
            subs.insert(name, s);
        }
        Self { subs, flags }
    }

    fn check(&self, bin: &str, sub: Option<&str>, flag: &str, place: &str) -> Result<(), String> {
        let name = flag.split('=').next().unwrap();
        let known = self
            .flags
            .get(&(bin.to_string(), sub.map(String::from)))
            .ok_or_else(|| format!("{place}: {bin} has no subcommand {sub:?}"))?;
        if known.contains(name) {
            Ok(())
        } else {
            Err(format!(
                "{place}: {bin} {} has no flag {name}",
                sub.unwrap_or("")
            ))
        }
    }
}

/// A flag as used somewhere: binary, subcommand, flag, where.
type Use = (String, Option<String>, String, String);

fn binary_named(s: &str) -> Option<&'static str> {
    let base = s.rsplit('/').next().unwrap_or(s);
    BINARIES.into_iter().find(|b| *b == base)
}

fn binary_of_container(c: &Value) -> Option<&'static str> {
    if let Some(b) = strings(get(c, "command"))
        .first()
        .and_then(|c0| binary_named(c0))
    {
        return Some(b);
    }
    let image = str_of(c, "image").unwrap_or("");
    let name = str_of(c, "name").unwrap_or("");
    BINARIES.into_iter().find(|b| {
        name == *b
            || image
                .rsplit('/')
                .next()
                .is_some_and(|i| i.split(':').next() == Some(b))
    })
}

fn split_sub(cli: &Cli, bin: &str, words: &[String]) -> (Option<String>, Vec<String>) {
    match words.first() {
        Some(w) if cli.subs[bin].contains(w) => (Some(w.clone()), words[1..].to_vec()),
        _ => (None, words.to_vec()),
    }
}

fn walk_yaml(cli: &Cli, v: &Value, place: &str, uses: &mut Vec<Use>) {
    match v {
        Value::Mapping(m) => {
            if (get(v, "command").is_some() || get(v, "args").is_some())
                && let Some(bin) = binary_of_container(v)
            {
                let mut words = strings(get(v, "command"));
                if words.first().and_then(|w| binary_named(w)).is_some() {
                    words.remove(0);
                }
                words.extend(strings(get(v, "args")));
                let (sub, rest) = split_sub(cli, bin, &words);
                for w in rest.iter().filter(|w| w.starts_with("--")) {
                    uses.push((bin.into(), sub.clone(), w.clone(), place.into()));
                }
            }
            // A kustomize patch: JSON 6902 operations on a workload's args.
            if let (Some(patch), Some(target)) = (str_of(v, "patch"), get(v, "target")) {
                let target = str_of(target, "name").unwrap_or("");
                let (bin, sub) = match target {
                    "sealtrail-signer" => ("sealtrail-signer", Some("serve")),
                    "sealtrail-ingester" => ("sealtrail-ingester", None),
                    "sealtrail-verify" => ("sealtrail-verify", Some("verify")),
                    _ => ("", None),
                };
                for doc in yaml_docs(patch, place) {
                    for op in doc.as_sequence().into_iter().flatten() {
                        let path = str_of(op, "path").unwrap_or("");
                        if !path.contains("/args") {
                            continue;
                        }
                        assert!(
                            !bin.is_empty(),
                            "{place}: args patch of unknown target {target}"
                        );
                        let values = match get(op, "value") {
                            Some(Value::String(s)) => vec![s.clone()],
                            other => strings(other),
                        };
                        for w in values.into_iter().filter(|w| w.starts_with("--")) {
                            uses.push((bin.into(), sub.map(String::from), w, place.into()));
                        }
                    }
                    walk_yaml(cli, &doc, place, uses);
                }
            }
            for (_, child) in m {
                walk_yaml(cli, child, place, uses);
            }
        }
        Value::Sequence(s) => {
            for child in s {
                walk_yaml(cli, child, place, uses);
            }
        }
        _ => {}
    }
}

/// Sealtrail invocations in the shell code blocks of a Markdown file.
fn walk_markdown(cli: &Cli, text: &str, place: &str, uses: &mut Vec<Use>) {
    let mut in_code = false;
    let mut shell = false;
    let mut joined = String::new();
    let mut lines = Vec::new();
    for line in text.lines() {
        let t = line.trim_start();
        if let Some(lang) = t.strip_prefix("```") {
            if in_code {
                in_code = false;
            } else {
                in_code = true;
                shell = matches!(lang.trim(), "" | "sh" | "bash" | "shell" | "console");
            }
            continue;
        }
        if !in_code || !shell {
            continue;
        }
        if let Some(l) = line.strip_suffix('\\') {
            joined.push_str(l);
            joined.push(' ');
            continue;
        }
        joined.push_str(line);
        lines.push(std::mem::take(&mut joined));
    }
    let stop = ["|", "||", "&&", ";", ")", "2>&1"];
    for line in lines {
        let line = line.split(" #").next().unwrap_or("");
        let words: Vec<String> = line
            .split_whitespace()
            .map(|w| {
                w.trim_matches(|c| c == '"' || c == '\'' || c == '(' || c == '`')
                    .to_string()
            })
            .collect();
        for (i, w) in words.iter().enumerate() {
            // Only a command: first word, or after a shell operator, `--` (kubectl exec)
            // or a prefix command; not a namespace or resource name that looks the same.
            let command_position = i == 0
                || [
                    "|", "||", "&&", ";", "--", "sudo", "exec", "then", "do", "time",
                ]
                .contains(&words[i - 1].as_str());
            let path_like = !w.contains('/')
                || ["/", "./", "../", "~/", "$", "target/"]
                    .iter()
                    .any(|p| w.starts_with(p));
            if !command_position || !path_like {
                continue;
            }
            let Some(bin) = binary_named(w) else { continue };
            let args: Vec<String> = words[i + 1..]
                .iter()
                .take_while(|a| {
                    !stop.contains(&a.as_str()) && !a.starts_with('>') && !a.starts_with('<')
                })
                .cloned()
                .collect();
            let (sub, rest) = split_sub(cli, bin, &args);
            for a in rest.iter().filter(|a| a.starts_with("--") && a.len() > 2) {
                uses.push((
                    bin.into(),
                    sub.clone(),
                    a.clone(),
                    format!("{place}: {line}"),
                ));
            }
        }
    }
}

fn files_under(dir: &Path, out: &mut Vec<PathBuf>) {
    for e in std::fs::read_dir(dir).unwrap() {
        let p = e.unwrap().path();
        if p.is_dir() {
            files_under(&p, out);
        } else {
            out.push(p);
        }
    }
}

#[test]
fn every_flag_used_in_deploy_and_runbooks_exists() {
    let cli = Cli::load();
    let mut files = Vec::new();
    files_under(&root().join("deploy"), &mut files);
    let runbooks = root().join("docs/runbooks");
    if runbooks.is_dir() {
        files_under(&runbooks, &mut files);
    }
    files.sort();
    let mut uses = Vec::new();
    for f in &files {
        let place = f.strip_prefix(root()).unwrap_or(f).display().to_string();
        let text = std::fs::read_to_string(f).unwrap();
        match f.extension().and_then(|e| e.to_str()) {
            Some("yaml" | "yml") => {
                for doc in yaml_docs(&text, &place) {
                    walk_yaml(&cli, &doc, &place, &mut uses);
                }
            }
            Some("md") => walk_markdown(&cli, &text, &place, &mut uses),
            _ => {}
        }
    }
    let errors: Vec<String> = uses
        .iter()
        .filter_map(|(bin, sub, flag, place)| cli.check(bin, sub.as_deref(), flag, place).err())
        .collect();
    assert!(
        errors.is_empty(),
        "flags that do not exist:\n{}",
        errors.join("\n")
    );

    // Not vacuous: the manifests, both overlays' patches and the runbooks were all read.
    let seen: BTreeSet<(&str, &str)> = uses
        .iter()
        .map(|(b, _, f, _)| (b.as_str(), f.split('=').next().unwrap()))
        .collect();
    for want in [
        ("sealtrail-signer", "--state-dir"),
        ("sealtrail-signer", "--kms-key"),
        ("sealtrail-signer", "--fence"),
        ("sealtrail-signer", "--pkcs11-pin-file"),
        ("sealtrail-ingester", "--signer-url"),
        ("sealtrail-ingester", "--allow-client"),
        ("sealtrail-verify", "--trust"),
    ] {
        assert!(
            seen.contains(&want),
            "{want:?} never seen: is the scan broken?"
        );
    }
    assert!(
        uses.iter()
            .any(|(_, _, _, place)| place.starts_with("docs/runbooks")),
        "no Sealtrail command found in docs/runbooks"
    );
}

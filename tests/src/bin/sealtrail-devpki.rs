//! `sealtrail-devpki`: writes a throw-away development PKI (see `sealtrail_tests::pki`).

use std::path::PathBuf;

use clap::Parser;
use sealtrail_tests::pki::{self, PkiOptions};

/// Writes a development PKI for Sealtrail: a CA, server certificates for the signer and
/// the ingester's webhook, client certificates for the ingester (CN sealtrail-ingester),
/// the verifier (CN sealtrail-verifier), an administrator (CN sealtrail-admin) and the
/// kube-apiserver (CN kube-apiserver), and an unrelated CA with a client certificate for
/// negative tests. ECDSA P-256, PKCS#8 keys (mode 0600), valid 825 days. For tests and
/// development only.
#[derive(Debug, Parser)]
#[command(name = "sealtrail-devpki", version)]
struct Args {
    /// Directory to write into (created if missing; existing files are overwritten).
    #[arg(long)]
    out: PathBuf,
    /// Extra subject alternative name (DNS name or IP address) for both server
    /// certificates, on top of localhost, 127.0.0.1 and ::1. Repeatable.
    #[arg(long = "san", value_name = "NAME")]
    sans: Vec<String>,
}

fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    let paths = pki::generate(
        &args.out,
        &PkiOptions {
            extra_sans: args.sans,
        },
    )?;
    println!("wrote a development PKI to {}:", paths.dir.display());
    for (what, path) in paths.files() {
        println!(
            "  {:<24} {what}",
            path.file_name()
                .map_or_else(String::new, |n| n.to_string_lossy().into_owned())
        );
    }
    Ok(())
}

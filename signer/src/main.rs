//! `sealtrail-signer`: parses configuration and runs the signer.

mod anchor_cmd;

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use anyhow::{Context as _, bail};
use clap::{Parser, Subcommand, ValueEnum};
use sealtrail_core::checkpoint;
use sealtrail_core::keys::Algorithm;
use sealtrail_core::trust::{TrustBundle, TrustedKey};
use sealtrail_signer::authz::Identities;
use sealtrail_signer::kms::{KmsConfig, KmsKey};
use sealtrail_signer::pkcs11::{Pin, Pkcs11Config, Pkcs11Key};
use sealtrail_signer::rotation;
use sealtrail_signer::state::State;
use sealtrail_signer::{CommitConfig, Config, DevKeyFile, Fence, KeyBackend, TlsFiles};
use sealtrail_store::args::{
    FenceLockArgs, FenceS3Args, LockArgs, PublishLockArgs, PublishS3Args, S3Args, open_location,
};
use sealtrail_store::{Location, ObjectStore};

#[derive(Parser)]
#[command(
    name = "sealtrail-signer",
    version,
    about = "Sealtrail signer: the single writer of the audit log"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Clone, Copy, ValueEnum)]
enum AlgArg {
    Ed25519,
    EcdsaP256,
}

impl From<AlgArg> for Algorithm {
    fn from(a: AlgArg) -> Self {
        match a {
            AlgArg::Ed25519 => Algorithm::Ed25519,
            AlgArg::EcdsaP256 => Algorithm::EcdsaP256Sha256,
        }
    }
}

#[derive(clap::Args, Clone)]
struct KeyArgs {
    /// AWS KMS key (id, ARN or alias/NAME), ECC_NIST_P256 SIGN_VERIFY. Credentials from the
    /// default chain (environment, profile, IRSA web identity).
    #[arg(long, env = "SEALTRAIL_KMS_KEY")]
    kms_key: Option<String>,
    /// KMS endpoint override (KMS-compatible services, tests).
    #[arg(long, env = "SEALTRAIL_KMS_ENDPOINT")]
    kms_endpoint: Option<String>,
    /// KMS region (else from the environment or profile).
    #[arg(long, env = "AWS_REGION")]
    kms_region: Option<String>,
    /// PKCS#11 module (the HSM vendor's library, e.g. /usr/lib/softhsm/libsofthsm2.so).
    #[arg(long, env = "SEALTRAIL_PKCS11_MODULE")]
    pkcs11_module: Option<PathBuf>,
    /// Label of the token holding the key (slots are found by label).
    #[arg(long, env = "SEALTRAIL_PKCS11_TOKEN")]
    pkcs11_token_label: Option<String>,
    /// Label of the key pair in the token.
    #[arg(long, env = "SEALTRAIL_PKCS11_KEY")]
    pkcs11_key_label: Option<String>,
    /// File holding the user PIN. Without it the PIN is read from the environment variable
    /// SEALTRAIL_PKCS11_PIN. Never on a command line.
    #[arg(long)]
    pkcs11_pin_file: Option<PathBuf>,
    /// Development key file (PKCS#8 PEM, Ed25519 or P-256). Needs --insecure-dev-key.
    #[arg(long, env = "SEALTRAIL_DEV_KEY")]
    dev_key: Option<PathBuf>,
    /// Accept a signing key stored in a plain file. Never in production.
    #[arg(long)]
    insecure_dev_key: bool,
}

impl KeyArgs {
    fn pkcs11_config(&self) -> anyhow::Result<Option<Pkcs11Config>> {
        let Some(module) = &self.pkcs11_module else {
            return Ok(None);
        };
        let (Some(token), Some(key)) = (&self.pkcs11_token_label, &self.pkcs11_key_label) else {
            bail!("--pkcs11-module needs --pkcs11-token-label and --pkcs11-key-label");
        };
        let pin = match &self.pkcs11_pin_file {
            Some(f) => Pin::from_file(f)?,
            None => Pin::from_env("SEALTRAIL_PKCS11_PIN")?,
        };
        Ok(Some(Pkcs11Config::new(module, token, key, pin)))
    }

    async fn backend(&self) -> anyhow::Result<Arc<dyn KeyBackend>> {
        let chosen = [
            self.kms_key.is_some(),
            self.pkcs11_module.is_some(),
            self.dev_key.is_some(),
        ];
        if chosen.iter().filter(|c| **c).count() > 1 {
            bail!("choose one key backend: --kms-key, --pkcs11-module or --dev-key");
        }
        if let Some(key) = &self.kms_key {
            let mut cfg = KmsConfig::new(key);
            cfg.endpoint = self.kms_endpoint.clone();
            cfg.region = self.kms_region.clone();
            return Ok(Arc::new(KmsKey::connect(cfg).await?));
        }
        if let Some(cfg) = self.pkcs11_config()? {
            let key = tokio::task::spawn_blocking(move || Pkcs11Key::open(cfg)).await??;
            return Ok(Arc::new(key));
        }
        match &self.dev_key {
            Some(path) => Ok(Arc::new(DevKeyFile::load(path, self.insecure_dev_key)?)),
            None => bail!(
                "no signing key: pass --kms-key, --pkcs11-module (with token and key labels), \
                 or --dev-key FILE --insecure-dev-key for development"
            ),
        }
    }
}

impl KeyArgs {
    /// The key a `rotate --to` reference names (`kms:<key id, ARN or alias>`,
    /// `pkcs11:<key label>` in the same token, `dev:<file>`), with this key's backend
    /// settings (KMS endpoint and region; PKCS#11 module, token and PIN).
    async fn backend_for(&self, reference: &str) -> anyhow::Result<Arc<dyn KeyBackend>> {
        let Some((kind, value)) = reference.split_once(':') else {
            bail!("--to {reference:?}: expected kms:<key>, pkcs11:<key label> or dev:<file>");
        };
        let mut args = Self {
            kms_key: None,
            pkcs11_module: None,
            dev_key: None,
            ..self.clone()
        };
        match kind {
            "kms" => args.kms_key = Some(value.to_string()),
            "pkcs11" => {
                let Some(module) = &self.pkcs11_module else {
                    bail!("--to pkcs11:<label> needs the current key in a PKCS#11 token");
                };
                args.pkcs11_module = Some(module.clone());
                args.pkcs11_key_label = Some(value.to_string());
            }
            "dev" => args.dev_key = Some(PathBuf::from(value)),
            _ => bail!("--to {reference:?}: unknown backend {kind:?} (kms, pkcs11 or dev)"),
        }
        args.backend().await
    }
}

#[derive(clap::Args)]
struct PublishArgs {
    /// Where verifiers read the trail (the segment store: s3://bucket[/prefix] or a
    /// directory): the rotation checkpoint is written there as
    /// <prefix>checkpoints/<size>-<hash>.note. Required: no segment carries a rotation, and
    /// without it the checkpoints after the rotation link to one no verifier can read.
    #[arg(long)]
    publish: String,
    #[command(flatten)]
    s3: PublishS3Args,
    #[command(flatten)]
    lock: PublishLockArgs,
}

impl PublishArgs {
    async fn store(&self) -> anyhow::Result<(Arc<dyn ObjectStore>, String)> {
        let (s3, lock) = (self.s3.clone().into(), self.lock.clone().into());
        open_store("--publish", &self.publish, s3, lock).await
    }
}

/// Opens a directory or an `s3://bucket[/prefix]` (whose Object Lock is checked) to write
/// it; returns the store and the key prefix.
async fn open_store(
    flag: &str,
    location: &str,
    s3: S3Args,
    lock: LockArgs,
) -> anyhow::Result<(Arc<dyn ObjectStore>, String)> {
    let opened = open_location(Location::parse(location)?, &s3, Some(&lock))
        .await
        .with_context(|| format!("{flag} {location}"))?;
    Ok((opened.store, opened.prefix))
}

#[derive(clap::Args)]
struct FenceArgs {
    /// Where to write a fencing record per checkpoint, so that a second signer elsewhere
    /// cannot extend the log: s3://bucket[/prefix] (an Object Lock bucket, e.g. the
    /// segment bucket) or a directory shared by the machines. Records go to
    /// <prefix>fence/. Strongly recommended in production.
    #[arg(long, env = "SEALTRAIL_FENCE")]
    fence: Option<String>,
    #[command(flatten)]
    s3: FenceS3Args,
    #[command(flatten)]
    lock: FenceLockArgs,
}

impl FenceArgs {
    async fn fence(&self) -> anyhow::Result<Option<Fence>> {
        let Some(location) = &self.fence else {
            return Ok(None);
        };
        let (s3, lock) = (self.s3.clone().into(), self.lock.clone().into());
        let (store, prefix) = open_store("--fence", location, s3, lock).await?;
        Ok(Some(Fence::new(store, prefix)))
    }
}

// Parsed once at start: the size of a variant does not matter.
#[allow(clippy::large_enum_variant)]
#[derive(Subcommand)]
enum Command {
    /// Serve the Signer gRPC API over mutual TLS.
    Serve {
        /// The log's origin: one per cluster, e.g. sealtrail.example.com/prod-eu-1.
        #[arg(long, env = "SEALTRAIL_ORIGIN")]
        origin: String,
        /// State directory (leaves, checkpoints). One signer per directory.
        #[arg(long, env = "SEALTRAIL_STATE_DIR")]
        state_dir: PathBuf,
        /// Address to listen on.
        #[arg(long, default_value = "127.0.0.1:7443")]
        listen: String,
        /// Server certificate (PEM).
        #[arg(long)]
        tls_cert: PathBuf,
        /// Server private key (PEM).
        #[arg(long)]
        tls_key: PathBuf,
        /// CA of the accepted client certificates (PEM). A client certificate is required.
        #[arg(long)]
        client_ca: PathBuf,
        /// Client-certificate identity (CN or SAN) allowed to append; repeatable.
        #[arg(long = "ingester-identity", default_value = "sealtrail-ingester")]
        ingester_identities: Vec<String>,
        /// Client-certificate identity allowed to read checkpoints and proofs; repeatable.
        #[arg(long = "verifier-identity", default_value = "sealtrail-verifier")]
        verifier_identities: Vec<String>,
        /// Client-certificate identity of administrators; repeatable.
        #[arg(long = "admin-identity", default_value = "sealtrail-admin")]
        admin_identities: Vec<String>,
        /// Address for /metrics, /healthz and /readyz (plain HTTP); none if absent.
        #[arg(long)]
        metrics_listen: Option<String>,
        /// Least time between two checkpoint signatures, in milliseconds.
        #[arg(long, default_value_t = 10)]
        min_commit_interval_ms: u64,
        /// Sustained checkpoint signatures per second at most (whatever the event rate:
        /// under load, commits wait and grow); 0 for no bound beyond the interval.
        #[arg(long, default_value_t = sealtrail_signer::log::DEFAULT_MAX_SIGNATURES_PER_SECOND)]
        max_signatures_per_second: f64,
        /// Signatures allowed in a burst above that rate (batches signed without waiting).
        #[arg(long, default_value_t = sealtrail_signer::log::DEFAULT_SIGNATURE_BURST)]
        signature_burst: u32,
        /// Recent leaves among which a re-sent Append is answered with its original indexes
        /// and checkpoint (47-94 bytes of memory per leaf: ~86 MB for the default); 0 disables.
        #[arg(long, default_value_t = sealtrail_signer::log::DEFAULT_DEDUPE_WINDOW)]
        dedupe_window: u64,
        #[command(flatten)]
        fence: FenceArgs,
        #[command(flatten)]
        key: KeyArgs,
    },
    /// Create a development key file (insecure: the key sits in a file).
    DevKeygen {
        #[arg(long)]
        out: PathBuf,
        #[arg(long, value_enum, default_value = "ed25519")]
        algorithm: AlgArg,
    },
    /// Create a key pair in a PKCS#11 token: non-extractable, sensitive, sign-only.
    Keygen {
        #[arg(long, value_enum, default_value = "ecdsa-p256")]
        algorithm: AlgArg,
        #[command(flatten)]
        key: KeyArgs,
    },
    /// Sign a rotation checkpoint with the current key (the key options) and the new key
    /// (--to), after which only the new key signs. Run it with the signer stopped.
    Rotate {
        #[arg(long, env = "SEALTRAIL_ORIGIN")]
        origin: String,
        #[arg(long, env = "SEALTRAIL_STATE_DIR")]
        state_dir: PathBuf,
        /// The new key: kms:<key id, ARN or alias>, pkcs11:<key label> (same token and
        /// PIN as the current key) or dev:<file>.
        #[arg(long)]
        to: String,
        #[command(flatten)]
        publish: PublishArgs,
        #[command(flatten)]
        fence: FenceArgs,
        /// The current key.
        #[command(flatten)]
        key: KeyArgs,
    },
    /// Get RFC 3161 timestamps on the newest stored checkpoint from each timestamp
    /// authority, and store them beside the trail (holds no key of the log).
    Anchor(anchor_cmd::AnchorArgs),
    /// Write the trust bundle (public keys) that verifiers pin.
    ExportTrust {
        #[arg(long, env = "SEALTRAIL_ORIGIN")]
        origin: String,
        /// The signer's state directory: export its key history (every key that has signed
        /// this log, with its validity range). Without it, the key options' key from size 0.
        #[arg(long, env = "SEALTRAIL_STATE_DIR")]
        state_dir: Option<PathBuf>,
        /// Output file; `-` for standard output.
        #[arg(long, default_value = "-")]
        out: PathBuf,
        #[command(flatten)]
        key: KeyArgs,
    },
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    sealtrail_ops::init_logging(false);
    match Cli::parse().command {
        Command::Serve {
            origin,
            state_dir,
            listen,
            tls_cert,
            tls_key,
            client_ca,
            min_commit_interval_ms,
            max_signatures_per_second,
            signature_burst,
            dedupe_window,
            fence,
            metrics_listen,
            ingester_identities,
            verifier_identities,
            admin_identities,
            key,
        } => {
            let listener = tokio::net::TcpListener::bind(&listen)
                .await
                .with_context(|| format!("listen on {listen}"))?;
            tracing::info!(addr = %listener.local_addr()?, "signer listening");
            let metrics_listener = match metrics_listen {
                Some(addr) => Some(
                    tokio::net::TcpListener::bind(&addr)
                        .await
                        .with_context(|| format!("listen on {addr}"))?,
                ),
                None => None,
            };
            let config = Config {
                origin,
                state_dir,
                key: key.backend().await?,
                tls: TlsFiles {
                    cert: tls_cert,
                    key: tls_key,
                    client_ca,
                },
                commit: CommitConfig {
                    min_interval: Duration::from_millis(min_commit_interval_ms),
                    max_signatures_per_second,
                    signature_burst,
                    dedupe_window,
                    fence: fence.fence().await?,
                    ..CommitConfig::default()
                },
                identities: Identities {
                    ingesters: ingester_identities,
                    verifiers: verifier_identities,
                    admins: admin_identities,
                },
                metrics_listener,
            };
            sealtrail_signer::run(config, listener, sealtrail_ops::shutdown_signal()).await?;
            tracing::info!("signer stopped");
        }
        Command::Anchor(args) => anchor_cmd::run(args).await?,
        Command::DevKeygen { out, algorithm } => {
            let public = DevKeyFile::generate(&out, algorithm.into())?;
            eprintln!(
                "wrote {} ({}); public key:\n{}",
                out.display(),
                public.algorithm(),
                public.to_pem()
            );
        }
        Command::Keygen { algorithm, key } => {
            let Some(cfg) = key.pkcs11_config()? else {
                bail!(
                    "keygen creates keys in a PKCS#11 token: pass --pkcs11-module, --pkcs11-token-label, --pkcs11-key-label (for KMS, create the key with AWS: see docs/runbooks)"
                );
            };
            let public =
                tokio::task::spawn_blocking(move || Pkcs11Key::generate(&cfg, algorithm.into()))
                    .await??;
            eprintln!(
                "created a {} key pair in the token; public key:\n{}",
                public.algorithm(),
                public.to_pem()
            );
        }
        Command::Rotate {
            origin,
            state_dir,
            to,
            publish,
            fence,
            key,
        } => {
            let old = key.backend().await?;
            let new = key.backend_for(&to).await?;
            let fence = fence.fence().await?;
            let publish = publish.store().await?;
            let dir = state_dir.clone();
            let state = tokio::task::spawn_blocking(move || State::open_uncut(&dir)).await??;
            let rotation =
                rotation::rotate(state, &origin, old.as_ref(), new.as_ref(), fence.as_ref())
                    .await?;
            let ids = |k: &dyn KeyBackend| format!("{:08x}", k.public_key().key_id(&origin));
            eprintln!(
                "rotated at tree size {}: key {} retired, key {} signs from now on",
                rotation.checkpoint.size,
                ids(old.as_ref()),
                ids(new.as_ref())
            );
            let (store, prefix) = publish;
            let key = checkpoint::object_key(&prefix, &rotation);
            store
                .put_new(&key, &rotation.to_bytes())
                .await
                .with_context(|| format!("publish {key} (run rotate again to retry)"))?;
            eprintln!("published {key} in {}", store.describe());
        }
        Command::ExportTrust {
            origin,
            state_dir,
            out,
            key,
        } => {
            let history = match &state_dir {
                Some(dir) => rotation::read_key_history(dir)?,
                None => None,
            };
            let bundle = match history {
                Some(b) if b.origin == origin => b,
                Some(b) => bail!(
                    "the state directory holds the log {:?}, not {origin:?}",
                    b.origin
                ),
                None => {
                    let backend = key.backend().await?;
                    TrustBundle::new(
                        &origin,
                        vec![TrustedKey::new(&origin, backend.public_key(), 0)],
                    )
                }
            };
            let json = bundle.to_json();
            if out.as_os_str() == "-" {
                use std::io::Write as _;
                std::io::stdout().write_all(&json)?;
            } else {
                std::fs::write(&out, json).with_context(|| format!("write {}", out.display()))?;
            }
        }
    }
    Ok(())
}

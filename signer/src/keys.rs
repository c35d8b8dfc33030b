//! Key backends: where checkpoint signatures come from. The signer only ever asks a
//! backend to sign a checkpoint's note text; private keys stay in the backend.

use std::future::Future;
use std::path::Path;
use std::pin::Pin;

use ed25519_dalek::pkcs8::{DecodePrivateKey as _, EncodePrivateKey as _};
use p256::ecdsa::signature::hazmat::PrehashSigner as _;
use sealtrail_core::keys::{Algorithm, PublicKey};
use sha2::{Digest as _, Sha256};

use crate::Error;

pub type BoxFuture<'a, T> = Pin<Box<dyn Future<Output = T> + Send + 'a>>;

/// A signing key held somewhere the signer cannot read it from (an HSM, KMS) — or, for
/// development only, a file.
pub trait KeyBackend: Send + Sync + 'static {
    fn public_key(&self) -> &PublicKey;
    /// Short backend name for logs and metrics (`dev-file`, `pkcs11`, `aws-kms`).
    fn kind(&self) -> &'static str;
    /// Signs a note text: Ed25519 over the text, or ECDSA P-256 over SHA-256(text) returned
    /// as low-S DER (docs/FORMAT.md).
    fn sign<'a>(&'a self, text: &'a [u8]) -> BoxFuture<'a, Result<Vec<u8>, Error>>;
}

enum DevSecret {
    Ed25519(ed25519_dalek::SigningKey),
    P256(p256::ecdsa::SigningKey),
}

/// A PKCS#8 PEM private key in a file. Insecure by construction (the key is readable by
/// whoever can read the file): it refuses to load unless the operator said so.
pub struct DevKeyFile {
    secret: DevSecret,
    public: PublicKey,
}

impl DevKeyFile {
    /// Loads the key; `insecure_ok` is the operator's explicit `--insecure-dev-key`.
    pub fn load(path: &Path, insecure_ok: bool) -> Result<Self, Error> {
        if !insecure_ok {
            return Err(Error::Config(
                "a dev key file keeps the signing key on disk; pass --insecure-dev-key to use \
                 it anyway (never in production: use --pkcs11-* or --kms-key)"
                    .into(),
            ));
        }
        let pem = std::fs::read_to_string(path)
            .map_err(|e| Error::Config(format!("dev key {}: {e}", path.display())))?;
        Self::from_pem(&pem)
    }

    pub fn from_pem(pem: &str) -> Result<Self, Error> {
        if let Ok(k) = ed25519_dalek::SigningKey::from_pkcs8_pem(pem) {
            let public = PublicKey::from_ed25519_bytes(k.verifying_key().as_bytes())?;
            return Ok(Self {
                secret: DevSecret::Ed25519(k),
                public,
            });
        }
        if let Ok(k) = p256::SecretKey::from_pkcs8_pem(pem) {
            let sk = p256::ecdsa::SigningKey::from(k);
            let public =
                PublicKey::from_p256_sec1(sk.verifying_key().to_encoded_point(false).as_bytes())?;
            return Ok(Self {
                secret: DevSecret::P256(sk),
                public,
            });
        }
        Err(Error::Config(
            "dev key is not a PKCS#8 PEM Ed25519 or P-256 private key".into(),
        ))
    }

    /// Creates a new key file (mode 0600, refuses to overwrite) and returns its public key.
    pub fn generate(path: &Path, algorithm: Algorithm) -> Result<PublicKey, Error> {
        use std::io::Write as _;
        use std::os::unix::fs::OpenOptionsExt as _;
        let mut rng = rand_core::OsRng;
        let pem = match algorithm {
            Algorithm::Ed25519 => ed25519_dalek::SigningKey::generate(&mut rng)
                .to_pkcs8_pem(Default::default())
                .map_err(|e| Error::Config(e.to_string()))?
                .to_string(),
            Algorithm::EcdsaP256Sha256 => p256::SecretKey::random(&mut rng)
                .to_pkcs8_pem(Default::default())
                .map_err(|e| Error::Config(e.to_string()))?
                .to_string(),
        };
        let mut f = std::fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(0o600)
            .open(path)
            .map_err(|e| Error::Config(format!("{}: {e}", path.display())))?;
        f.write_all(pem.as_bytes())?;
        f.sync_all()?;
        Ok(Self::from_pem(&pem)?.public)
    }
}

impl KeyBackend for DevKeyFile {
    fn public_key(&self) -> &PublicKey {
        &self.public
    }

    fn kind(&self) -> &'static str {
        "dev-file"
    }

    fn sign<'a>(&'a self, text: &'a [u8]) -> BoxFuture<'a, Result<Vec<u8>, Error>> {
        Box::pin(async move {
            match &self.secret {
                DevSecret::Ed25519(k) => {
                    use ed25519_dalek::Signer as _;
                    Ok(k.sign(text).to_bytes().to_vec())
                }
                DevSecret::P256(k) => {
                    let digest = Sha256::digest(text);
                    let sig: p256::ecdsa::Signature = k
                        .sign_prehash(&digest)
                        .map_err(|e| Error::Key(format!("P-256 sign: {e}")))?;
                    let sig = sig.normalize_s().unwrap_or(sig);
                    Ok(sig.to_der().as_bytes().to_vec())
                }
            }
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn dev_keys_sign_verifiably() {
        let dir = tempfile::tempdir().unwrap();
        for alg in [Algorithm::Ed25519, Algorithm::EcdsaP256Sha256] {
            let path = dir.path().join(alg.as_str());
            let public = DevKeyFile::generate(&path, alg).unwrap();
            assert!(DevKeyFile::generate(&path, alg).is_err(), "no overwrite");
            assert!(
                DevKeyFile::load(&path, false).is_err(),
                "needs the insecure flag"
            );
            let key = DevKeyFile::load(&path, true).unwrap();
            assert_eq!(key.public_key(), &public);
            let sig = key.sign(b"text\n").await.unwrap();
            public.verify(b"text\n", &sig).unwrap();
        }
    }
}

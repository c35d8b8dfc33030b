//! Checkpoint signatures verify with an independent implementation: the `openssl` CLI,
//! following the recipe in docs/FORMAT.md §3.2.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use sealtrail_tests::softhsm::openssl_verifies_note as openssl_verifies;
use std::path::Path;

use sealtrail_core::checkpoint::{Checkpoint, NoteSignature, SignedCheckpoint};
use sealtrail_core::keys::{Algorithm, PublicKey};
use sealtrail_signer::{DevKeyFile, KeyBackend};

#[tokio::test]
async fn checkpoint_signatures_verify_with_openssl() {
    let dir = tempfile::tempdir().unwrap();
    for alg in [Algorithm::EcdsaP256Sha256, Algorithm::Ed25519] {
        let key_path = dir.path().join(alg.as_str());
        DevKeyFile::generate(&key_path, alg).unwrap();
        let key = DevKeyFile::load(&key_path, true).unwrap();
        let cp = Checkpoint {
            origin: "sealtrail.test/openssl".into(),
            size: 222,
            root: [0x5a; 32],
            time_ms: 1_764_221_736_123,
            prev: Some([0x11; 32]),
            new_key: None,
        };
        let signature = key.sign(&cp.to_text()).await.unwrap();
        let note = SignedCheckpoint::new(
            cp,
            vec![NoteSignature {
                name: "sealtrail.test/openssl".into(),
                key_id: key.public_key().key_id("sealtrail.test/openssl"),
                signature,
            }],
        )
        .unwrap();
        // Through the wire format and back, as a verifier would read it.
        let note = SignedCheckpoint::parse(&note.to_bytes()).unwrap();
        assert!(
            openssl_verifies(dir.path(), &note, key.public_key()),
            "{alg}"
        );

        // And openssl refuses a note whose text was changed.
        let mut forged = note.clone();
        forged.checkpoint.size = 221;
        let forged = SignedCheckpoint::new(forged.checkpoint, forged.signatures).unwrap();
        assert!(
            !openssl_verifies(dir.path(), &forged, key.public_key()),
            "{alg}"
        );
    }
}

#[test]
fn format_vector_checkpoint_verifies_with_openssl() {
    let vectors = Path::new(env!("CARGO_MANIFEST_DIR")).join("../core/testdata/vectors");
    let note =
        SignedCheckpoint::parse(&std::fs::read(vectors.join("checkpoint.note")).unwrap()).unwrap();
    let trust =
        sealtrail_core::trust::Trust::parse(&std::fs::read(vectors.join("trust.json")).unwrap())
            .unwrap();
    let spki = &trust.bundle().keys[0].spki;
    use base64::Engine as _;
    let der = base64::engine::general_purpose::STANDARD
        .decode(spki)
        .unwrap();
    let key = PublicKey::from_spki_der(&der).unwrap();
    let dir = tempfile::tempdir().unwrap();
    assert!(openssl_verifies(dir.path(), &note, &key));
}

//! The PKCS#11 backend against a real SoftHSM2 token.
//!
//! SoftHSM2 reads `SOFTHSM2_CONF` when the module is initialized, and a test cannot set an
//! environment variable in-process without `unsafe` (forbidden in this workspace): each test
//! re-runs itself as a child process of this test binary with `SOFTHSM2_CONF` pointing at a
//! fresh token directory. That also isolates the tests from each other (one module
//! initialization and one token directory per test).
//!
//! Needs the Debian package `softhsm2` (scripts/test installs it and exports
//! SEALTRAIL_TEST_PKCS11_MODULE); without it the tests fail, they never skip.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use sealtrail_tests::signing::assert_low_s_der;
use sealtrail_tests::softhsm::{
    init_token, openssl_verifies_note as openssl_verifies, softhsm_child,
};
use std::path::Path;
use std::sync::Arc;
use std::time::Instant;

use cryptoki::mechanism::Mechanism;
use cryptoki::mechanism::eddsa::{EddsaParams, EddsaSignatureScheme};
use cryptoki::object::{Attribute, AttributeInfo, AttributeType, ObjectClass};
use cryptoki::session::UserType;
use cryptoki::types::AuthPin;
use sealtrail_core::checkpoint::{Checkpoint, NoteSignature, SignedCheckpoint};
use sealtrail_core::keys::Algorithm;
use sealtrail_signer::pkcs11::{Pin, Pkcs11Config, Pkcs11Key, load_module};
use sealtrail_signer::{Error, KeyBackend};

const USER_PIN: &str = "pin-Sealtrail-2468";
const SO_PIN: &str = "so-pin-Sealtrail-1357";
/// The child processes get the user PIN in this variable too (for `Pin::from_env`).
const PIN_VAR: &str = "SEALTRAIL_TEST_PKCS11_PIN";

fn config(module: &Path, token: &str, key: &str, pin: &str) -> Pkcs11Config {
    Pkcs11Config::new(module, token, key, Pin::new(pin).unwrap())
}

fn sample_checkpoint(size: u64) -> Checkpoint {
    sealtrail_tests::signing::sample_checkpoint("sealtrail.test/hsm", size)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn keygen_open_sign_verify_and_pool() {
    let Some(module) = softhsm_child(
        "keygen_open_sign_verify_and_pool",
        &[(PIN_VAR, &format!("{USER_PIN}\n"))],
    ) else {
        return;
    };
    init_token("sealtrail-keygen", USER_PIN, SO_PIN);
    for alg in [Algorithm::EcdsaP256Sha256, Algorithm::Ed25519] {
        let label = format!("checkpoints-{alg}");
        let cfg = config(&module, "sealtrail-keygen", &label, USER_PIN);
        let public = Pkcs11Key::generate(&cfg, alg).unwrap();
        assert_eq!(public.algorithm(), alg);
        // A second key with the same label is refused.
        let again = Pkcs11Key::generate(&cfg, alg).unwrap_err();
        assert!(
            matches!(&again, Error::Config(m) if m.contains("already")),
            "{again}"
        );

        let key = Arc::new(Pkcs11Key::open(cfg).unwrap());
        assert_eq!(key.public_key(), &public);
        assert_eq!(key.kind(), "pkcs11");
        assert_eq!(key.algorithm(), alg);

        let text = sample_checkpoint(222).to_text();
        let sig = key.sign(&text).await.unwrap();
        public.verify(&text, &sig).unwrap();
        assert!(public.verify(b"other text\n", &sig).is_err());
        match alg {
            Algorithm::Ed25519 => assert_eq!(sig.len(), 64),
            Algorithm::EcdsaP256Sha256 => assert_low_s_der(&sig),
        }

        // 200 signatures at once through the 4-session pool.
        let tasks: Vec<_> = (0..200u64)
            .map(|i| {
                let key = key.clone();
                tokio::spawn(async move {
                    let text = sample_checkpoint(i).to_text();
                    let sig = key.sign(&text).await.unwrap();
                    (text, sig)
                })
            })
            .collect();
        for t in tasks {
            let (text, sig) = t.await.unwrap();
            public.verify(&text, &sig).unwrap();
            if alg == Algorithm::EcdsaP256Sha256 {
                assert_low_s_der(&sig);
            }
        }
    }
}

/// The private key cannot be read out of the token.
#[test]
fn private_key_is_sensitive_and_not_extractable() {
    let Some(module) = softhsm_child(
        "private_key_is_sensitive_and_not_extractable",
        &[(PIN_VAR, &format!("{USER_PIN}\n"))],
    ) else {
        return;
    };
    init_token("sealtrail-attrs", USER_PIN, SO_PIN);
    for alg in [Algorithm::EcdsaP256Sha256, Algorithm::Ed25519] {
        let label = format!("attrs-{alg}");
        Pkcs11Key::generate(&config(&module, "sealtrail-attrs", &label, USER_PIN), alg).unwrap();

        let ctx = load_module(&module).unwrap();
        let slot = ctx
            .get_slots_with_token()
            .unwrap()
            .into_iter()
            .find(|s| ctx.get_token_info(*s).unwrap().label() == "sealtrail-attrs")
            .unwrap();
        let session = ctx.open_ro_session(slot).unwrap();
        session
            .login(UserType::User, Some(&AuthPin::from(USER_PIN.to_string())))
            .unwrap();
        let found = session
            .find_objects(&[
                Attribute::Class(ObjectClass::PRIVATE_KEY),
                Attribute::Label(label.as_bytes().to_vec()),
            ])
            .unwrap();
        assert_eq!(found.len(), 1);
        let private = found[0];
        let attrs = session
            .get_attributes(
                private,
                &[
                    AttributeType::Extractable,
                    AttributeType::Sensitive,
                    AttributeType::NeverExtractable,
                    AttributeType::AlwaysSensitive,
                    AttributeType::Token,
                    AttributeType::Private,
                    AttributeType::Sign,
                    AttributeType::Id,
                ],
            )
            .unwrap();
        let mut seen = 0;
        let mut private_id = None;
        for a in attrs {
            match a {
                Attribute::Extractable(v) => assert!(!v, "CKA_EXTRACTABLE"),
                Attribute::Sensitive(v) => assert!(v, "CKA_SENSITIVE"),
                Attribute::NeverExtractable(v) => assert!(v, "CKA_NEVER_EXTRACTABLE"),
                Attribute::AlwaysSensitive(v) => assert!(v, "CKA_ALWAYS_SENSITIVE"),
                Attribute::Token(v) => assert!(v, "CKA_TOKEN"),
                Attribute::Private(v) => assert!(v, "CKA_PRIVATE"),
                Attribute::Sign(v) => assert!(v, "CKA_SIGN"),
                Attribute::Id(id) => private_id = Some(id),
                other => panic!("unexpected {other:?}"),
            }
            seen += 1;
        }
        assert_eq!(seen, 8, "every attribute was returned");

        // The secret value: the token refuses to give it.
        assert!(matches!(
            session
                .get_attribute_info(private, &[AttributeType::Value])
                .unwrap()[..],
            [AttributeInfo::Sensitive]
        ));
        let value = session
            .get_attributes(private, &[AttributeType::Value])
            .unwrap();
        assert!(
            !value.iter().any(|a| matches!(a, Attribute::Value(_))),
            "CKA_VALUE was readable"
        );

        // The public key has the same label and CKA_ID, and only verifies.
        let public = session
            .find_objects(&[
                Attribute::Class(ObjectClass::PUBLIC_KEY),
                Attribute::Label(label.as_bytes().to_vec()),
            ])
            .unwrap();
        assert_eq!(public.len(), 1);
        let attrs = session
            .get_attributes(public[0], &[AttributeType::Id, AttributeType::Verify])
            .unwrap();
        assert!(attrs.contains(&Attribute::Verify(true)));
        assert!(attrs.contains(&Attribute::Id(private_id.clone().unwrap())));
        assert_eq!(private_id.unwrap().len(), 16);
    }
}

#[test]
fn configuration_errors_are_clear_and_never_show_the_pin() {
    let Some(module) = softhsm_child(
        "configuration_errors_are_clear_and_never_show_the_pin",
        &[(PIN_VAR, &format!("{USER_PIN}\n"))],
    ) else {
        return;
    };
    init_token("sealtrail-errors", USER_PIN, SO_PIN);
    init_token("sealtrail-other", USER_PIN, SO_PIN);
    Pkcs11Key::generate(
        &config(&module, "sealtrail-errors", "real-key", USER_PIN),
        Algorithm::EcdsaP256Sha256,
    )
    .unwrap();
    const WRONG_PIN: &str = "wrong-Pin-97531";

    let check = |err: Error, pins: &[&str], expect: &[&str]| {
        let text = format!("{err} / {err:?}");
        assert!(matches!(err, Error::Config(_)), "{text}");
        for pin in pins {
            assert!(!text.contains(pin), "the PIN leaked: {text}");
        }
        for e in expect {
            assert!(text.contains(e), "{text:?} should mention {e:?}");
        }
        println!("{err}");
    };

    // Wrong PIN.
    let err =
        Pkcs11Key::open(config(&module, "sealtrail-errors", "real-key", WRONG_PIN)).unwrap_err();
    check(
        err,
        &[WRONG_PIN, USER_PIN],
        &["wrong PIN", "sealtrail-errors"],
    );
    let err = Pkcs11Key::generate(
        &config(&module, "sealtrail-errors", "new-key", WRONG_PIN),
        Algorithm::Ed25519,
    )
    .unwrap_err();
    check(err, &[WRONG_PIN, USER_PIN], &["wrong PIN"]);

    // Unknown token: the message lists the labels there are.
    let err = Pkcs11Key::open(config(&module, "no-such-token", "real-key", USER_PIN)).unwrap_err();
    check(
        err,
        &[USER_PIN],
        &[
            "no-such-token",
            "\"sealtrail-errors\"",
            "\"sealtrail-other\"",
        ],
    );

    // Unknown key; a key in another token.
    let err =
        Pkcs11Key::open(config(&module, "sealtrail-errors", "no-such-key", USER_PIN)).unwrap_err();
    check(err, &[USER_PIN], &["no private key", "no-such-key"]);
    let err =
        Pkcs11Key::open(config(&module, "sealtrail-other", "real-key", USER_PIN)).unwrap_err();
    check(
        err,
        &[USER_PIN],
        &["no private key", "real-key", "sealtrail-other"],
    );

    // Module that does not exist.
    let err = Pkcs11Key::open(config(
        Path::new("/nonexistent/libpkcs11.so"),
        "sealtrail-errors",
        "real-key",
        USER_PIN,
    ))
    .unwrap_err();
    check(err, &[USER_PIN], &["/nonexistent/libpkcs11.so"]);

    // The Debug of a configuration hides the PIN.
    let cfg = config(&module, "sealtrail-errors", "real-key", USER_PIN);
    assert!(!format!("{cfg:?}").contains(USER_PIN));
    // And the right PIN, read from a file, works after all those failures.
    let dir = tempfile::tempdir().unwrap();
    let pin_file = dir.path().join("pin");
    std::fs::write(&pin_file, format!("{USER_PIN}\n")).unwrap();
    use std::os::unix::fs::PermissionsExt as _;
    std::fs::set_permissions(&pin_file, std::fs::Permissions::from_mode(0o400)).unwrap();
    let key = Pkcs11Key::open(Pkcs11Config::new(
        &module,
        "sealtrail-errors",
        "real-key",
        Pin::from_file(&pin_file).unwrap(),
    ))
    .unwrap();
    assert!(!format!("{key:?}").contains(USER_PIN));
    drop(key);

    // From an environment variable (with a trailing newline, as `echo` would leave it).
    Pkcs11Key::open(Pkcs11Config::new(
        &module,
        "sealtrail-errors",
        "real-key",
        Pin::from_env(PIN_VAR).unwrap(),
    ))
    .unwrap();
    let err = Pin::from_env("SEALTRAIL_TEST_NO_SUCH_PIN_VARIABLE").unwrap_err();
    check(
        err,
        &[],
        &["SEALTRAIL_TEST_NO_SUCH_PIN_VARIABLE", "not set"],
    );
}

/// `openssl` verifies HSM signatures over checkpoint notes (docs/FORMAT.md §3.2 recipe).
#[tokio::test]
async fn openssl_verifies_hsm_signatures() {
    let Some(module) = softhsm_child(
        "openssl_verifies_hsm_signatures",
        &[(PIN_VAR, &format!("{USER_PIN}\n"))],
    ) else {
        return;
    };
    init_token("sealtrail-openssl", USER_PIN, SO_PIN);
    let dir = tempfile::tempdir().unwrap();
    for alg in [Algorithm::EcdsaP256Sha256, Algorithm::Ed25519] {
        let label = format!("openssl-{alg}");
        let cfg = config(&module, "sealtrail-openssl", &label, USER_PIN);
        Pkcs11Key::generate(&cfg, alg).unwrap();
        let key = Pkcs11Key::open(cfg).unwrap();
        let origin = "sealtrail.test/hsm";
        // Several signatures: about half of the token's raw ECDSA signatures are high-S.
        for size in 1..=8 {
            let cp = sample_checkpoint(size);
            let signature = key.sign(&cp.to_text()).await.unwrap();
            let note = SignedCheckpoint::new(
                cp,
                vec![NoteSignature {
                    name: origin.into(),
                    key_id: key.public_key().key_id(origin),
                    signature,
                }],
            )
            .unwrap();
            let note = SignedCheckpoint::parse(&note.to_bytes()).unwrap();
            assert!(
                openssl_verifies(dir.path(), &note, key.public_key()),
                "{alg}"
            );
            let mut forged = note.checkpoint.clone();
            forged.size += 1;
            let forged = SignedCheckpoint::new(forged, note.signatures.clone()).unwrap();
            assert!(
                !openssl_verifies(dir.path(), &forged, key.public_key()),
                "{alg}"
            );
        }
    }
}

/// Sessions that lose their login (another session of the process logs out, as a token
/// reset would) are replaced transparently: the next signatures still succeed.
#[tokio::test]
async fn lost_sessions_are_replaced() {
    let Some(module) = softhsm_child(
        "lost_sessions_are_replaced",
        &[(PIN_VAR, &format!("{USER_PIN}\n"))],
    ) else {
        return;
    };
    init_token("sealtrail-recover", USER_PIN, SO_PIN);
    let cfg = config(&module, "sealtrail-recover", "k", USER_PIN);
    Pkcs11Key::generate(&cfg, Algorithm::EcdsaP256Sha256).unwrap();
    let key = Pkcs11Key::open(Pkcs11Config { sessions: 2, ..cfg }).unwrap();
    let text = sample_checkpoint(1).to_text();
    key.public_key()
        .verify(&text, &key.sign(&text).await.unwrap())
        .unwrap();

    let ctx = load_module(&module).unwrap();
    let slot = ctx
        .get_slots_with_token()
        .unwrap()
        .into_iter()
        .find(|s| ctx.get_token_info(*s).unwrap().label() == "sealtrail-recover")
        .unwrap();
    let other = ctx.open_ro_session(slot).unwrap();
    other.logout().unwrap(); // logs every session of this process out of the token
    drop(other);

    for i in 0..6 {
        let text = sample_checkpoint(i).to_text();
        let sig = key.sign(&text).await.unwrap();
        key.public_key().verify(&text, &sig).unwrap();
    }
}

/// Informational: the rate of sequential ECDSA P-256 and Ed25519 signatures (no assertion).
#[tokio::test]
async fn sequential_signature_rate() {
    let Some(module) = softhsm_child(
        "sequential_signature_rate",
        &[(PIN_VAR, &format!("{USER_PIN}\n"))],
    ) else {
        return;
    };
    init_token("sealtrail-rate", USER_PIN, SO_PIN);
    for alg in [Algorithm::EcdsaP256Sha256, Algorithm::Ed25519] {
        let cfg = config(&module, "sealtrail-rate", &format!("rate-{alg}"), USER_PIN);
        Pkcs11Key::generate(&cfg, alg).unwrap();
        let key = Pkcs11Key::open(cfg).unwrap();
        let text = sample_checkpoint(7).to_text();
        let n = 1000;
        let start = Instant::now();
        for _ in 0..n {
            key.sign(&text).await.unwrap();
        }
        let secs = start.elapsed().as_secs_f64();
        println!(
            "SoftHSM2 {alg} through Pkcs11Key (each signature verified in software, this \
             build's optimization level): {n} sequential signatures in {secs:.3} s = {:.0}/s",
            f64::from(n) / secs
        );

        // The token alone: C_Sign on one session, nothing else.
        let ctx = load_module(&module).unwrap();
        let slot = ctx
            .get_slots_with_token()
            .unwrap()
            .into_iter()
            .find(|s| ctx.get_token_info(*s).unwrap().label() == "sealtrail-rate")
            .unwrap();
        let session = ctx.open_ro_session(slot).unwrap();
        let private = session
            .find_objects(&[
                Attribute::Class(ObjectClass::PRIVATE_KEY),
                Attribute::Label(format!("rate-{alg}").into_bytes()),
            ])
            .unwrap()[0];
        let (mechanism, data) = match alg {
            Algorithm::EcdsaP256Sha256 => (Mechanism::Ecdsa, vec![0x42; 32]),
            Algorithm::Ed25519 => (
                Mechanism::Eddsa(EddsaParams::new(EddsaSignatureScheme::Pure)),
                text.clone(),
            ),
        };
        let start = Instant::now();
        for _ in 0..n {
            session.sign(&mechanism, private, &data).unwrap();
        }
        let secs = start.elapsed().as_secs_f64();
        println!(
            "SoftHSM2 {alg}, bare C_Sign: {n} sequential signatures in {secs:.3} s = {:.0}/s",
            f64::from(n) / secs
        );
    }
}

//! The PKCS#11 key backend: checkpoint signatures made inside an HSM.
//!
//! The signing key is generated in the token ([`Pkcs11Key::generate`]) as a sensitive,
//! non-extractable private key, so it never exists outside the device (DESIGN invariant 6:
//! keys never leave the HSM). The signer only holds a PIN, a logged-in session pool and
//! object handles; a verifier needs only the public key, which goes into the trust bundle.
//!
//! How it works:
//! - The module (`.so`) is loaded and `C_Initialize`d once per process and path, and never
//!   finalized: `C_Initialize` a second time in one process fails
//!   (`CKR_CRYPTOKI_ALREADY_INITIALIZED`), so every [`Pkcs11Key`] and [`Pkcs11Key::generate`]
//!   share one context through a process-wide registry ([`load_module`]).
//! - The token is found by its label, never by slot id.
//! - The user logs in once; PKCS#11 login state belongs to the application and token and
//!   is shared by all its sessions, so the pool's sessions need no login per signature. It
//!   lasts while at least one session is open: closing the last session logs out. A session
//!   that fails is closed and replaced, and the replacement logs in again if the token
//!   lost the login (that is why the key keeps the PIN, in zeroize-on-drop memory).
//! - Signing runs on the blocking thread pool, one session per signature (a PKCS#11 session
//!   must not be used by two threads at once); a semaphore bounds signatures in flight to
//!   the pool size.
//! - Ed25519 signs the note text itself (`CKM_EDDSA`, pure Ed25519). ECDSA P-256 signs
//!   SHA-256(text), computed here, with plain `CKM_ECDSA`: every token has it, whereas
//!   `CKM_ECDSA_SHA256` is optional (SoftHSM2 lacks it). The token returns raw `r ‖ s`
//!   with either S; notes carry low-S DER ([`sealtrail_core::keys::p256_raw_to_der`]).
//! - Every signature is verified with the public key before it is returned (a few tens of
//!   microseconds; group commit bounds the signature rate), and [`Pkcs11Key::open`] makes
//!   one test signature, so a private/public key mismatch or a faulty device stops the
//!   signer instead of poisoning the checkpoint chain.
//!
//! Errors: a missing module, token or key, or a wrong PIN is [`Error::Config`] (the message
//! never contains the PIN); device trouble while signing is [`Error::Unavailable`] (the
//! ingester answers 503 and the apiserver retries); anything else is [`Error::Key`].
//!
//! SoftHSM2 quirks (what the tests run against):
//! - It reads `SOFTHSM2_CONF` (token directory, object store backend) at `C_Initialize`:
//!   set it before the first [`load_module`] of the process.
//! - Slot ids are random-looking and change when a token is initialized: find the token by
//!   label. There is always one extra slot with an uninitialized token.
//! - No `CKM_ECDSA_SHA256` (see above); `CKM_ECDSA` returns high-S about half the time.
//! - `CKA_EC_POINT` is a DER OCTET STRING wrapping the SEC1 point (P-256) or the 32-byte
//!   key (Ed25519), as the standard says; some other tokens return the raw value, which is
//!   accepted too.
//! - Ed25519 keys carry `CKA_EC_PARAMS` = the OID 1.3.101.112 (`06 03 2B 65 70`); PKCS#11
//!   3.0 also allows the PrintableString `"edwards25519"`, which other tokens use. Both are
//!   recognised, and key generation falls back to the string form if the OID is refused.
//! - `C_Login` while the token is already logged in by this process answers
//!   `CKR_USER_ALREADY_LOGGED_IN` without checking the PIN; that is accepted (the process
//!   already proved the PIN), so only the first login of a process checks it.
//! - SoftHSM2 is a software token (keys encrypted at rest under the PIN in its token
//!   directory): fine for development and tests; production uses a real HSM (or a cloud
//!   HSM's PKCS#11 module) through the same code.

use std::collections::HashMap;
use std::fmt;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, OnceLock};

use cryptoki::context::{CInitializeArgs, CInitializeFlags, Pkcs11};
use cryptoki::error::{Error as CkError, RvError};
use cryptoki::mechanism::Mechanism;
use cryptoki::mechanism::eddsa::{EddsaParams, EddsaSignatureScheme};
use cryptoki::object::{Attribute, AttributeType, KeyType, ObjectClass, ObjectHandle};
use cryptoki::session::{Session, SessionState, UserType};
use cryptoki::slot::Slot;
use cryptoki::types::AuthPin;
use rand_core::RngCore as _;
use sealtrail_core::keys::{Algorithm, PublicKey};
use sha2::{Digest as _, Sha256};
use tokio::sync::Semaphore;

use crate::Error;
use crate::keys::{BoxFuture, KeyBackend};

/// Sessions in the pool unless configured otherwise.
pub const DEFAULT_SESSIONS: usize = 4;

/// DER of the OID 1.2.840.10045.3.1.7 (prime256v1 / P-256).
const P256_PARAMS: &[u8] = &[0x06, 0x08, 0x2a, 0x86, 0x48, 0xce, 0x3d, 0x03, 0x01, 0x07];
/// DER of the OID 1.3.101.112 (id-Ed25519).
const ED25519_OID_PARAMS: &[u8] = &[0x06, 0x03, 0x2b, 0x65, 0x70];
/// DER PrintableString "edwards25519" (the PKCS#11 3.0 curve-name form).
const ED25519_NAME_PARAMS: &[u8] = b"\x13\x0cedwards25519";

/// What [`Pkcs11Key::open`] signs to check the key pair before serving.
const SELF_TEST_TEXT: &[u8] = b"sealtrail pkcs11 self-test\n";

/// A PIN that never prints: its `Debug` is `Pin(<redacted>)`, it has no `Display`, and its
/// memory is zeroed when dropped.
pub struct Pin(AuthPin);

impl Pin {
    /// A PIN given as a string (tests, interactive tools). Surrounding whitespace is kept.
    pub fn new(pin: impl Into<String>) -> Result<Self, Error> {
        let pin: String = pin.into();
        if pin.is_empty() {
            return Err(Error::Config("the PKCS#11 PIN is empty".into()));
        }
        Ok(Self(AuthPin::from(pin)))
    }

    /// Reads the PIN from a file (a mounted Kubernetes Secret): the trailing newline is
    /// removed. A file readable by others is refused, one readable by its group is used
    /// with a warning.
    pub fn from_file(path: &Path) -> Result<Self, Error> {
        use std::os::unix::fs::PermissionsExt as _;
        let meta = std::fs::metadata(path)
            .map_err(|e| Error::Config(format!("PIN file {}: {e}", path.display())))?;
        let mode = meta.permissions().mode();
        if mode & 0o007 != 0 {
            return Err(Error::Config(format!(
                "PIN file {} is accessible by others (mode {:04o}): chmod 0400 or 0600 it \
                 (Kubernetes: defaultMode: 0400 on the Secret volume)",
                path.display(),
                mode & 0o7777
            )));
        }
        if mode & 0o070 != 0 {
            tracing::warn!(
                path = %path.display(),
                mode = format!("{:04o}", mode & 0o7777),
                "the PKCS#11 PIN file is readable by its group"
            );
        }
        let text = std::fs::read_to_string(path)
            .map_err(|e| Error::Config(format!("PIN file {}: {e}", path.display())))?;
        let pin = strip_newline(text);
        if pin.is_empty() {
            return Err(Error::Config(format!(
                "PIN file {} is empty",
                path.display()
            )));
        }
        Self::new(pin)
    }

    /// Reads the PIN from an environment variable (a trailing newline is removed).
    pub fn from_env(var: &str) -> Result<Self, Error> {
        // (Not the VarError's Display: for a non-UTF-8 value it prints the value.)
        let text = std::env::var(var).map_err(|e| {
            Error::Config(match e {
                std::env::VarError::NotPresent => format!("PKCS#11 PIN variable {var} is not set"),
                std::env::VarError::NotUnicode(_) => {
                    format!("PKCS#11 PIN variable {var} is not valid UTF-8")
                }
            })
        })?;
        let pin = strip_newline(text);
        if pin.is_empty() {
            return Err(Error::Config(format!(
                "PKCS#11 PIN variable {var} is empty"
            )));
        }
        Self::new(pin)
    }
}

fn strip_newline(mut s: String) -> String {
    if s.ends_with('\n') {
        s.pop();
        if s.ends_with('\r') {
            s.pop();
        }
    }
    s
}

impl fmt::Debug for Pin {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Pin(<redacted>)")
    }
}

/// Where the key is and how to log in.
#[derive(Debug)]
pub struct Pkcs11Config {
    /// The PKCS#11 module, e.g. `/usr/lib/softhsm/libsofthsm2.so`.
    pub module: PathBuf,
    /// The token's label (`CKA_LABEL` of the token, as given at initialization).
    pub token_label: String,
    /// `CKA_LABEL` of the private key and of its public key.
    pub key_label: String,
    /// The user PIN.
    pub pin: Pin,
    /// Sessions in the pool: signatures that can run at once.
    pub sessions: usize,
}

impl Pkcs11Config {
    /// A configuration with [`DEFAULT_SESSIONS`] sessions.
    pub fn new(
        module: impl Into<PathBuf>,
        token_label: impl Into<String>,
        key_label: impl Into<String>,
        pin: Pin,
    ) -> Self {
        Self {
            module: module.into(),
            token_label: token_label.into(),
            key_label: key_label.into(),
            pin,
            sessions: DEFAULT_SESSIONS,
        }
    }
}

/// Loads and initializes a PKCS#11 module, once per process and path: later calls return
/// the same context (a second `C_Initialize` would fail). The module is never finalized.
pub fn load_module(path: &Path) -> Result<Pkcs11, Error> {
    static MODULES: OnceLock<Mutex<HashMap<PathBuf, Pkcs11>>> = OnceLock::new();
    let canonical = std::fs::canonicalize(path)
        .map_err(|e| Error::Config(format!("PKCS#11 module {}: {e}", path.display())))?;
    let mut modules = MODULES
        .get_or_init(Default::default)
        .lock()
        .map_err(|_| Error::Key("the PKCS#11 module registry is poisoned".into()))?;
    if let Some(ctx) = modules.get(&canonical) {
        return Ok(ctx.clone());
    }
    let ctx = Pkcs11::new(&canonical)
        .map_err(|e| Error::Config(format!("PKCS#11 module {}: {e}", path.display())))?;
    match ctx.initialize(CInitializeArgs::new(CInitializeFlags::OS_LOCKING_OK)) {
        Ok(()) => {}
        // Initialized by someone else in this process (the same library loaded under
        // another path): its state is shared, which is what we want.
        Err(CkError::Pkcs11(RvError::CryptokiAlreadyInitialized, _)) => {}
        Err(e) => {
            return Err(Error::Config(format!(
                "PKCS#11 module {}: C_Initialize: {}",
                path.display(),
                describe(&e)
            )));
        }
    }
    modules.insert(canonical, ctx.clone());
    Ok(ctx)
}

/// A short description of a PKCS#11 error (the crate's Display is a paragraph).
fn describe(e: &CkError) -> String {
    match e {
        CkError::Pkcs11(rv, function) => format!("C_{function:?}: {rv:?}"),
        other => other.to_string(),
    }
}

/// Errors that mean the device or the session is (perhaps temporarily) unusable.
fn is_device_error(e: &CkError) -> bool {
    matches!(
        e,
        CkError::Pkcs11(
            RvError::DeviceError
                | RvError::DeviceMemory
                | RvError::DeviceRemoved
                | RvError::TokenNotPresent
                | RvError::TokenNotRecognized
                | RvError::SessionClosed
                | RvError::SessionHandleInvalid
                | RvError::SessionCount
                | RvError::UserNotLoggedIn
                | RvError::FunctionFailed
                | RvError::GeneralError
                | RvError::HostMemory
                | RvError::CryptokiNotInitialized,
            _
        )
    )
}

/// Errors after which a fresh session may succeed: device trouble, or a session that lost
/// its login or its view of the key (SoftHSM2 answers `CKR_OBJECT_HANDLE_INVALID` when
/// the token was logged out under the session).
fn is_session_error(e: &CkError) -> bool {
    is_device_error(e)
        || matches!(
            e,
            CkError::Pkcs11(RvError::KeyHandleInvalid | RvError::ObjectHandleInvalid, _)
        )
}

/// Finds the slot holding the token labelled `label` (exactly one).
fn find_slot(ctx: &Pkcs11, module: &Path, label: &str) -> Result<Slot, Error> {
    let slots = ctx.get_slots_with_token().map_err(|e| {
        Error::Config(format!(
            "PKCS#11 module {}: listing slots: {}",
            module.display(),
            describe(&e)
        ))
    })?;
    let mut found = Vec::new();
    let mut labels = Vec::new();
    for slot in slots {
        let Ok(info) = ctx.get_token_info(slot) else {
            continue;
        };
        if !info.token_initialized() {
            continue;
        }
        let l = info.label().trim_end();
        if l == label.trim_end() {
            found.push(slot);
        }
        labels.push(format!("{l:?}"));
    }
    match found.as_slice() {
        [slot] => Ok(*slot),
        [] => Err(Error::Config(format!(
            "no PKCS#11 token labelled {label:?} in {}; tokens found: [{}]",
            module.display(),
            labels.join(", ")
        ))),
        _ => Err(Error::Config(format!(
            "{} PKCS#11 tokens are labelled {label:?} in {}: labels must be unique",
            found.len(),
            module.display()
        ))),
    }
}

/// Logs the user in on `session` (so on every session of the token in this process).
fn login(session: &Session, pin: &Pin, token_label: &str) -> Result<(), Error> {
    match session.login(UserType::User, Some(&pin.0)) {
        Ok(()) | Err(CkError::Pkcs11(RvError::UserAlreadyLoggedIn, _)) => Ok(()),
        Err(CkError::Pkcs11(RvError::PinIncorrect, _)) => Err(Error::Config(format!(
            "wrong PIN for PKCS#11 token {token_label:?}"
        ))),
        Err(CkError::Pkcs11(RvError::PinLocked, _)) => Err(Error::Config(format!(
            "the user PIN of PKCS#11 token {token_label:?} is locked"
        ))),
        Err(CkError::Pkcs11(RvError::PinExpired, _)) => Err(Error::Config(format!(
            "the user PIN of PKCS#11 token {token_label:?} has expired"
        ))),
        Err(CkError::Pkcs11(RvError::UserPinNotInitialized, _)) => Err(Error::Config(format!(
            "PKCS#11 token {token_label:?} has no user PIN yet (initialize it)"
        ))),
        Err(CkError::Pkcs11(RvError::PinLenRange, _)) => Err(Error::Config(format!(
            "the PIN has the wrong length for PKCS#11 token {token_label:?}"
        ))),
        Err(e) if is_device_error(&e) => Err(Error::Unavailable(format!(
            "login to PKCS#11 token {token_label:?}: {}",
            describe(&e)
        ))),
        Err(e) => Err(Error::Config(format!(
            "login to PKCS#11 token {token_label:?}: {}",
            describe(&e)
        ))),
    }
}

/// Strips a DER OCTET STRING header if `b` is exactly one OCTET STRING.
fn unwrap_octet_string(b: &[u8]) -> Option<&[u8]> {
    let (&tag, rest) = b.split_first()?;
    if tag != 0x04 {
        return None;
    }
    let (&first, rest) = rest.split_first()?;
    let (len, rest) = if first < 0x80 {
        (usize::from(first), rest)
    } else {
        let n = usize::from(first & 0x7f);
        if n == 0 || n > 2 || rest.len() < n {
            return None;
        }
        let len = rest[..n]
            .iter()
            .fold(0usize, |acc, &x| (acc << 8) | usize::from(x));
        (len, &rest[n..])
    };
    (rest.len() == len).then_some(rest)
}

/// The algorithm named by `CKA_EC_PARAMS`.
fn algorithm_of(params: &[u8], key_type: Option<KeyType>) -> Result<Algorithm, String> {
    if params == P256_PARAMS {
        return Ok(Algorithm::EcdsaP256Sha256);
    }
    if params == ED25519_OID_PARAMS || params == ED25519_NAME_PARAMS {
        return Ok(Algorithm::Ed25519);
    }
    Err(format!(
        "unsupported curve (CKA_EC_PARAMS {}, key type {}): Sealtrail signs with ECDSA \
         P-256 or Ed25519",
        hex(params),
        key_type.map_or_else(|| "?".to_string(), |k| k.to_string())
    ))
}

fn hex(b: &[u8]) -> String {
    b.iter().map(|x| format!("{x:02x}")).collect()
}

/// The public key from `CKA_EC_POINT` (DER OCTET STRING, or the raw value).
fn public_key_of(algorithm: Algorithm, point: &[u8]) -> Result<PublicKey, String> {
    let candidates = unwrap_octet_string(point)
        .into_iter()
        .chain(std::iter::once(point));
    for c in candidates {
        let key = match algorithm {
            Algorithm::Ed25519 => <&[u8; 32]>::try_from(c)
                .ok()
                .and_then(|raw| PublicKey::from_ed25519_bytes(raw).ok()),
            Algorithm::EcdsaP256Sha256 => PublicKey::from_p256_sec1(c).ok(),
        };
        if let Some(key) = key {
            return Ok(key);
        }
    }
    Err(format!(
        "CKA_EC_POINT ({} bytes) is not a valid {algorithm} public key",
        point.len()
    ))
}

/// A pooled session with the private key's handle as that session sees it.
struct Pooled {
    session: Session,
    key: ObjectHandle,
}

struct Inner {
    ctx: Pkcs11,
    module: PathBuf,
    slot: Slot,
    token_label: String,
    key_label: String,
    pin: Pin,
    algorithm: Algorithm,
    public: PublicKey,
    /// Idle sessions. There are at most as many sessions as permits; a permit holder that
    /// finds none here opens one (after a failed session was dropped).
    idle: Mutex<Vec<Pooled>>,
}

/// A signing key in a PKCS#11 token. See the module documentation.
pub struct Pkcs11Key {
    inner: Arc<Inner>,
    permits: Arc<Semaphore>,
}

impl fmt::Debug for Pkcs11Key {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Pkcs11Key")
            .field("module", &self.inner.module)
            .field("token_label", &self.inner.token_label)
            .field("key_label", &self.inner.key_label)
            .field("algorithm", &self.inner.algorithm)
            .field("public", &self.inner.public)
            .finish_non_exhaustive()
    }
}

/// Finds exactly one object of `class` labelled `label`.
fn find_one(
    session: &Session,
    class: ObjectClass,
    label: &str,
    token_label: &str,
) -> Result<ObjectHandle, Error> {
    let found = session
        .find_objects(&[
            Attribute::Class(class),
            Attribute::Label(label.as_bytes().to_vec()),
        ])
        .map_err(|e| {
            Error::Key(format!(
                "searching PKCS#11 token {token_label:?}: {}",
                describe(&e)
            ))
        })?;
    let what = if class == ObjectClass::PRIVATE_KEY {
        "private key"
    } else {
        "public key"
    };
    match found.as_slice() {
        [one] => Ok(*one),
        [] => Err(Error::Config(format!(
            "no {what} labelled {label:?} in PKCS#11 token {token_label:?}"
        ))),
        many => Err(Error::Config(format!(
            "{} {what}s are labelled {label:?} in PKCS#11 token {token_label:?}: labels \
             must be unique",
            many.len()
        ))),
    }
}

impl Inner {
    /// Opens a session that can sign: logs in if the token is not logged in (any more),
    /// finds the private key.
    fn new_session(&self) -> Result<Pooled, Error> {
        let session = self.ctx.open_ro_session(self.slot).map_err(|e| {
            let msg = format!(
                "opening a session on PKCS#11 token {:?}: {}",
                self.token_label,
                describe(&e)
            );
            if is_device_error(&e) {
                Error::Unavailable(msg)
            } else {
                Error::Key(msg)
            }
        })?;
        let state = session
            .get_session_info()
            .map(|i| i.session_state())
            .map_err(|e| Error::Unavailable(format!("C_GetSessionInfo: {}", describe(&e))))?;
        if !matches!(state, SessionState::RoUser | SessionState::RwUser) {
            login(&session, &self.pin, &self.token_label)?;
        }
        let key = find_one(
            &session,
            ObjectClass::PRIVATE_KEY,
            &self.key_label,
            &self.token_label,
        )?;
        Ok(Pooled { session, key })
    }

    /// One C_Sign: over the text for Ed25519, over its SHA-256 for P-256.
    fn sign_with(&self, pooled: &Pooled, text: &[u8]) -> Result<Vec<u8>, CkError> {
        match self.algorithm {
            Algorithm::Ed25519 => pooled.session.sign(
                &Mechanism::Eddsa(EddsaParams::new(EddsaSignatureScheme::Pure)),
                pooled.key,
                text,
            ),
            Algorithm::EcdsaP256Sha256 => {
                pooled
                    .session
                    .sign(&Mechanism::Ecdsa, pooled.key, &Sha256::digest(text))
            }
        }
    }

    fn sign_error(&self, e: &CkError) -> Error {
        let msg = format!(
            "PKCS#11 token {:?}, key {:?}: {}",
            self.token_label,
            self.key_label,
            describe(e)
        );
        if is_device_error(e) {
            Error::Unavailable(msg)
        } else {
            Error::Key(msg)
        }
    }

    /// Signs with one session of the pool (opening one if the pool is short after a
    /// failure) and returns the signature in note form after verifying it against `text`.
    /// A session that fails is dropped; after a device or session error the signature is
    /// tried once more on a fresh session (which logs in again if the token lost the login).
    fn sign_blocking(&self, text: &[u8]) -> Result<Vec<u8>, Error> {
        let idle = self
            .idle
            .lock()
            .map_err(|_| Error::Key("the PKCS#11 session pool is poisoned".into()))?
            .pop();
        let (raw, pooled) = match idle {
            Some(pooled) => match self.sign_with(&pooled, text) {
                Ok(raw) => (raw, pooled),
                Err(e) if is_session_error(&e) => {
                    drop(pooled);
                    tracing::warn!(
                        token = %self.token_label,
                        error = %describe(&e),
                        "PKCS#11 session failed; replacing it"
                    );
                    let fresh = self.new_session()?;
                    let raw = self
                        .sign_with(&fresh, text)
                        .map_err(|e| self.sign_error(&e))?;
                    (raw, fresh)
                }
                Err(e) => return Err(self.sign_error(&e)),
            },
            None => {
                let fresh = self.new_session()?;
                let raw = self
                    .sign_with(&fresh, text)
                    .map_err(|e| self.sign_error(&e))?;
                (raw, fresh)
            }
        };
        if let Ok(mut idle) = self.idle.lock() {
            idle.push(pooled);
        }
        let signature = match self.algorithm {
            Algorithm::Ed25519 => {
                if raw.len() != 64 {
                    return Err(Error::Key(format!(
                        "the token returned a {}-byte Ed25519 signature",
                        raw.len()
                    )));
                }
                raw
            }
            Algorithm::EcdsaP256Sha256 => {
                sealtrail_core::keys::p256_raw_to_der(&raw).map_err(|_| {
                    Error::Key(format!(
                        "the token returned a malformed ECDSA signature ({} bytes, expected \
                         64 raw r||s)",
                        raw.len()
                    ))
                })?
            }
        };
        self.public.verify(text, &signature).map_err(|_| {
            Error::Key(format!(
                "the signature of PKCS#11 key {:?} in token {:?} does not verify with its \
                 public key (mismatched key pair or faulty device)",
                self.key_label, self.token_label
            ))
        })?;
        Ok(signature)
    }
}

impl Pkcs11Key {
    /// Loads the module, finds the token by label, logs in, opens the session pool, finds
    /// the key pair by label and makes one test signature that must verify.
    pub fn open(config: Pkcs11Config) -> Result<Self, Error> {
        let Pkcs11Config {
            module,
            token_label,
            key_label,
            pin,
            sessions,
        } = config;
        if sessions == 0 {
            return Err(Error::Config(
                "the PKCS#11 session pool needs at least 1 session".into(),
            ));
        }
        let ctx = load_module(&module)?;
        let slot = find_slot(&ctx, &module, &token_label)?;
        let first = ctx.open_ro_session(slot).map_err(|e| {
            Error::Config(format!(
                "opening a session on PKCS#11 token {token_label:?}: {}",
                describe(&e)
            ))
        })?;
        login(&first, &pin, &token_label)?;
        let private = find_one(&first, ObjectClass::PRIVATE_KEY, &key_label, &token_label)?;
        let (algorithm, public) = read_public_key(&first, private, &key_label, &token_label)?;
        let inner = Inner {
            ctx,
            module,
            slot,
            token_label,
            key_label,
            pin,
            algorithm,
            public,
            idle: Mutex::new(Vec::with_capacity(sessions)),
        };
        let mut pool = vec![Pooled {
            session: first,
            key: private,
        }];
        for _ in 1..sessions {
            pool.push(inner.new_session()?);
        }
        inner
            .idle
            .lock()
            .map_err(|_| Error::Key("the PKCS#11 session pool is poisoned".into()))?
            .extend(pool);
        inner.sign_blocking(SELF_TEST_TEXT).map_err(|e| match e {
            Error::Key(m) | Error::Unavailable(m) => {
                Error::Config(format!("PKCS#11 self-test signature failed: {m}"))
            }
            other => other,
        })?;
        tracing::info!(
            module = %inner.module.display(),
            token = %inner.token_label,
            key = %inner.key_label,
            algorithm = %inner.algorithm,
            sessions,
            "PKCS#11 key opened"
        );
        Ok(Self {
            inner: Arc::new(inner),
            permits: Arc::new(Semaphore::new(sessions)),
        })
    }

    /// Creates a key pair in the token: a private key that is a token object, private,
    /// sensitive, not extractable, for signing only, and its public key, both labelled
    /// `key_label` with the same random `CKA_ID`. Refuses if anything already has that
    /// label. Returns the public key (for the trust bundle).
    pub fn generate(config: &Pkcs11Config, algorithm: Algorithm) -> Result<PublicKey, Error> {
        let ctx = load_module(&config.module)?;
        let slot = find_slot(&ctx, &config.module, &config.token_label)?;
        let token = &config.token_label;
        let label = &config.key_label;
        let session = ctx.open_rw_session(slot).map_err(|e| {
            Error::Config(format!(
                "opening a read-write session on PKCS#11 token {token:?}: {}",
                describe(&e)
            ))
        })?;
        login(&session, &config.pin, token)?;
        let existing = session
            .find_objects(&[Attribute::Label(label.as_bytes().to_vec())])
            .map_err(|e| {
                Error::Key(format!(
                    "searching PKCS#11 token {token:?}: {}",
                    describe(&e)
                ))
            })?;
        if !existing.is_empty() {
            return Err(Error::Config(format!(
                "PKCS#11 token {token:?} already has {} object(s) labelled {label:?}: refusing \
                 to create another key with that label",
                existing.len()
            )));
        }
        let mut id = [0u8; 16];
        rand_core::OsRng.fill_bytes(&mut id);
        let private_template = [
            Attribute::Token(true),
            Attribute::Private(true),
            Attribute::Sensitive(true),
            Attribute::Extractable(false),
            Attribute::Sign(true),
            Attribute::Derive(false),
            Attribute::Label(label.as_bytes().to_vec()),
            Attribute::Id(id.to_vec()),
        ];
        let public_template = |params: &[u8]| {
            vec![
                Attribute::Token(true),
                Attribute::Private(false),
                Attribute::Verify(true),
                Attribute::EcParams(params.to_vec()),
                Attribute::Label(label.as_bytes().to_vec()),
                Attribute::Id(id.to_vec()),
            ]
        };
        let generated = match algorithm {
            Algorithm::EcdsaP256Sha256 => session.generate_key_pair(
                &Mechanism::EccKeyPairGen,
                &public_template(P256_PARAMS),
                &private_template,
            ),
            Algorithm::Ed25519 => {
                let mech = Mechanism::EccEdwardsKeyPairGen;
                match session.generate_key_pair(
                    &mech,
                    &public_template(ED25519_OID_PARAMS),
                    &private_template,
                ) {
                    Err(CkError::Pkcs11(
                        RvError::CurveNotSupported
                        | RvError::AttributeValueInvalid
                        | RvError::DomainParamsInvalid
                        | RvError::TemplateInconsistent,
                        _,
                    )) => session.generate_key_pair(
                        &mech,
                        &public_template(ED25519_NAME_PARAMS),
                        &private_template,
                    ),
                    other => other,
                }
            }
        };
        let (_public_handle, private_handle) = generated.map_err(|e| {
            Error::Key(format!(
                "generating a {algorithm} key pair in PKCS#11 token {token:?}: {}",
                describe(&e)
            ))
        })?;
        let (_, public) = read_public_key(&session, private_handle, label, token)?;
        tracing::info!(token = %token, key = %label, %algorithm, "PKCS#11 key pair generated");
        Ok(public)
    }

    /// The key's algorithm.
    pub fn algorithm(&self) -> Algorithm {
        self.inner.algorithm
    }
}

/// Reads the public key that goes with `private`: the public key object with the same
/// label (and, if several, the same `CKA_ID`).
fn read_public_key(
    session: &Session,
    private: ObjectHandle,
    key_label: &str,
    token_label: &str,
) -> Result<(Algorithm, PublicKey), Error> {
    let attr_err = |e: CkError| {
        Error::Key(format!(
            "reading key {key_label:?} in PKCS#11 token {token_label:?}: {}",
            describe(&e)
        ))
    };
    let mut private_type = None;
    let mut private_id = None;
    for a in session
        .get_attributes(private, &[AttributeType::KeyType, AttributeType::Id])
        .map_err(attr_err)?
    {
        match a {
            Attribute::KeyType(t) => private_type = Some(t),
            Attribute::Id(id) => private_id = Some(id),
            _ => {}
        }
    }
    if let Some(t) = private_type
        && t != KeyType::EC
        && t != KeyType::EC_EDWARDS
    {
        return Err(Error::Config(format!(
            "key {key_label:?} in PKCS#11 token {token_label:?} is a {t} key: Sealtrail \
             signs with ECDSA P-256 or Ed25519"
        )));
    }
    let mut template = vec![
        Attribute::Class(ObjectClass::PUBLIC_KEY),
        Attribute::Label(key_label.as_bytes().to_vec()),
    ];
    let mut candidates = session.find_objects(&template).map_err(attr_err)?;
    if candidates.len() > 1
        && let Some(id) = private_id
    {
        template.push(Attribute::Id(id));
        candidates = session.find_objects(&template).map_err(attr_err)?;
    }
    let public = match candidates.as_slice() {
        [one] => *one,
        [] => {
            return Err(Error::Config(format!(
                "no public key labelled {key_label:?} in PKCS#11 token {token_label:?} (the \
                 signer needs it next to the private key)"
            )));
        }
        many => {
            return Err(Error::Config(format!(
                "{} public keys are labelled {key_label:?} in PKCS#11 token {token_label:?}",
                many.len()
            )));
        }
    };
    let mut params = None;
    let mut point = None;
    for a in session
        .get_attributes(public, &[AttributeType::EcParams, AttributeType::EcPoint])
        .map_err(attr_err)?
    {
        match a {
            Attribute::EcParams(p) => params = Some(p),
            Attribute::EcPoint(p) => point = Some(p),
            _ => {}
        }
    }
    let (Some(params), Some(point)) = (params, point) else {
        return Err(Error::Config(format!(
            "public key {key_label:?} in PKCS#11 token {token_label:?} is not an elliptic-curve \
             key (no CKA_EC_PARAMS / CKA_EC_POINT)"
        )));
    };
    let algorithm = algorithm_of(&params, private_type).map_err(|m| {
        Error::Config(format!(
            "key {key_label:?} in PKCS#11 token {token_label:?}: {m}"
        ))
    })?;
    let key = public_key_of(algorithm, &point).map_err(|m| {
        Error::Config(format!(
            "key {key_label:?} in PKCS#11 token {token_label:?}: {m}"
        ))
    })?;
    Ok((algorithm, key))
}

impl KeyBackend for Pkcs11Key {
    fn public_key(&self) -> &PublicKey {
        &self.inner.public
    }

    fn kind(&self) -> &'static str {
        "pkcs11"
    }

    fn sign<'a>(&'a self, text: &'a [u8]) -> BoxFuture<'a, Result<Vec<u8>, Error>> {
        Box::pin(async move {
            let permit = self
                .permits
                .clone()
                .acquire_owned()
                .await
                .map_err(|_| Error::Unavailable("the PKCS#11 session pool is closed".into()))?;
            let inner = self.inner.clone();
            let text = text.to_vec();
            tokio::task::spawn_blocking(move || {
                let result = inner.sign_blocking(&text);
                drop(permit);
                result
            })
            .await
            .map_err(|e| Error::Key(format!("PKCS#11 signing task: {e}")))?
        })
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    #[test]
    fn octet_string_unwrapping() {
        let point = [4u8; 65];
        let mut der = vec![0x04, 65];
        der.extend_from_slice(&point);
        assert_eq!(unwrap_octet_string(&der), Some(&point[..]));
        assert_eq!(unwrap_octet_string(&point), None);
        let mut long = vec![0x04, 0x81, 0x80];
        long.extend_from_slice(&[0u8; 0x80]);
        assert_eq!(unwrap_octet_string(&long).map(<[u8]>::len), Some(0x80));
    }

    #[test]
    fn raw_and_wrapped_points_are_accepted() {
        let sk = ed25519_dalek::SigningKey::from_bytes(&[9u8; 32]);
        let raw = sk.verifying_key().to_bytes();
        let mut der = vec![0x04, 0x20];
        der.extend_from_slice(&raw);
        let a = public_key_of(Algorithm::Ed25519, &raw).unwrap();
        let b = public_key_of(Algorithm::Ed25519, &der).unwrap();
        assert_eq!(a, b);

        let sk = p256::ecdsa::SigningKey::from_slice(&[7u8; 32]).unwrap();
        let point = sk.verifying_key().to_encoded_point(false);
        let mut der = vec![0x04, 0x41];
        der.extend_from_slice(point.as_bytes());
        let a = public_key_of(Algorithm::EcdsaP256Sha256, point.as_bytes()).unwrap();
        let b = public_key_of(Algorithm::EcdsaP256Sha256, &der).unwrap();
        assert_eq!(a, b);
        assert!(public_key_of(Algorithm::EcdsaP256Sha256, &[4u8; 10]).is_err());
    }

    #[test]
    fn curve_parameters() {
        assert_eq!(
            algorithm_of(P256_PARAMS, None).unwrap(),
            Algorithm::EcdsaP256Sha256
        );
        assert_eq!(
            algorithm_of(ED25519_OID_PARAMS, None).unwrap(),
            Algorithm::Ed25519
        );
        assert_eq!(
            algorithm_of(ED25519_NAME_PARAMS, None).unwrap(),
            Algorithm::Ed25519
        );
        // secp384r1
        assert!(algorithm_of(&[0x06, 0x05, 0x2b, 0x81, 0x04, 0x00, 0x22], None).is_err());
    }

    #[test]
    fn pin_never_prints() {
        let pin = Pin::new("s3cret-pin").unwrap();
        assert_eq!(format!("{pin:?}"), "Pin(<redacted>)");
        let config = Pkcs11Config::new("/m.so", "t", "k", pin);
        assert!(!format!("{config:?}").contains("s3cret-pin"));
        assert!(Pin::new("").is_err());
    }

    #[test]
    fn pin_files() {
        use std::os::unix::fs::PermissionsExt as _;
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("pin");
        std::fs::write(&path, "1234\n").unwrap();
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o600)).unwrap();
        // (That it reads the right PIN is shown by logging in with it: tests/pkcs11.rs.)
        Pin::from_file(&path).unwrap();
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o644)).unwrap();
        let err = Pin::from_file(&path).unwrap_err();
        assert!(matches!(err, Error::Config(_)), "{err}");
        assert!(!err.to_string().contains("1234"));
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o640)).unwrap();
        Pin::from_file(&path).unwrap();
        std::fs::write(&path, "\n").unwrap();
        assert!(Pin::from_file(&path).is_err());
    }
}

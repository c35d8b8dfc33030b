//! Verification of one stored RFC 3161 token: the CMS SignedData (RFC 5652) around the
//! TSTInfo, its one signer and signed attributes, the signer's certificate path to a
//! pinned root at the token's own time, and the TSA key purpose (RFC 3161 §2.3).

use cms::cert::CertificateChoices;
use cms::content_info::ContentInfo;
use cms::signed_data::{SignedData, SignerIdentifier, SignerInfo};
use der::asn1::{Int, ObjectIdentifier as Oid, OctetString};
use der::{Any, Decode as _, Encode as _, Sequence, Tag, Tagged as _};
use rustls_pki_types::{CertificateDer, SignatureVerificationAlgorithm, UnixTime};
use sha2::{Digest as _, Sha256, Sha384, Sha512};
use webpki::aws_lc_rs as algs;
use x509_cert::Certificate;
use x509_cert::ext::Extensions;
use x509_cert::ext::pkix::name::GeneralName;
use x509_cert::spki::AlgorithmIdentifierOwned;
use x509_tsp::{Accuracy, MessageImprint, TspVersion};

use super::{ID_SHA256, MAX_ACCURACY_MS, MAX_TOKEN_CERTS, MAX_TOKEN_LEN, der_err};
use crate::Error;
use crate::merkle::Hash;
use crate::trust::TrustedTsa;

const ID_SIGNED_DATA: Oid = Oid::new_unwrap("1.2.840.113549.1.7.2");
const ID_CT_TST_INFO: Oid = Oid::new_unwrap("1.2.840.113549.1.9.16.1.4");
const ID_CONTENT_TYPE: Oid = Oid::new_unwrap("1.2.840.113549.1.9.3");
const ID_MESSAGE_DIGEST: Oid = Oid::new_unwrap("1.2.840.113549.1.9.4");
const ID_SIGNING_CERTIFICATE_V2: Oid = Oid::new_unwrap("1.2.840.113549.1.9.16.2.47");
const ID_SHA384: Oid = Oid::new_unwrap("2.16.840.1.101.3.4.2.2");
const ID_SHA512: Oid = Oid::new_unwrap("2.16.840.1.101.3.4.2.3");
const ID_EXT_KEY_USAGE: Oid = Oid::new_unwrap("2.5.29.37");
const ID_KP_TIME_STAMPING: Oid = Oid::new_unwrap("1.3.6.1.5.5.7.3.8");
/// The DER contents of `id-kp-timeStamping`, as rustls-webpki takes a purpose.
const TIME_STAMPING_DER: &[u8] = &[0x2b, 0x06, 0x01, 0x05, 0x05, 0x07, 0x03, 0x08];
const RSA_ENCRYPTION: Oid = Oid::new_unwrap("1.2.840.113549.1.1.1");
const SHA256_WITH_RSA: Oid = Oid::new_unwrap("1.2.840.113549.1.1.11");
const SHA384_WITH_RSA: Oid = Oid::new_unwrap("1.2.840.113549.1.1.12");
const SHA512_WITH_RSA: Oid = Oid::new_unwrap("1.2.840.113549.1.1.13");
const ECDSA_WITH_SHA256: Oid = Oid::new_unwrap("1.2.840.10045.4.3.2");
const ECDSA_WITH_SHA384: Oid = Oid::new_unwrap("1.2.840.10045.4.3.3");
const ECDSA_WITH_SHA512: Oid = Oid::new_unwrap("1.2.840.10045.4.3.4");

/// Signature algorithms accepted on certificates of a TSA's path.
const CHAIN_ALGS: &[&dyn SignatureVerificationAlgorithm] = &[
    algs::ECDSA_P256_SHA256,
    algs::ECDSA_P256_SHA384,
    algs::ECDSA_P384_SHA256,
    algs::ECDSA_P384_SHA384,
    algs::RSA_PKCS1_2048_8192_SHA256,
    algs::RSA_PKCS1_2048_8192_SHA384,
    algs::RSA_PKCS1_2048_8192_SHA512,
    algs::ED25519,
];

/// What a verified token says.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TokenInfo {
    /// The TSA's time (`genTime`), Unix milliseconds.
    pub gen_time_ms: u64,
    /// The TSA's stated accuracy (`accuracy`), milliseconds; 0 when absent.
    pub accuracy_ms: u64,
    /// The message imprint: SHA-256 of the checkpoint's note text.
    pub imprint: Hash,
    /// The nonce's DER contents, when the token has one.
    pub nonce: Option<Vec<u8>>,
    /// The token's serial number, lowercase hex of its DER contents.
    pub serial: String,
    /// The TSA policy OID, dotted.
    pub policy: String,
    /// The TSA certificate's subject, as RFC 4514 text.
    pub signer: String,
}

/// TSTInfo (RFC 3161 §2.4.2) with `genTime` read by hand: the ASN.1 library's
/// GeneralizedTime refuses the fraction of a second RFC 3161 allows (and many TSAs send).
// Every member is decoded so that a malformed TSTInfo is refused; not all are used.
#[allow(dead_code)]
#[derive(Sequence)]
struct TstInfo {
    version: TspVersion,
    policy: Oid,
    message_imprint: MessageImprint,
    serial_number: Int,
    gen_time: Any,
    #[asn1(optional = "true")]
    accuracy: Option<Accuracy>,
    #[asn1(default = "Default::default")]
    ordering: bool,
    #[asn1(optional = "true")]
    nonce: Option<Int>,
    #[asn1(context_specific = "0", tag_mode = "EXPLICIT", optional = "true")]
    tsa: Option<GeneralName>,
    #[asn1(context_specific = "1", tag_mode = "IMPLICIT", optional = "true")]
    extensions: Option<Extensions>,
}

/// Verifies a stored token against `tsa`'s pinned roots (docs/FORMAT.md §10.4): every check
/// must pass; the first that fails is the error.
pub fn verify_token(bytes: &[u8], tsa: &TrustedTsa) -> Result<TokenInfo, Error> {
    if bytes.len() > MAX_TOKEN_LEN {
        return Err(bad(format!("{} bytes (max {MAX_TOKEN_LEN})", bytes.len())));
    }
    let ci = ContentInfo::from_der(bytes).map_err(der_err)?;
    if ci.content_type != ID_SIGNED_DATA {
        return Err(bad(format!(
            "content type {} is not SignedData",
            ci.content_type
        )));
    }
    let sd: SignedData = ci.content.decode_as().map_err(der_err)?;
    if sd.encap_content_info.econtent_type != ID_CT_TST_INFO {
        return Err(bad("the signed content is not a TSTInfo".into()));
    }
    let econtent = sd
        .encap_content_info
        .econtent
        .as_ref()
        .ok_or_else(|| bad("no TSTInfo in the token".into()))?;
    let tst_der = econtent
        .decode_as::<OctetString>()
        .map_err(der_err)?
        .into_bytes();
    let tst = TstInfo::from_der(&tst_der).map_err(der_err)?;
    let info = tst_info(&tst)?;

    let signers = sd.signer_infos.0.as_slice();
    let [si] = signers else {
        return Err(bad(format!(
            "{} signers (exactly 1 required)",
            signers.len()
        )));
    };
    let certs = token_certs(&sd)?;
    let (signer_der, signer) = find_signer(&certs, &si.sid)?;
    check_signed_attrs(si, &tst_der, signer_der)?;
    check_signature(si, signer_der)?;
    check_path(signer_der, &certs, tsa, info.gen_time_ms)?;
    check_purpose(signer)?;
    Ok(TokenInfo {
        signer: signer.tbs_certificate.subject.to_string(),
        ..info
    })
}

fn bad(why: String) -> Error {
    Error::Timestamp(why)
}

fn tst_info(tst: &TstInfo) -> Result<TokenInfo, Error> {
    let mi = &tst.message_imprint;
    if mi.hash_algorithm.oid != ID_SHA256 {
        return Err(bad(format!(
            "message imprint algorithm {} is not SHA-256",
            mi.hash_algorithm.oid
        )));
    }
    let imprint: Hash = mi
        .hashed_message
        .as_bytes()
        .try_into()
        .map_err(|_| bad("message imprint is not 32 bytes".into()))?;
    let accuracy_ms = tst.accuracy.as_ref().map_or(0, |a| {
        let part = |v: Option<i16>| v.map_or(0, |v| u64::try_from(v).unwrap_or(0));
        a.seconds
            .unwrap_or(0)
            .saturating_mul(1000)
            .saturating_add(part(a.millis))
            .saturating_add(part(a.micros).div_ceil(1000))
    });
    if accuracy_ms > MAX_ACCURACY_MS {
        return Err(bad(format!(
            "an accuracy of {accuracy_ms} ms (max {MAX_ACCURACY_MS}): the time says too little"
        )));
    }
    Ok(TokenInfo {
        gen_time_ms: gen_time_ms(&tst.gen_time)?,
        accuracy_ms,
        imprint,
        nonce: tst.nonce.as_ref().map(|n| n.as_bytes().to_vec()),
        serial: hex::encode(tst.serial_number.as_bytes()),
        policy: tst.policy.to_string(),
        signer: String::new(),
    })
}

/// `genTime`: a GeneralizedTime `YYYYMMDDHHMMSS[.f+]Z` (RFC 3161 §2.4.2: UTC, a fraction
/// without trailing zeros), in Unix milliseconds, a fraction finer than that rounded up
/// (the token's time is an upper bound).
fn gen_time_ms(t: &Any) -> Result<u64, Error> {
    let bad_time = || bad("genTime is not a GeneralizedTime YYYYMMDDHHMMSS[.f]Z".into());
    if t.tag() != Tag::GeneralizedTime {
        return Err(bad_time());
    }
    let v = t.value();
    let (body, frac) = match v.strip_suffix(b"Z").ok_or_else(bad_time)? {
        b if b.len() == 14 => (b, &b""[..]),
        b if b.len() > 15 && b[14] == b'.' => (&b[..14], &b[15..]),
        _ => return Err(bad_time()),
    };
    if !body.iter().chain(frac).all(u8::is_ascii_digit) || frac.last() == Some(&b'0') {
        return Err(bad_time());
    }
    let num = |r: std::ops::Range<usize>| {
        body[r]
            .iter()
            .fold(0u32, |n, d| n * 10 + u32::from(d - b'0'))
    };
    let month = u8::try_from(num(4..6))
        .ok()
        .and_then(|m| time::Month::try_from(m).ok());
    let date = month
        .and_then(|m| time::Date::from_calendar_date(num(0..4) as i32, m, num(6..8) as u8).ok())
        .ok_or_else(bad_time)?;
    let at = date
        .with_hms(num(8..10) as u8, num(10..12) as u8, num(12..14) as u8)
        .map_err(|_| bad_time())?
        .assume_utc()
        .unix_timestamp();
    let secs = u64::try_from(at).map_err(|_| bad_time())?;
    // Milliseconds of the fraction, rounded up.
    let mut ms = 0u64;
    for (i, d) in frac.iter().enumerate() {
        let d = u64::from(d - b'0');
        if i < 3 {
            ms += d * 10u64.pow(2 - i as u32);
        } else if d > 0 {
            ms += 1;
            break;
        }
    }
    Ok(secs.saturating_mul(1000).saturating_add(ms))
}

/// The token's certificates: DER and parsed (in DER SET OF order).
fn token_certs(sd: &SignedData) -> Result<Vec<(Vec<u8>, Certificate)>, Error> {
    let Some(set) = &sd.certificates else {
        return Err(bad(
            "no certificates in the token (request it with certReq)".into(),
        ));
    };
    if set.0.len() > MAX_TOKEN_CERTS {
        return Err(bad(format!(
            "{} certificates (max {MAX_TOKEN_CERTS})",
            set.0.len()
        )));
    }
    set.0
        .iter()
        .filter_map(|c| match c {
            CertificateChoices::Certificate(c) => Some(c),
            CertificateChoices::Other(_) => None,
        })
        .map(|c| Ok((c.to_der().map_err(der_err)?, c.clone())))
        .collect()
}

fn find_signer<'a>(
    certs: &'a [(Vec<u8>, Certificate)],
    sid: &SignerIdentifier,
) -> Result<(&'a [u8], &'a Certificate), Error> {
    let found = certs.iter().find(|(_, c)| match sid {
        SignerIdentifier::IssuerAndSerialNumber(is) => {
            c.tbs_certificate.issuer == is.issuer
                && c.tbs_certificate.serial_number == is.serial_number
        }
        SignerIdentifier::SubjectKeyIdentifier(ski) => {
            subject_key_id(c).is_some_and(|id| id == ski.0.as_bytes())
        }
    });
    let (der, cert) =
        found.ok_or_else(|| bad("the signer's certificate is not in the token".into()))?;
    Ok((der.as_slice(), cert))
}

fn subject_key_id(c: &Certificate) -> Option<Vec<u8>> {
    const ID_SKI: Oid = Oid::new_unwrap("2.5.29.14");
    let ext = c
        .tbs_certificate
        .extensions
        .as_ref()?
        .iter()
        .find(|e| e.extn_id == ID_SKI)?;
    let ski = OctetString::from_der(ext.extn_value.as_bytes()).ok()?;
    Some(ski.as_bytes().to_vec())
}

/// ESSCertIDv2 (RFC 5035), the parts used.
#[derive(Sequence)]
struct EssCertIdV2 {
    #[asn1(optional = "true")]
    hash_algorithm: Option<AlgorithmIdentifierOwned>,
    cert_hash: OctetString,
    #[asn1(optional = "true")]
    issuer_serial: Option<Any>,
}

/// SigningCertificateV2 (RFC 5035).
#[derive(Sequence)]
struct SigningCertificateV2 {
    certs: Vec<EssCertIdV2>,
    #[asn1(optional = "true")]
    policies: Option<Any>,
}

fn digest(alg: &Oid, bytes: &[u8]) -> Result<Vec<u8>, Error> {
    Ok(match *alg {
        ID_SHA256 => Sha256::digest(bytes).to_vec(),
        ID_SHA384 => Sha384::digest(bytes).to_vec(),
        ID_SHA512 => Sha512::digest(bytes).to_vec(),
        other => return Err(bad(format!("digest algorithm {other} not supported"))),
    })
}

/// The one value of the signed attribute `oid`: present once, with one value.
fn single_attr(si: &SignerInfo, oid: Oid) -> Result<&Any, Error> {
    let attrs = si
        .signed_attrs
        .as_ref()
        .ok_or_else(|| bad("the signer has no signed attributes".into()))?;
    let mut found = attrs.iter().filter(|a| a.oid == oid);
    match (found.next(), found.next()) {
        (Some(a), None) if a.values.len() == 1 => a
            .values
            .iter()
            .next()
            .ok_or_else(|| bad(format!("signed attribute {oid} has no value"))),
        (None, _) => Err(bad(format!("signed attribute {oid} missing"))),
        _ => Err(bad(format!("signed attribute {oid} repeated"))),
    }
}

/// content-type is TSTInfo, message-digest is the digest of the TSTInfo, and
/// signing-certificate-v2 names the signer's certificate (RFC 3161 §2.4.1, RFC 5035).
fn check_signed_attrs(si: &SignerInfo, tst_der: &[u8], signer_der: &[u8]) -> Result<(), Error> {
    let ct: Oid = single_attr(si, ID_CONTENT_TYPE)?
        .decode_as()
        .map_err(der_err)?;
    if ct != ID_CT_TST_INFO {
        return Err(bad("the content-type attribute is not TSTInfo".into()));
    }
    let md: OctetString = single_attr(si, ID_MESSAGE_DIGEST)?
        .decode_as()
        .map_err(der_err)?;
    if md.as_bytes() != digest(&si.digest_alg.oid, tst_der)? {
        return Err(bad(
            "the message-digest attribute is not the TSTInfo's digest".into(),
        ));
    }
    let sc: SigningCertificateV2 = single_attr(si, ID_SIGNING_CERTIFICATE_V2)?
        .decode_as()
        .map_err(der_err)?;
    let first = sc
        .certs
        .first()
        .ok_or_else(|| bad("signing-certificate-v2 names no certificate".into()))?;
    let alg = first.hash_algorithm.as_ref().map_or(ID_SHA256, |a| a.oid);
    if first.cert_hash.as_bytes() != digest(&alg, signer_der)? {
        return Err(bad(
            "signing-certificate-v2 names another certificate than the signer's".into(),
        ));
    }
    Ok(())
}

/// The signature over the DER of the signed attributes (tagged as a SET, RFC 5652 §5.4),
/// by the signer certificate's key.
fn check_signature(si: &SignerInfo, signer_der: &[u8]) -> Result<(), Error> {
    let attrs = si
        .signed_attrs
        .as_ref()
        .ok_or_else(|| bad("the signer has no signed attributes".into()))?;
    let msg = attrs.to_der().map_err(der_err)?;
    let d = si.digest_alg.oid;
    let candidates: &[&dyn SignatureVerificationAlgorithm] = match (si.signature_algorithm.oid, d) {
        (ECDSA_WITH_SHA256, ID_SHA256) => &[algs::ECDSA_P256_SHA256, algs::ECDSA_P384_SHA256],
        (ECDSA_WITH_SHA384, ID_SHA384) => &[algs::ECDSA_P256_SHA384, algs::ECDSA_P384_SHA384],
        (ECDSA_WITH_SHA512, ID_SHA512) => &[algs::ECDSA_P256_SHA512, algs::ECDSA_P384_SHA512],
        (RSA_ENCRYPTION | SHA256_WITH_RSA, ID_SHA256) => &[algs::RSA_PKCS1_2048_8192_SHA256],
        (RSA_ENCRYPTION | SHA384_WITH_RSA, ID_SHA384) => &[algs::RSA_PKCS1_2048_8192_SHA384],
        (RSA_ENCRYPTION | SHA512_WITH_RSA, ID_SHA512) => &[algs::RSA_PKCS1_2048_8192_SHA512],
        (s, d) => {
            return Err(bad(format!(
                "signature algorithm {s} with digest {d} not supported"
            )));
        }
    };
    let der = CertificateDer::from(signer_der);
    let ee = webpki::EndEntityCert::try_from(&der)
        .map_err(|e| bad(format!("the signer's certificate: {e}")))?;
    let sig = si.signature.as_bytes();
    if candidates
        .iter()
        .any(|alg| ee.verify_signature(*alg, &msg, sig).is_ok())
    {
        Ok(())
    } else {
        Err(bad("the token's signature does not verify".into()))
    }
}

/// A path from the signer's certificate to one of `tsa`'s roots, through the token's other
/// certificates and the bundle's intermediates, every certificate valid at the token's
/// time, and `id-kp-timeStamping` allowed wherever an extended key usage is present.
fn check_path(
    signer_der: &[u8],
    certs: &[(Vec<u8>, Certificate)],
    tsa: &TrustedTsa,
    gen_time_ms: u64,
) -> Result<(), Error> {
    let roots = tsa.roots_der()?;
    let anchors = roots
        .iter()
        .map(|r| webpki::anchor_from_trusted_cert(r).map(|a| a.to_owned()))
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| bad(format!("pinned root of {}: {e}", tsa.name)))?;
    let mut intermediates: Vec<CertificateDer<'static>> = certs
        .iter()
        .filter(|(d, _)| d.as_slice() != signer_der)
        .map(|(d, _)| CertificateDer::from(d.clone()))
        .collect();
    intermediates.extend(tsa.intermediates_der()?);
    let der = CertificateDer::from(signer_der);
    let ee = webpki::EndEntityCert::try_from(&der)
        .map_err(|e| bad(format!("the signer's certificate: {e}")))?;
    let time = UnixTime::since_unix_epoch(std::time::Duration::from_millis(gen_time_ms));
    ee.verify_for_usage(
        CHAIN_ALGS,
        &anchors,
        &intermediates,
        time,
        // Intermediates may carry no extended key usage at all; the TSA certificate's own
        // is checked by `check_purpose` (critical, time stamping alone).
        webpki::KeyUsage::required_if_present(TIME_STAMPING_DER),
        None,
        None,
    )
    .map(|_| ())
    .map_err(|e| {
        bad(format!(
            "the TSA certificate does not chain to a pinned root of {} at the token's time: {e:?}",
            tsa.name
        ))
    })
}

/// RFC 3161 §2.3: the extended key usage is critical and `id-kp-timeStamping` alone.
fn check_purpose(cert: &Certificate) -> Result<(), Error> {
    let eku = cert
        .tbs_certificate
        .extensions
        .as_ref()
        .and_then(|exts| exts.iter().find(|e| e.extn_id == ID_EXT_KEY_USAGE))
        .ok_or_else(|| bad("the TSA certificate has no extended key usage".into()))?;
    let purposes = Vec::<Oid>::from_der(eku.extn_value.as_bytes()).map_err(der_err)?;
    if !eku.critical || purposes != [ID_KP_TIME_STAMPING] {
        return Err(bad(
            "the TSA certificate's extended key usage is not a critical id-kp-timeStamping alone"
                .into(),
        ));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    fn at(s: &str) -> Result<u64, Error> {
        gen_time_ms(&Any::new(Tag::GeneralizedTime, s.as_bytes()).unwrap())
    }

    #[test]
    fn gen_time_takes_fractions_and_rounds_up() {
        // 2026-12-06T21:13:04Z.
        let base = 1_796_591_584_000;
        assert_eq!(at("20261206211304Z").unwrap(), base);
        assert_eq!(at("20261206211304.5Z").unwrap(), base + 500);
        assert_eq!(at("20261206211304.123Z").unwrap(), base + 123);
        assert_eq!(at("20261206211304.1231Z").unwrap(), base + 124);
        assert_eq!(at("20261206211304.0001Z").unwrap(), base + 1);
    }

    #[test]
    fn gen_time_refuses_other_spellings() {
        for bad in [
            "20261206211304",
            "20261206211304.50Z",
            "20261206211304.Z",
            "202612062113Z",
            "20261206211304+0100",
            "20261306211304Z",
            "2026120621130aZ",
            "20261206241304Z",
        ] {
            assert!(at(bad).is_err(), "{bad}");
        }
        let utc_time = Any::new(Tag::UtcTime, b"261206211304Z".as_slice()).unwrap();
        assert!(gen_time_ms(&utc_time).is_err());
    }
}

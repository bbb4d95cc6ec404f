//! The federation CA behind `cxnode certs`: create the CA, issue party certificates, revoke them
//! and publish the CRL.
//!
//! Layout of a CA directory: `ca.pem` (the CA certificate), `ca.key` (its PKCS#8 key, 0600),
//! `revoked.json` (a JSON array of revocations: the source of truth for the CRL), `crl.pem` (the
//! signed CRL, rewritten atomically from `revoked.json`), `issued.json` (JSON Lines, one object
//! per issued certificate: a ledger for operators to find serials).
//!
//! Invariants: an existing CA key or issued key is never overwritten; serials are random, positive
//! and 16 bytes; every CRL has a CRL number one above the previous `crl.pem` and is valid for
//! `CRL_VALIDITY_DAYS`; a revocation entry is never removed or re-dated by this module.

use std::fs;
use std::net::IpAddr;
use std::path::{Path, PathBuf};

use rcgen::{
    BasicConstraints, CertificateParams, CertificateRevocationListParams, DistinguishedName, DnType,
    ExtendedKeyUsagePurpose, IsCa, Issuer, KeyIdMethod, KeyPair, KeyUsagePurpose, RevocationReason, RevokedCertParams,
    SanType, SerialNumber,
};
use ring::rand::SecureRandom;
use serde::{Deserialize, Serialize};
use time::format_description::well_known::Rfc3339;
use time::{Duration, OffsetDateTime};

use super::identity::Identity;
use super::{files, serial_hex, PkiError};

pub const CA_CERT_FILE: &str = "ca.pem";
pub const CA_KEY_FILE: &str = "ca.key";
pub const REVOKED_FILE: &str = "revoked.json";
pub const CRL_FILE: &str = "crl.pem";
pub const ISSUED_FILE: &str = "issued.json";

/// How long a CRL is valid for. Nodes do not enforce the CRL's next update (an operator who
/// forgets to re-publish must not cut the federation off), but other tools may.
pub const CRL_VALIDITY_DAYS: i64 = 7;
/// Serial length: 16 random bytes (RFC 5280 allows up to 20) make collisions out of reach.
const SERIAL_BYTES: usize = 16;
/// Backdating of the CA's not-before, so provinces whose clocks run a little behind accept it.
const CA_BACKDATE: Duration = Duration::hours(1);
const FILE_NAME_LEN_MAX: usize = 64;

/// What to put into a party certificate.
#[derive(Clone, Debug)]
pub struct IssueRequest {
    pub identity: Identity,
    pub not_before: OffsetDateTime,
    pub not_after: OffsetDateTime,
    pub dns_names: Vec<String>,
    pub ip_addresses: Vec<IpAddr>,
}

/// Where `issue` wrote the certificate and its key.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct IssuedPaths {
    pub cert: PathBuf,
    pub key: PathBuf,
}

/// One revocation, as kept in `revoked.json`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RevokedEntry {
    /// Lowercase hex, no leading zero bytes.
    pub serial: String,
    /// RFC 3339, whole seconds (the CRL cannot carry more).
    pub revoked_at: String,
    /// A canonical reason name, such as `key-compromise`.
    pub reason: String,
    /// The identity the certificate carried, for operators reading the file.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub identity: Option<String>,
}

/// One issued certificate, as appended to `issued.json`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct IssuedEntry {
    pub serial: String,
    pub identity: String,
    pub not_after: String,
    pub file: String,
}

/// The revocation reasons `revoke` accepts (RFC 5280 §5.3.1 names, kebab-case), with their CRL
/// reason codes.
const REVOCATION_REASONS: &[(&str, RevocationReason)] = &[
    ("unspecified", RevocationReason::Unspecified),
    ("key-compromise", RevocationReason::KeyCompromise),
    ("ca-compromise", RevocationReason::CaCompromise),
    ("affiliation-changed", RevocationReason::AffiliationChanged),
    ("superseded", RevocationReason::Superseded),
    ("cessation-of-operation", RevocationReason::CessationOfOperation),
    ("certificate-hold", RevocationReason::CertificateHold),
    ("privilege-withdrawn", RevocationReason::PrivilegeWithdrawn),
];

/// The reason names `revoke` accepts, for the CLI's help text.
pub fn revocation_reasons() -> impl Iterator<Item = &'static str> {
    REVOCATION_REASONS.iter().map(|(name, _)| *name)
}

/// Maps a reason as an operator types it to its canonical name and code. The RFC's camelCase
/// (`keyCompromise`, as openssl prints it) is accepted too.
fn parse_reason(reason: &str) -> Result<(&'static str, RevocationReason), PkiError> {
    let squash = |s: &str| -> String {
        s.chars()
            .filter(|c| *c != '-' && *c != '_')
            .collect::<String>()
            .to_ascii_lowercase()
    };
    let wanted = squash(reason);
    REVOCATION_REASONS
        .iter()
        .find(|(name, _)| squash(name) == wanted)
        .copied()
        .ok_or_else(|| PkiError::InvalidRequest {
            field: "reason",
            reason: format!(
                "{reason:?} is not a revocation reason; use one of {}",
                REVOCATION_REASONS
                    .iter()
                    .map(|(name, _)| *name)
                    .collect::<Vec<_>>()
                    .join(", ")
            ),
        })
}

fn generate_error(what: &'static str) -> impl FnOnce(rcgen::Error) -> PkiError {
    move |source| PkiError::Generate { what, source }
}

fn random_serial() -> Result<SerialNumber, PkiError> {
    let mut bytes = [0u8; SERIAL_BYTES];
    ring::rand::SystemRandom::new()
        .fill(&mut bytes)
        .map_err(|_| PkiError::Sign {
            reason: "the system random number generator failed".to_string(),
        })?;
    // Clear the sign bit (a serial must be positive) and set the next one, so the DER encoding is
    // exactly SERIAL_BYTES long and the hex form never changes length.
    bytes[0] = (bytes[0] & 0x7f) | 0x40;
    Ok(SerialNumber::from_slice(&bytes))
}

fn now_seconds() -> OffsetDateTime {
    // Certificates and CRLs carry whole seconds; keeping our copies the same avoids a stored
    // revocation time that differs from the CRL's by a fraction.
    let now = OffsetDateTime::now_utc();
    now.replace_nanosecond(0).unwrap_or(now)
}

fn rfc3339(t: OffsetDateTime) -> String {
    t.format(&Rfc3339).unwrap_or_else(|_| t.unix_timestamp().to_string())
}

/// Creates a new federation CA in `dir` (created if missing): ECDSA P-256, valid from an hour ago
/// for `validity_days`, with an empty revocation list and CRL number 1.
pub fn init_ca(dir: &Path, common_name: &str, validity_days: u32) -> Result<(), PkiError> {
    if common_name.trim().is_empty() {
        return Err(PkiError::InvalidRequest {
            field: "common_name",
            reason: "must not be empty; name the federation, e.g. \"cx federation root ca\"".into(),
        });
    }
    if validity_days == 0 {
        return Err(PkiError::InvalidRequest {
            field: "validity_days",
            reason: "must be at least 1".into(),
        });
    }
    let key_path = dir.join(CA_KEY_FILE);
    // Checked before generating anything so the message is about the key, not about ca.pem.
    if key_path.exists() {
        return Err(PkiError::AlreadyExists { path: key_path });
    }
    fs::create_dir_all(dir).map_err(|source| PkiError::Write {
        path: dir.to_path_buf(),
        source,
    })?;

    let now = now_seconds();
    let mut params = CertificateParams::default();
    params.not_before = now - CA_BACKDATE;
    params.not_after = now + Duration::days(i64::from(validity_days));
    params.serial_number = Some(random_serial()?);
    let mut name = DistinguishedName::new();
    name.push(DnType::CommonName, common_name);
    params.distinguished_name = name;
    params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    params.key_usages = vec![
        KeyUsagePurpose::KeyCertSign,
        KeyUsagePurpose::CrlSign,
        KeyUsagePurpose::DigitalSignature,
    ];
    params.key_identifier_method = KeyIdMethod::Sha256;

    let key = KeyPair::generate().map_err(generate_error("generate the ca key"))?;
    let cert = params
        .self_signed(&key)
        .map_err(generate_error("sign the ca certificate"))?;

    // The key goes first and with O_EXCL: two concurrent inits cannot both win.
    files::write_new(&key_path, key.serialize_pem().as_bytes(), true)?;
    files::write_atomic(&dir.join(CA_CERT_FILE), cert.pem().as_bytes(), false)?;
    files::write_atomic(&dir.join(REVOKED_FILE), b"[]\n", false)?;
    write_crl_numbered(dir, 1)?;
    tracing::info!(dir = %dir.display(), common_name, validity_days, "federation ca created");
    Ok(())
}

/// Loads the CA certificate and key from `ca_dir` as an rcgen issuer, checking they match.
fn load_ca(ca_dir: &Path) -> Result<Issuer<'static, KeyPair>, PkiError> {
    let cert_path = ca_dir.join(CA_CERT_FILE);
    let key_path = ca_dir.join(CA_KEY_FILE);
    let cert_der = first_pem_cert(&cert_path)?;
    let key_pem = files::read_string(&key_path)?;
    let key = KeyPair::from_pem(&key_pem).map_err(|e| PkiError::KeyUnusable {
        path: key_path.clone(),
        reason: e.to_string(),
    })?;
    let (_, x509) = x509_parser::parse_x509_certificate(&cert_der).map_err(|e| PkiError::CertificateInvalid {
        what: cert_path.display().to_string(),
        reason: e.to_string(),
    })?;
    // A key that does not match the CA certificate would issue certificates nobody can verify.
    if x509.public_key().subject_public_key.data.as_ref() != key.public_key_raw() {
        return Err(PkiError::KeyMismatch {
            key: key_path,
            cert: cert_path,
        });
    }
    Issuer::from_ca_cert_der(&cert_der.into(), key).map_err(generate_error("read the ca certificate as an issuer"))
}

fn first_pem_cert(path: &Path) -> Result<Vec<u8>, PkiError> {
    let chain = super::tls::load_cert_chain(path)?;
    chain
        .into_iter()
        .next()
        .map(|c| c.to_vec())
        .ok_or_else(|| PkiError::PemEmpty {
            path: path.to_path_buf(),
            what: "CERTIFICATE",
        })
}

fn check_file_name(name: &str) -> Result<(), PkiError> {
    let ok = !name.is_empty()
        && name.len() <= FILE_NAME_LEN_MAX
        && !name.starts_with('.')
        && name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-'));
    if ok {
        Ok(())
    } else {
        Err(PkiError::InvalidRequest {
            field: "name",
            reason: format!(
                "{name:?} is not a file name; use 1 to {FILE_NAME_LEN_MAX} of A-Z a-z 0-9 . _ - not starting with '.'"
            ),
        })
    }
}

/// Issues a party certificate signed by the CA in `ca_dir`, writing `out_dir/NAME.pem` (the leaf
/// only) and `out_dir/NAME.key` (PKCS#8, 0600). Neither file may exist yet.
pub fn issue(ca_dir: &Path, req: &IssueRequest, out_dir: &Path, name: &str) -> Result<IssuedPaths, PkiError> {
    check_file_name(name)?;
    req.identity.validate()?;
    if req.not_after <= req.not_before {
        return Err(PkiError::InvalidRequest {
            field: "not_after",
            reason: format!(
                "{} is not after not_before {}",
                rfc3339(req.not_after),
                rfc3339(req.not_before)
            ),
        });
    }
    let paths = IssuedPaths {
        cert: out_dir.join(format!("{name}.pem")),
        key: out_dir.join(format!("{name}.key")),
    };
    for path in [&paths.cert, &paths.key] {
        if path.exists() {
            return Err(PkiError::AlreadyExists { path: path.clone() });
        }
    }
    let ca = load_ca(ca_dir)?;

    let uri = req.identity.uri();
    let mut params = CertificateParams::default();
    params.not_before = req.not_before;
    params.not_after = req.not_after;
    let serial = random_serial()?;
    let serial_text = serial_hex(serial.as_ref());
    params.serial_number = Some(serial);
    let mut dn = DistinguishedName::new();
    dn.push(DnType::CommonName, uri.as_str());
    params.distinguished_name = dn;
    let uri_san = uri
        .as_str()
        .try_into()
        .map_err(|e: rcgen::Error| PkiError::InvalidRequest {
            field: "identity",
            reason: e.to_string(),
        })?;
    let mut sans = vec![SanType::URI(uri_san)];
    for dns in &req.dns_names {
        let name = dns
            .as_str()
            .try_into()
            .map_err(|e: rcgen::Error| PkiError::InvalidRequest {
                field: "dns_names",
                reason: format!("{dns:?}: {e}"),
            })?;
        sans.push(SanType::DnsName(name));
    }
    sans.extend(req.ip_addresses.iter().copied().map(SanType::IpAddress));
    params.subject_alt_names = sans;
    params.is_ca = IsCa::ExplicitNoCa;
    params.key_usages = vec![KeyUsagePurpose::DigitalSignature];
    params.extended_key_usages = vec![ExtendedKeyUsagePurpose::ServerAuth, ExtendedKeyUsagePurpose::ClientAuth];
    // The authority key identifier lets verifiers pick the right CA when a federation rolls its
    // CA and both are trusted for a while.
    params.use_authority_key_identifier_extension = true;

    let key = KeyPair::generate().map_err(generate_error("generate the certificate key"))?;
    let cert = params
        .signed_by(&key, &ca)
        .map_err(generate_error("sign the certificate"))?;

    fs::create_dir_all(out_dir).map_err(|source| PkiError::Write {
        path: out_dir.to_path_buf(),
        source,
    })?;
    files::write_new(&paths.key, key.serialize_pem().as_bytes(), true)?;
    files::write_new(&paths.cert, cert.pem().as_bytes(), false)?;

    let entry = IssuedEntry {
        serial: serial_text.clone(),
        identity: uri.clone(),
        not_after: rfc3339(req.not_after),
        file: paths.cert.display().to_string(),
    };
    let line = serde_json::to_string(&entry).map_err(|source| PkiError::Json {
        path: ca_dir.join(ISSUED_FILE),
        source,
    })?;
    files::append_line(&ca_dir.join(ISSUED_FILE), &line)?;
    tracing::info!(identity = %uri, serial = %serial_text, cert = %paths.cert.display(), "certificate issued");
    Ok(paths)
}

fn read_revoked(ca_dir: &Path) -> Result<Vec<RevokedEntry>, PkiError> {
    let path = ca_dir.join(REVOKED_FILE);
    let text = match fs::read_to_string(&path) {
        Ok(text) => text,
        // A CA made by hand or by an older tool may have no list yet: that is an empty list.
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Vec::new()),
        Err(source) => return Err(PkiError::Read { path, source }),
    };
    serde_json::from_str(&text).map_err(|source| PkiError::Json { path, source })
}

/// Revokes the certificate in `cert_pem` (its first certificate) as of now, and re-publishes the
/// CRL. Revoking an already revoked certificate keeps the original date and reason.
pub fn revoke(ca_dir: &Path, cert_pem: &Path, reason: &str) -> Result<(), PkiError> {
    let (reason_text, _) = parse_reason(reason)?;
    let cert_der = first_pem_cert(cert_pem)?;
    let (_, cert) = x509_parser::parse_x509_certificate(&cert_der).map_err(|e| PkiError::CertificateInvalid {
        what: cert_pem.display().to_string(),
        reason: e.to_string(),
    })?;
    let ca_cert_path = ca_dir.join(CA_CERT_FILE);
    let ca_der = first_pem_cert(&ca_cert_path)?;
    let (_, ca_cert) = x509_parser::parse_x509_certificate(&ca_der).map_err(|e| PkiError::CertificateInvalid {
        what: ca_cert_path.display().to_string(),
        reason: e.to_string(),
    })?;
    if cert.issuer().as_raw() != ca_cert.subject().as_raw() {
        return Err(PkiError::NotIssuedByCa {
            cert: cert_pem.to_path_buf(),
            ca_dir: ca_dir.to_path_buf(),
        });
    }
    let serial = serial_hex(cert.raw_serial());
    let identity = super::identity::identity_from_cert_der(&cert_der)
        .ok()
        .map(|id| id.uri());

    let mut revoked = read_revoked(ca_dir)?;
    if revoked.iter().any(|e| e.serial == serial) {
        tracing::info!(serial = %serial, "certificate already revoked; republishing the crl");
    } else {
        revoked.push(RevokedEntry {
            serial: serial.clone(),
            revoked_at: rfc3339(now_seconds()),
            reason: reason_text.to_string(),
            identity: identity.clone(),
        });
        let path = ca_dir.join(REVOKED_FILE);
        let mut text = serde_json::to_string_pretty(&revoked).map_err(|source| PkiError::Json {
            path: path.clone(),
            source,
        })?;
        text.push('\n');
        files::write_atomic(&path, text.as_bytes(), false)?;
    }
    write_crl(ca_dir)?;
    tracing::info!(serial = %serial, identity = identity.as_deref().unwrap_or("-"), reason = reason_text, "certificate revoked");
    Ok(())
}

/// Re-signs `crl.pem` from `revoked.json` with the next CRL number and a fresh validity window.
/// Run it at least every `CRL_VALIDITY_DAYS` days.
pub fn write_crl(ca_dir: &Path) -> Result<PathBuf, PkiError> {
    let crl_path = ca_dir.join(CRL_FILE);
    let next = match fs::read(&crl_path) {
        Ok(pem) => crl_number(&crl_path, &pem)?.saturating_add(1),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => 1,
        Err(source) => return Err(PkiError::Read { path: crl_path, source }),
    };
    write_crl_numbered(ca_dir, next)
}

fn crl_number(path: &Path, pem: &[u8]) -> Result<u64, PkiError> {
    let invalid = |reason: String| PkiError::PemInvalid {
        path: path.to_path_buf(),
        what: "X509 CRL",
        reason,
    };
    let (_, block) = x509_parser::pem::parse_x509_pem(pem).map_err(|e| invalid(e.to_string()))?;
    let (_, crl) = x509_parser::parse_x509_crl(&block.contents).map_err(|e| invalid(e.to_string()))?;
    super::tls::crl_number_value(&crl).ok_or_else(|| invalid("crl number does not fit in 64 bits".into()))
}

fn hex_to_bytes(hex: &str) -> Option<Vec<u8>> {
    if hex.is_empty() || !hex.len().is_multiple_of(2) {
        return None;
    }
    (0..hex.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(hex.get(i..i + 2)?, 16).ok())
        .collect()
}

fn write_crl_numbered(ca_dir: &Path, number: u64) -> Result<PathBuf, PkiError> {
    let ca = load_ca(ca_dir)?;
    let revoked_path = ca_dir.join(REVOKED_FILE);
    let mut revoked_certs = Vec::new();
    for entry in read_revoked(ca_dir)? {
        let serial = hex_to_bytes(&entry.serial).ok_or_else(|| PkiError::InvalidRequest {
            field: "revoked.json serial",
            reason: format!("{:?} in {} is not hex", entry.serial, revoked_path.display()),
        })?;
        let revocation_time =
            OffsetDateTime::parse(&entry.revoked_at, &Rfc3339).map_err(|e| PkiError::InvalidRequest {
                field: "revoked.json revoked_at",
                reason: format!(
                    "{:?} in {} is not an rfc 3339 time: {e}",
                    entry.revoked_at,
                    revoked_path.display()
                ),
            })?;
        revoked_certs.push(RevokedCertParams {
            serial_number: SerialNumber::from_slice(&serial),
            revocation_time,
            reason_code: Some(parse_reason(&entry.reason)?.1),
            invalidity_date: None,
        });
    }
    let now = now_seconds();
    let params = CertificateRevocationListParams {
        this_update: now,
        next_update: now + Duration::days(CRL_VALIDITY_DAYS),
        crl_number: SerialNumber::from(number),
        issuing_distribution_point: None,
        revoked_certs,
        key_identifier_method: KeyIdMethod::Sha256,
    };
    let crl = params.signed_by(&ca).map_err(generate_error("sign the crl"))?;
    let pem = crl.pem().map_err(generate_error("encode the crl"))?;
    let crl_path = ca_dir.join(CRL_FILE);
    files::write_atomic(&crl_path, pem.as_bytes(), false)?;
    Ok(crl_path)
}

/// Issues a successor of the certificate at `cert` (same identity, DNS names and IP addresses; a
/// new key; valid from an hour ago for `validity_days`) from the CA in `ca_dir`, which may be a
/// new CA during a rotation, and puts it in place of `cert` and its key (`NAME.key` beside it):
/// each written to a new file and renamed over the old one, key first, so a node reloading
/// meanwhile reads either the old pair, or a mismatch it refuses and retries, never half a file.
pub fn renew(ca_dir: &Path, cert: &Path, validity_days: i64) -> Result<IssuedPaths, PkiError> {
    let chain = super::load_cert_chain(cert)?;
    let leaf = chain.first().ok_or_else(|| PkiError::CertificateInvalid {
        what: cert.display().to_string(),
        reason: "no certificate in the file".to_string(),
    })?;
    let identity = super::identity_from_cert_der(leaf.as_ref())?;
    let stem = cert
        .file_stem()
        .and_then(|s| s.to_str())
        .ok_or_else(|| PkiError::InvalidRequest {
            field: "cert",
            reason: format!("{} has no file name", cert.display()),
        })?
        .to_string();
    let dir = cert.parent().unwrap_or(Path::new("."));
    let key = dir.join(format!("{stem}.key"));
    if !key.is_file() {
        return Err(PkiError::InvalidRequest {
            field: "cert",
            reason: format!("its key {} is not beside it", key.display()),
        });
    }
    let now = time::OffsetDateTime::now_utc();
    let req = IssueRequest {
        identity,
        not_before: now - time::Duration::hours(1),
        not_after: now + time::Duration::days(validity_days),
        dns_names: super::dns_names_of_cert_der(leaf.as_ref()),
        ip_addresses: super::identity::ip_addresses_of_cert_der(leaf.as_ref()),
    };
    let staged = format!("{stem}.renewing-{}", std::process::id());
    let issued = issue(ca_dir, &req, dir, &staged)?;
    let rename = |from: &Path, to: &Path| {
        std::fs::rename(from, to).map_err(|source| PkiError::Write {
            path: to.to_path_buf(),
            source,
        })
    };
    rename(&issued.key, &key)?;
    rename(&issued.cert, cert)?;
    Ok(IssuedPaths {
        cert: cert.to_path_buf(),
        key,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::pki::identity::identity_from_cert_der;
    use crate::pki::tls::load_cert_chain;
    use crate::record::Region;

    fn node(region: &str) -> Identity {
        Identity::Node(Region::parse(region).expect("test region"))
    }

    #[test]
    fn init_issue_and_read_identity() {
        let dir = tempfile::tempdir().expect("tempdir");
        let ca_dir = dir.path().join("ca");
        init_ca(&ca_dir, "test federation ca", 30).expect("init ca");
        for f in [CA_CERT_FILE, CA_KEY_FILE, REVOKED_FILE, CRL_FILE] {
            assert!(ca_dir.join(f).exists(), "{f} written");
        }
        assert_eq!(read_revoked(&ca_dir).expect("revoked"), Vec::new());
        let crl_pem = fs::read(ca_dir.join(CRL_FILE)).expect("crl");
        assert_eq!(crl_number(&ca_dir.join(CRL_FILE), &crl_pem).expect("number"), 1);

        // A second init must refuse: the key would be lost.
        let err = init_ca(&ca_dir, "again", 30).expect_err("refuses overwrite");
        assert!(matches!(err, PkiError::AlreadyExists { .. }), "{err}");

        let now = OffsetDateTime::now_utc();
        let req = IssueRequest {
            identity: node("330000"),
            not_before: now - Duration::minutes(5),
            not_after: now + Duration::days(1),
            dns_names: vec!["localhost".into()],
            ip_addresses: vec!["127.0.0.1".parse().expect("ip")],
        };
        let out = dir.path().join("out");
        let paths = issue(&ca_dir, &req, &out, "node-330000").expect("issue");
        let chain = load_cert_chain(&paths.cert).expect("chain");
        assert_eq!(chain.len(), 1, "leaf only");
        assert_eq!(identity_from_cert_der(&chain[0]).expect("identity"), node("330000"));
        let (_, x509) = x509_parser::parse_x509_certificate(&chain[0]).expect("parse");
        assert_eq!(super::super::trim_serial(x509.raw_serial()).len(), SERIAL_BYTES);
        assert!(!x509.is_ca());

        // Same name again must refuse rather than clobber a live key.
        let err = issue(&ca_dir, &req, &out, "node-330000").expect_err("no overwrite");
        assert!(matches!(err, PkiError::AlreadyExists { .. }), "{err}");

        let ledger = fs::read_to_string(ca_dir.join(ISSUED_FILE)).expect("ledger");
        let entry: IssuedEntry = serde_json::from_str(ledger.lines().next().expect("one line")).expect("json line");
        assert_eq!(entry.identity, "cx://node/330000");
        assert_eq!(entry.serial, serial_hex(x509.raw_serial()));

        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            for key in [ca_dir.join(CA_KEY_FILE), paths.key.clone()] {
                let mode = fs::metadata(&key).expect("meta").permissions().mode() & 0o777;
                assert_eq!(mode, 0o600, "{} mode", key.display());
            }
        }
    }

    #[test]
    fn openssl_verifies_our_certificates_and_crl() {
        let dir = tempfile::tempdir().expect("tempdir");
        init_ca(dir.path(), "federation", 30).expect("init");
        let now = OffsetDateTime::now_utc();
        let req = IssueRequest {
            // The longest identity: its URI is also the CN, past X.520's 64-character bound.
            identity: Identity::Department {
                region: Region::parse("330000").expect("region"),
                dept: "d".repeat(64),
            },
            not_before: now - Duration::minutes(1),
            not_after: now + Duration::days(1),
            dns_names: vec![],
            ip_addresses: vec![],
        };
        let good = issue(dir.path(), &req, dir.path(), "good").expect("issue");
        let bad = issue(dir.path(), &req, dir.path(), "bad").expect("issue");
        revoke(dir.path(), &bad.cert, "superseded").expect("revoke");
        let verify = |cert: &Path| {
            std::process::Command::new("/usr/bin/openssl")
                .args(["verify", "-crl_check", "-purpose", "sslclient", "-CAfile"])
                .arg(dir.path().join(CA_CERT_FILE))
                .arg("-CRLfile")
                .arg(dir.path().join(CRL_FILE))
                .arg(cert)
                .output()
                .expect("run openssl")
        };
        let out = verify(&good.cert);
        assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
        let out = verify(&bad.cert);
        assert!(!out.status.success(), "revoked certificate must fail openssl verify");
        let text = String::from_utf8_lossy(&out.stdout).to_string() + &String::from_utf8_lossy(&out.stderr);
        assert!(text.contains("revoked"), "{text}");
    }

    #[test]
    fn issue_rejects_bad_requests() {
        let dir = tempfile::tempdir().expect("tempdir");
        init_ca(dir.path(), "ca", 1).expect("init");
        let now = OffsetDateTime::now_utc();
        let mut req = IssueRequest {
            identity: node("330000"),
            not_before: now,
            not_after: now,
            dns_names: vec![],
            ip_addresses: vec![],
        };
        assert!(issue(dir.path(), &req, dir.path(), "x").is_err(), "empty validity");
        req.not_after = now + Duration::days(1);
        assert!(issue(dir.path(), &req, dir.path(), "../x").is_err(), "path in name");
        assert!(issue(dir.path(), &req, dir.path(), ".hidden").is_err());
        req.identity = Identity::Operator("a/b".into());
        assert!(issue(dir.path(), &req, dir.path(), "x").is_err(), "bad identity");
        assert!(init_ca(&dir.path().join("z"), "", 1).is_err());
        assert!(init_ca(&dir.path().join("z"), "ca", 0).is_err());
    }

    #[test]
    fn revoke_updates_list_and_crl() {
        let dir = tempfile::tempdir().expect("tempdir");
        init_ca(dir.path(), "ca", 30).expect("init");
        let now = OffsetDateTime::now_utc();
        let req = IssueRequest {
            identity: node("320000"),
            not_before: now - Duration::minutes(1),
            not_after: now + Duration::days(1),
            dns_names: vec![],
            ip_addresses: vec![],
        };
        let paths = issue(dir.path(), &req, dir.path(), "n").expect("issue");
        assert!(revoke(dir.path(), &paths.cert, "nonsense").is_err());
        revoke(dir.path(), &paths.cert, "keyCompromise").expect("revoke");
        revoke(dir.path(), &paths.cert, "superseded").expect("idempotent");
        let revoked = read_revoked(dir.path()).expect("list");
        assert_eq!(revoked.len(), 1);
        assert_eq!(revoked[0].reason, "key-compromise");
        assert_eq!(revoked[0].identity.as_deref(), Some("cx://node/320000"));

        let crl_path = dir.path().join(CRL_FILE);
        let pem = fs::read(&crl_path).expect("crl");
        assert_eq!(crl_number(&crl_path, &pem).expect("number"), 3);
        let (_, block) = x509_parser::pem::parse_x509_pem(&pem).expect("pem");
        let (_, crl) = x509_parser::parse_x509_crl(&block.contents).expect("crl");
        let serials: Vec<String> = crl
            .iter_revoked_certificates()
            .map(|r| serial_hex(r.raw_serial()))
            .collect();
        assert_eq!(serials, vec![revoked[0].serial.clone()]);

        // A certificate from another CA is not ours to revoke.
        let other = tempfile::tempdir().expect("tempdir");
        init_ca(other.path(), "other", 30).expect("init other");
        let foreign = issue(other.path(), &req, other.path(), "f").expect("issue foreign");
        let err = revoke(dir.path(), &foreign.cert, "unspecified").expect_err("foreign");
        assert!(matches!(err, PkiError::NotIssuedByCa { .. }), "{err}");
    }
}

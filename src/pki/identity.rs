//! Federation identities and their `cx://` URI form, and reading the identity out of a certificate.
//!
//! Invariants: `Identity::parse_uri(&id.uri()) == Ok(id)` for every identity; a certificate yields
//! an identity only if it carries exactly one `cx://` URI SAN (other URI SANs are ignored), so a
//! certificate can never be read as two parties.

use std::fmt;

use x509_parser::extensions::GeneralName;

use super::PkiError;
use crate::record::Region;

const SCHEME: &str = "cx://";
const NAME_LEN_MAX: usize = 64;

/// Who a certificate speaks for. What that party may do is decided by the access policy.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub enum Identity {
    /// A province's node: replicates and signs checkpoints of its origin log.
    Node(Region),
    /// A province's own publishing system.
    Publisher(Region),
    /// A department of a province subscribing to feeds.
    Department { region: Region, dept: String },
    /// A person operating the federation.
    Operator(String),
}

impl Identity {
    /// Parses `cx://node/330000`, `cx://publisher/330000`, `cx://department/330000/<dept-id>` or
    /// `cx://operator/<name>`. Strict: no trailing slash, no query, no percent-encoding, so that
    /// each identity has exactly one spelling and policy lookups cannot be dodged.
    pub fn parse_uri(uri: &str) -> Result<Identity, PkiError> {
        let invalid = |reason: &str| PkiError::InvalidIdentity {
            uri: uri.to_string(),
            reason: reason.to_string(),
        };
        let rest = uri
            .strip_prefix(SCHEME)
            .ok_or_else(|| invalid("must start with cx://"))?;
        let parts: Vec<&str> = rest.split('/').collect();
        let region = |s: &str| Region::parse_node(s).map_err(|e| invalid(&e.to_string()));
        match parts.as_slice() {
            ["node", r] => Ok(Identity::Node(region(r)?)),
            ["publisher", r] => Ok(Identity::Publisher(region(r)?)),
            ["department", r, dept] => {
                check_name(dept).map_err(|reason| invalid(&format!("department id: {reason}")))?;
                Ok(Identity::Department {
                    region: region(r)?,
                    dept: (*dept).to_string(),
                })
            }
            ["operator", name] => {
                check_name(name).map_err(|reason| invalid(&format!("operator name: {reason}")))?;
                Ok(Identity::Operator((*name).to_string()))
            }
            _ => Err(invalid(
                "expected cx://node/<region>, cx://publisher/<region>, cx://department/<region>/<dept-id> or cx://operator/<name>",
            )),
        }
    }

    /// The canonical URI, as put into certificates.
    pub fn uri(&self) -> String {
        match self {
            Identity::Node(region) => format!("{SCHEME}node/{region}"),
            Identity::Publisher(region) => format!("{SCHEME}publisher/{region}"),
            Identity::Department { region, dept } => format!("{SCHEME}department/{region}/{dept}"),
            Identity::Operator(name) => format!("{SCHEME}operator/{name}"),
        }
    }

    /// Checks a hand-built identity (the enum fields are public) against the same rules as
    /// `parse_uri`, before it is written into a certificate.
    pub fn validate(&self) -> Result<(), PkiError> {
        let uri = self.uri();
        match Identity::parse_uri(&uri)? {
            ref parsed if parsed == self => Ok(()),
            _ => Err(PkiError::InvalidIdentity {
                uri,
                reason: "does not round-trip; a name must not contain '/'".to_string(),
            }),
        }
    }
}

impl fmt::Display for Identity {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.uri())
    }
}

fn check_name(name: &str) -> Result<(), String> {
    if name.is_empty() || name.len() > NAME_LEN_MAX {
        return Err(format!("must be 1 to {NAME_LEN_MAX} characters"));
    }
    if let Some(c) = name
        .chars()
        .find(|c| !(c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-')))
    {
        return Err(format!("character {c:?} is not allowed; use A-Z a-z 0-9 . _ -"));
    }
    Ok(())
}

/// Reads the identity of an end-entity certificate from its `cx://` URI SAN.
///
/// This does not verify the certificate; callers do that first (the TLS handshake, or
/// `SignatureVerifier`).
pub fn identity_from_cert_der(der: &[u8]) -> Result<Identity, PkiError> {
    let invalid = |reason: String| PkiError::CertificateInvalid {
        what: "certificate".to_string(),
        reason,
    };
    let (_, cert) = x509_parser::parse_x509_certificate(der).map_err(|e| invalid(e.to_string()))?;
    let subject = cert.subject().to_string();
    let san = cert
        .subject_alternative_name()
        .map_err(|e| invalid(format!("subject alternative name of {subject}: {e}")))?;
    let uris: Vec<&str> = san
        .map(|ext| {
            ext.value
                .general_names
                .iter()
                .filter_map(|name| match name {
                    // The URI scheme is case-insensitive (RFC 3986), so `CX://` must not slip
                    // past the "exactly one" rule; parse_uri then insists on the canonical case.
                    GeneralName::URI(uri) if uri.get(..3).is_some_and(|s| s.eq_ignore_ascii_case("cx:")) => Some(*uri),
                    _ => None,
                })
                .collect()
        })
        .unwrap_or_default();
    match uris.as_slice() {
        [] => Err(PkiError::NoIdentity { subject }),
        [uri] => Identity::parse_uri(uri),
        _ => Err(PkiError::MultipleIdentities {
            subject,
            count: uris.len(),
            uris: uris.join(", "),
        }),
    }
}

/// The DNS names a certificate serves as (its DNS SANs), in order: what a client dialling the
/// node by address must expect.
pub fn dns_names_of_cert_der(der: &[u8]) -> Vec<String> {
    sans_of(der, |n| match n {
        GeneralName::DNSName(d) => Some(d.to_string()),
        _ => None,
    })
}

/// The subject alternative names of a certificate that `pick` keeps (none when it has no SAN
/// extension or does not parse).
fn sans_of<T>(der: &[u8], pick: impl Fn(&GeneralName) -> Option<T>) -> Vec<T> {
    let Ok((_, cert)) = x509_parser::parse_x509_certificate(der) else {
        return Vec::new();
    };
    let Ok(Some(san)) = cert.subject_alternative_name() else {
        return Vec::new();
    };
    san.value.general_names.iter().filter_map(pick).collect()
}

/// The IP address SANs of a certificate (empty when it has none or does not parse).
pub fn ip_addresses_of_cert_der(der: &[u8]) -> Vec<std::net::IpAddr> {
    sans_of(der, |n| match n {
        GeneralName::IPAddress(b) => match b.len() {
            4 => <[u8; 4]>::try_from(*b).ok().map(std::net::IpAddr::from),
            16 => <[u8; 16]>::try_from(*b).ok().map(std::net::IpAddr::from),
            _ => None,
        },
        _ => None,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn region(s: &str) -> Region {
        Region::parse(s).expect("test region is valid")
    }

    fn cxnode_hub() -> Region {
        Region::parse_node("100000").expect("the national hub")
    }

    #[test]
    fn uri_round_trips() {
        let cases = [
            Identity::Node(region("330000")),
            // The national hub is a node too.
            Identity::Node(cxnode_hub()),
            Identity::Publisher(region("110000")),
            Identity::Department {
                region: region("650000"),
                dept: "market-regulation_2.0".to_string(),
            },
            Identity::Operator("a".repeat(64)),
        ];
        for id in cases {
            let uri = id.uri();
            assert_eq!(Identity::parse_uri(&uri).expect("canonical uri parses"), id);
            assert_eq!(id.to_string(), uri);
            id.validate().expect("valid identity");
        }
        assert_eq!(Identity::Node(region("330000")).uri(), "cx://node/330000");
        assert_eq!(
            Identity::Department {
                region: region("320000"),
                dept: "samr".into()
            }
            .uri(),
            "cx://department/320000/samr"
        );
    }

    #[test]
    fn uri_rejects() {
        let long = format!("cx://operator/{}", "a".repeat(65));
        let rejects = [
            "",
            "cx://",
            "cx:/node/330000",
            "http://node/330000",
            "CX://node/330000",
            "cx://node/330000/",
            "cx://node/330100",
            "cx://node/990000",
            "cx://node/100001",
            "cx://publisher/990000",
            "cx://node/33000",
            "cx://node/３30000",
            "cx://node",
            "cx://Node/330000",
            "cx://hub/330000",
            "cx://department/330000",
            "cx://department/330000/",
            "cx://department/330000/a b",
            "cx://department/330000/a/b",
            "cx://department/330000/%41",
            "cx://operator/",
            "cx://operator/alice?x=1",
            "cx://operator/alice/",
            "cx://operator/ali@ce",
            long.as_str(),
        ];
        for uri in rejects {
            assert!(Identity::parse_uri(uri).is_err(), "{uri:?} must be rejected");
        }
        let bad = Identity::Operator("a/b".into());
        assert!(bad.validate().is_err());
    }
}

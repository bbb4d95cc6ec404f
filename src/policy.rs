//! Who may call what, and see which records. A verified identity grants nothing by itself: the
//! node's access policy decides. Built-in rules: the node's own region's publisher may Publish;
//! `cx://node/*` may Sync and Heads (only nodes, unless the policy grants more); operators may read
//! SyncStatus and Evaluate. The policy file (TOML) adds grants; a grant of Subscribe or Profile also says which
//! categories and origin regions it reaches (required: there is no silent "everything") and which
//! sharing and disclosure classes (default: `unconditional` and `public` only) and whether records
//! about natural persons are included (default: no). `SharedPolicy` reloads the file when it
//! changes and keeps the last good policy when the new one is malformed. Invariant: anything not
//! granted is refused.

use crate::feed::{GrantScope, Scope};
use crate::pki::{Identity, IssuerBindings, IssuerRule};
use crate::record::{Category, DisclosureClass, Region, SharingClass};
use serde::Deserialize;
use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, RwLock};

#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Rpc {
    Publish,
    Sync,
    Heads,
    Subscribe,
    Profile,
    Acknowledge,
    SyncStatus,
    Evaluate,
}

impl Rpc {
    fn parse(s: &str) -> Option<Rpc> {
        Some(match s {
            "Publish" => Rpc::Publish,
            "Sync" => Rpc::Sync,
            "Heads" => Rpc::Heads,
            "Subscribe" => Rpc::Subscribe,
            "Profile" => Rpc::Profile,
            "Acknowledge" => Rpc::Acknowledge,
            "SyncStatus" => Rpc::SyncStatus,
            "Evaluate" => Rpc::Evaluate,
            _ => return None,
        })
    }
}

#[derive(Debug, thiserror::Error)]
pub enum PolicyError {
    #[error("cannot read policy file {path}: {source}")]
    Read { path: String, source: std::io::Error },
    #[error("policy file {path}: {message}")]
    Parse { path: String, message: String },
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawPolicy {
    #[serde(default)]
    grant: Vec<RawGrant>,
    #[serde(default)]
    issuer: Vec<RawIssuer>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawIssuer {
    /// A PEM file with the CA certificate(s) that may issue `identities` (relative to the policy
    /// file); each must also be in `tls.ca` to be trusted at all.
    ca: PathBuf,
    /// Exact identity URIs, or prefixes ending in `*` (e.g. `cx://department/330000/*`).
    identities: Vec<String>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawGrant {
    /// An exact identity URI, or a prefix ending in `*` (e.g. `cx://department/330000/*`).
    identity: String,
    rpcs: Vec<String>,
    /// Category codes, or `["*"]`; required with Subscribe or Profile.
    #[serde(default)]
    categories: Option<Vec<String>>,
    /// Province codes of origins, or `["*"]`; required with Subscribe or Profile.
    #[serde(default)]
    regions: Option<Vec<String>>,
    #[serde(default)]
    sharing: Option<Vec<String>>,
    #[serde(default)]
    disclosure: Option<Vec<String>>,
    #[serde(default)]
    natural_persons: bool,
    /// Sync to identities other than nodes: they receive every record of the federation.
    #[serde(default)]
    full_replica: bool,
}

#[derive(Clone, Debug)]
struct Grant {
    pattern: String,
    rpcs: Vec<Rpc>,
    scope: GrantScope,
    /// Sync is granted to identities that are not nodes too (said explicitly in the file).
    full_replica: bool,
}

/// `["*"]` = every value (None); otherwise each value parsed, naming the first bad one.
fn list<T: Ord>(
    key: &str,
    values: Option<Vec<String>>,
    parse: impl Fn(&str) -> Option<T>,
    known: &str,
) -> Result<Option<BTreeSet<T>>, String> {
    let Some(values) = values else {
        return Err(format!(
            "{key} is required for a grant of Subscribe or Profile: list the values ({known}), or [\"*\"] for all"
        ));
    };
    if values.iter().any(|v| v == "*") {
        if values.len() > 1 {
            return Err(format!("{key}: \"*\" stands alone (it already means every value)"));
        }
        return Ok(None);
    }
    if values.is_empty() {
        return Err(format!(
            "{key} is empty: a grant that sees nothing is a mistake; remove the rpcs instead"
        ));
    }
    values
        .iter()
        .map(|v| parse(v).ok_or_else(|| format!("{key}: unknown value {v:?} (known: {known})")))
        .collect::<Result<BTreeSet<T>, String>>()
        .map(Some)
}

const CATEGORIES: &str =
    "administrative_licence, administrative_penalty, dishonest_list, red_list, credit_commitment, credit_repair";

impl Grant {
    fn matches(&self, uri: &str) -> bool {
        match self.pattern.strip_suffix('*') {
            Some(prefix) => uri.starts_with(prefix),
            None => uri == self.pattern,
        }
    }
}

#[derive(Clone, Debug)]
pub struct Policy {
    region: Region,
    grants: Vec<Grant>,
    issuers: Arc<IssuerBindings>,
}

impl Policy {
    /// The built-in rules only.
    pub fn builtin(region: Region) -> Policy {
        Policy {
            region,
            grants: Vec::new(),
            issuers: Arc::default(),
        }
    }

    pub fn load(region: Region, path: &Path) -> Result<Policy, PolicyError> {
        let text = std::fs::read_to_string(path).map_err(|source| PolicyError::Read {
            path: path.display().to_string(),
            source,
        })?;
        Policy::parse_in(region, &text, path.parent().unwrap_or(Path::new("."))).map_err(|message| PolicyError::Parse {
            path: path.display().to_string(),
            message,
        })
    }

    /// Parses a policy whose `[[issuer]] ca` files are relative to the working directory.
    pub fn parse(region: Region, text: &str) -> Result<Policy, String> {
        Policy::parse_in(region, text, Path::new("."))
    }

    /// Parses a policy whose `[[issuer]] ca` files are relative to `base` (the policy's directory).
    pub fn parse_in(region: Region, text: &str, base: &Path) -> Result<Policy, String> {
        let raw: RawPolicy = toml::from_str(text).map_err(|e| e.to_string())?;
        let issuers = Arc::new(parse_issuers(raw.issuer, base)?);
        let mut grants = Vec::with_capacity(raw.grant.len());
        for (i, g) in raw.grant.into_iter().enumerate() {
            if !g.identity.starts_with("cx://") {
                return Err(format!("grant[{i}].identity {:?} must start with cx://", g.identity));
            }
            if let Some(prefix) = g.identity.strip_suffix('*') {
                if prefix.contains('*') {
                    return Err(format!(
                        "grant[{i}].identity {:?}: only one trailing * is allowed",
                        g.identity
                    ));
                }
            } else {
                Identity::parse_uri(&g.identity).map_err(|e| format!("grant[{i}].identity: {e}"))?;
            }
            let rpcs = g
                .rpcs
                .iter()
                .map(|r| {
                    Rpc::parse(r).ok_or_else(|| {
                        format!("grant[{i}].rpcs: unknown rpc {r:?} (known: Publish, Sync, Heads, Subscribe, Profile, Acknowledge, SyncStatus, Evaluate)")
                    })
                })
                .collect::<Result<Vec<_>, _>>()?;
            // Sync streams every record of every origin, personal data included: a grant that may
            // reach anything but a node must say that it means a full replica.
            let syncs = rpcs.contains(&Rpc::Sync);
            let nodes_only = g.identity.starts_with("cx://node/");
            if syncs && !nodes_only && !g.full_replica {
                return Err(format!(
                    "grant[{i}]: Sync to {:?} would stream every record of the federation to identities that are not nodes; grant it to cx://node/... identities, or set full_replica = true if a full replica is meant",
                    g.identity
                ));
            }
            if g.full_replica && !syncs {
                return Err(format!("grant[{i}]: full_replica applies only to grants of Sync"));
            }
            let reads_data = rpcs.iter().any(|r| matches!(r, Rpc::Subscribe | Rpc::Profile));
            let scope = if reads_data {
                GrantScope {
                    categories: list(
                        &format!("grant[{i}].categories"),
                        g.categories,
                        Category::parse,
                        CATEGORIES,
                    )?,
                    regions: list(
                        &format!("grant[{i}].regions"),
                        g.regions,
                        |r| Region::parse(r).ok(),
                        "province codes such as 330000",
                    )?,
                    sharing: list(
                        &format!("grant[{i}].sharing"),
                        Some(g.sharing.unwrap_or_else(|| vec!["unconditional".into()])),
                        SharingClass::parse,
                        "unconditional, conditional, not_shared",
                    )?
                    .unwrap_or_else(|| {
                        [
                            SharingClass::Unconditional,
                            SharingClass::Conditional,
                            SharingClass::NotShared,
                        ]
                        .into()
                    }),
                    disclosure: list(
                        &format!("grant[{i}].disclosure"),
                        Some(g.disclosure.unwrap_or_else(|| vec!["public".into()])),
                        DisclosureClass::parse,
                        "public, limited, non_public",
                    )?
                    .unwrap_or_else(|| {
                        [
                            DisclosureClass::Public,
                            DisclosureClass::Limited,
                            DisclosureClass::NonPublic,
                        ]
                        .into()
                    }),
                    natural_persons: g.natural_persons,
                }
            } else {
                if g.categories.is_some()
                    || g.regions.is_some()
                    || g.sharing.is_some()
                    || g.disclosure.is_some()
                    || g.natural_persons
                {
                    return Err(format!(
                        "grant[{i}]: categories, regions, sharing, disclosure and natural_persons apply only to grants of Subscribe or Profile"
                    ));
                }
                GrantScope {
                    categories: Some(BTreeSet::new()),
                    regions: Some(BTreeSet::new()),
                    sharing: BTreeSet::new(),
                    disclosure: BTreeSet::new(),
                    natural_persons: false,
                }
            };
            grants.push(Grant {
                pattern: g.identity,
                rpcs,
                scope,
                full_replica: g.full_replica,
            });
        }
        Ok(Policy {
            region,
            grants,
            issuers,
        })
    }

    /// Which CA may issue which identity (empty: every CA in `tls.ca` may issue everything).
    pub fn issuers(&self) -> Arc<IssuerBindings> {
        self.issuers.clone()
    }

    pub fn allows(&self, who: &Identity, rpc: Rpc) -> bool {
        let builtin = match (who, rpc) {
            (Identity::Publisher(r), Rpc::Publish) => *r == self.region,
            (Identity::Node(_), Rpc::Sync | Rpc::Heads) => true,
            (Identity::Operator(_), Rpc::SyncStatus | Rpc::Evaluate) => true,
            _ => false,
        };
        if builtin {
            return true;
        }
        let uri = who.uri();
        let node = matches!(who, Identity::Node(_));
        self.grants
            .iter()
            .any(|g| g.rpcs.contains(&rpc) && g.matches(&uri) && (rpc != Rpc::Sync || node || g.full_replica))
    }

    /// What `who` may see through `rpc` (Subscribe, Profile): one grant scope per matching grant.
    /// Acknowledge sees what Subscribe does. Empty when nothing is granted.
    /// Why `who` may not call `rpc`, for the caller: what the built-in rules allow, and that a
    /// grant in the node's policy is the way to more.
    pub fn denial(&self, who: &Identity, rpc: Rpc) -> String {
        let region = self.region;
        let who_may = match rpc {
            Rpc::Publish => format!("only cx://publisher/{region} and identities granted Publish in the node's policy may publish to the node of region {region}"),
            Rpc::Sync | Rpc::Heads => "only nodes of the federation (cx://node/...) may, unless the node's policy grants it".to_string(),
            Rpc::SyncStatus | Rpc::Evaluate => format!("operators (cx://operator/...) may, and identities granted {rpc:?} in the node's policy"),
            Rpc::Subscribe | Rpc::Profile | Rpc::Acknowledge => format!("only identities granted {rpc:?} in the node's policy may"),
        };
        let verb = match rpc {
            Rpc::Publish => "publish".to_string(),
            Rpc::SyncStatus => "read sync status".to_string(),
            Rpc::Evaluate => "evaluate the regions' performance".to_string(),
            other => format!("call {other:?}"),
        };
        format!("{who} may not {verb}: {who_may}")
    }

    pub fn scope(&self, who: &Identity, rpc: Rpc) -> Scope {
        let rpc = if rpc == Rpc::Acknowledge { Rpc::Subscribe } else { rpc };
        let uri = who.uri();
        Scope {
            grants: self
                .grants
                .iter()
                .filter(|g| g.rpcs.contains(&rpc) && g.matches(&uri))
                .map(|g| g.scope.clone())
                .collect(),
        }
    }
}

/// The policy in force, reloaded from its file when that changes. Readers take the current
/// policy per request (or per step of a running subscription), so a reload applies to new and
/// running calls alike; `version` counts reloads, so a running call can tell it must re-plan.
/// `[[issuer]]` sections: each CA file read and fingerprinted, each pattern checked.
fn parse_issuers(raw: Vec<RawIssuer>, base: &Path) -> Result<IssuerBindings, String> {
    let mut rules = Vec::with_capacity(raw.len());
    for (i, r) in raw.into_iter().enumerate() {
        let path = if r.ca.is_absolute() {
            r.ca.clone()
        } else {
            base.join(&r.ca)
        };
        let certs = crate::pki::load_cert_chain(&path).map_err(|e| format!("issuer[{i}].ca: {e}"))?;
        if r.identities.is_empty() {
            return Err(format!(
                "issuer[{i}].identities is empty: list the identities (or prefixes ending in *) this CA may issue"
            ));
        }
        for pattern in &r.identities {
            let valid = match pattern.strip_suffix('*') {
                Some(prefix) => prefix.starts_with("cx://") && !prefix.contains('*'),
                None => Identity::parse_uri(pattern).is_ok(),
            };
            if !valid {
                return Err(format!(
                    "issuer[{i}].identities: {pattern:?} is neither a cx:// identity nor a cx:// prefix ending in one *"
                ));
            }
        }
        rules.push(IssuerRule {
            ca_file: r.ca.display().to_string(),
            cas: certs
                .iter()
                .map(|c| crate::pki::issuers::fingerprint(c.as_ref()))
                .collect(),
            patterns: r.identities,
        });
    }
    Ok(IssuerBindings::new(rules))
}

pub struct SharedPolicy {
    region: Region,
    path: Option<PathBuf>,
    current: RwLock<Arc<Policy>>,
    /// The text last loaded (or refused), so an unchanged or still-bad file is not re-judged.
    seen: Mutex<Option<String>>,
    version: AtomicU64,
}

impl SharedPolicy {
    /// A policy that never changes (the built-in rules, or a test's).
    pub fn fixed(policy: Policy) -> Arc<SharedPolicy> {
        Arc::new(SharedPolicy {
            region: policy.region,
            path: None,
            current: RwLock::new(Arc::new(policy)),
            seen: Mutex::new(None),
            version: AtomicU64::new(0),
        })
    }

    /// Loads `path` (refusing a bad one: a node does not start on a policy it cannot read).
    pub fn load(region: Region, path: &Path) -> Result<Arc<SharedPolicy>, PolicyError> {
        let policy = Policy::load(region, path)?;
        let text = std::fs::read_to_string(path).ok();
        Ok(Arc::new(SharedPolicy {
            region,
            path: Some(path.to_path_buf()),
            current: RwLock::new(Arc::new(policy)),
            seen: Mutex::new(text),
            version: AtomicU64::new(0),
        }))
    }

    pub fn current(&self) -> Arc<Policy> {
        self.current.read().expect("policy lock").clone()
    }

    /// Changes each time a new policy takes effect.
    pub fn version(&self) -> u64 {
        self.version.load(Ordering::Acquire)
    }

    /// Re-reads the file; a changed, valid policy takes effect (true). A malformed one is refused
    /// with the key and the fix, and the last good policy stays in force.
    pub fn reload_if_changed(&self) -> Result<bool, PolicyError> {
        let Some(path) = &self.path else {
            return Ok(false);
        };
        let text = std::fs::read_to_string(path).map_err(|source| PolicyError::Read {
            path: path.display().to_string(),
            source,
        })?;
        let mut seen = self.seen.lock().expect("policy seen lock");
        if seen.as_deref() == Some(text.as_str()) {
            return Ok(false);
        }
        *seen = Some(text.clone());
        let base = path.parent().unwrap_or(Path::new("."));
        let policy = Policy::parse_in(self.region, &text, base).map_err(|message| PolicyError::Parse {
            path: path.display().to_string(),
            message,
        })?;
        *self.current.write().expect("policy lock") = Arc::new(policy);
        self.version.fetch_add(1, Ordering::AcqRel);
        Ok(true)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn zj() -> Region {
        Region::parse("330000").expect("province")
    }

    #[test]
    fn builtin_rules() {
        let p = Policy::builtin(zj());
        let own = Identity::Publisher(zj());
        let other = Identity::Publisher(Region::parse("320000").expect("province"));
        let dept = Identity::Department {
            region: zj(),
            dept: "amr".to_string(),
        };
        assert!(p.allows(&own, Rpc::Publish));
        assert!(!p.allows(&other, Rpc::Publish));
        assert!(!p.allows(&dept, Rpc::Publish));
        assert!(!p.allows(&Identity::Node(zj()), Rpc::Publish));
        assert!(p.allows(&Identity::Node(zj()), Rpc::Sync));
    }

    #[test]
    fn file_grants_add_rights() {
        let p = Policy::parse(
            zj(),
            r#"
            [[grant]]
            identity = "cx://department/330000/*"
            rpcs = ["Subscribe", "Profile"]
            categories = ["*"]
            regions = ["*"]
            [[grant]]
            identity = "cx://operator/alice"
            rpcs = ["Publish"]
            "#,
        )
        .expect("valid policy");
        let dept = Identity::Department {
            region: zj(),
            dept: "amr".to_string(),
        };
        assert!(p.allows(&dept, Rpc::Subscribe));
        assert!(!p.allows(&dept, Rpc::Publish));
        assert!(p.allows(&Identity::Operator("alice".to_string()), Rpc::Publish));
        assert!(!p.allows(&Identity::Operator("bob".to_string()), Rpc::Publish));
    }

    #[test]
    fn sync_reaches_identities_other_than_nodes_only_as_an_explicit_full_replica() {
        let dept = Identity::Department {
            region: zj(),
            dept: "amr".to_string(),
        };
        for pattern in ["cx://department/330000/*", "cx://*", "cx://department/330000/amr"] {
            let text = format!("[[grant]]\nidentity = \"{pattern}\"\nrpcs = [\"Sync\"]\n");
            let e = Policy::parse(zj(), &text).expect_err("a department wildcard grant of Sync");
            assert!(e.contains("full_replica = true") && e.contains("grant[0]"), "{e}");
        }
        let p = Policy::parse(
            zj(),
            "[[grant]]\nidentity = \"cx://department/330000/*\"\nrpcs = [\"Sync\"]\nfull_replica = true\n",
        )
        .expect("an explicit full replica");
        assert!(p.allows(&dept, Rpc::Sync));
        let p = Policy::parse(
            zj(),
            "[[grant]]\nidentity = \"cx://node/*\"\nrpcs = [\"Sync\", \"Heads\"]\n",
        )
        .expect("nodes only");
        assert!(!p.allows(&dept, Rpc::Sync));
        let e = Policy::parse(
            zj(),
            "[[grant]]\nidentity = \"cx://node/*\"\nrpcs = [\"Heads\"]\nfull_replica = true\n",
        )
        .expect_err("full_replica without Sync");
        assert!(e.contains("only to grants of Sync"), "{e}");
    }

    #[test]
    fn issuer_sections_are_checked_and_name_the_problem() {
        let dir = tempfile::tempdir().expect("tempdir");
        crate::pki::init_ca(dir.path(), "zhejiang", 30).expect("ca");
        let base = dir.path();
        let p = Policy::parse_in(
            zj(),
            "[[issuer]]\nca = \"ca.pem\"\nidentities = [\"cx://node/330000\", \"cx://department/330000/*\"]\n",
            base,
        )
        .expect("valid issuer section");
        assert!(!p.issuers().is_empty());
        let e = Policy::parse_in(
            zj(),
            "[[issuer]]\nca = \"missing.pem\"\nidentities = [\"cx://node/330000\"]\n",
            base,
        )
        .expect_err("missing ca file");
        assert!(e.contains("issuer[0].ca") && e.contains("missing.pem"), "{e}");
        let e = Policy::parse_in(zj(), "[[issuer]]\nca = \"ca.pem\"\nidentities = []\n", base).expect_err("empty");
        assert!(e.contains("issuer[0].identities is empty"), "{e}");
        let e = Policy::parse_in(
            zj(),
            "[[issuer]]\nca = \"ca.pem\"\nidentities = [\"node/330000\"]\n",
            base,
        )
        .expect_err("bad pattern");
        assert!(e.contains("issuer[0].identities") && e.contains("node/330000"), "{e}");
    }

    #[test]
    fn bad_policies_name_the_problem() {
        let e = Policy::parse(zj(), "[[grant]]\nidentity = \"cx://node/330000\"\nrpcs = [\"Drop\"]\n")
            .expect_err("unknown rpc");
        assert!(e.contains("grant[0].rpcs") && e.contains("Drop"), "{e}");
        let e = Policy::parse(zj(), "[[grant]]\nidentity = \"node/330000\"\nrpcs = []\n").expect_err("bad identity");
        assert!(e.contains("must start with cx://"), "{e}");
        assert!(Policy::parse(zj(), "[[grants]]\n").is_err(), "unknown keys are refused");
        let e = Policy::parse(
            zj(),
            "[[grant]]\nidentity = \"cx://department/330000/*\"\nrpcs = [\"Subscribe\"]\nregions = [\"*\"]\n",
        )
        .expect_err("no categories");
        assert!(e.contains("grant[0].categories is required"), "{e}");
        let e = Policy::parse(
            zj(),
            "[[grant]]\nidentity = \"cx://department/330000/*\"\nrpcs = [\"Profile\"]\ncategories = [\"fines\"]\nregions = [\"*\"]\n",
        )
        .expect_err("bad category");
        assert!(e.contains("grant[0].categories") && e.contains("fines"), "{e}");
        let e = Policy::parse(
            zj(),
            "[[grant]]\nidentity = \"cx://department/330000/*\"\nrpcs = [\"Profile\"]\ncategories = [\"*\"]\nregions = [\"339999\"]\n",
        )
        .expect_err("bad region");
        assert!(e.contains("grant[0].regions"), "{e}");
        let e = Policy::parse(
            zj(),
            "[[grant]]\nidentity = \"cx://operator/a\"\nrpcs = [\"Heads\"]\ncategories = [\"*\"]\n",
        )
        .expect_err("scope on a non-data grant");
        assert!(e.contains("apply only to grants of Subscribe or Profile"), "{e}");
    }

    fn dept(region: Region, id: &str) -> Identity {
        Identity::Department {
            region,
            dept: id.to_string(),
        }
    }

    #[test]
    fn data_scopes_default_to_the_narrowest_classes_and_never_merge() {
        let js = Region::parse("320000").expect("province");
        let p = Policy::parse(
            zj(),
            r#"
            [[grant]]
            identity = "cx://department/330000/*"
            rpcs = ["Subscribe"]
            categories = ["administrative_penalty"]
            regions = ["330000"]
            [[grant]]
            identity = "cx://department/330000/amr"
            rpcs = ["Subscribe", "Profile"]
            categories = ["administrative_licence"]
            regions = ["320000"]
            sharing = ["*"]
            natural_persons = true
            "#,
        )
        .expect("valid policy");
        let amr = p.scope(&dept(zj(), "amr"), Rpc::Subscribe);
        assert_eq!(amr.grants.len(), 2);
        assert_eq!(amr.grants[0].sharing, [SharingClass::Unconditional].into());
        assert_eq!(amr.grants[0].disclosure, [DisclosureClass::Public].into());
        assert!(!amr.grants[0].natural_persons);
        assert_eq!(amr.grants[1].sharing.len(), 3, "* is every class");
        let other = p.scope(&dept(zj(), "tax"), Rpc::Profile);
        assert!(other.is_empty(), "the wildcard grant gives tax Subscribe only");
        assert!(p.scope(&dept(js, "amr"), Rpc::Subscribe).is_empty(), "default deny");
        assert_eq!(
            p.scope(&dept(zj(), "tax"), Rpc::Acknowledge),
            p.scope(&dept(zj(), "tax"), Rpc::Subscribe),
            "a receipt covers what a feed shows"
        );
    }

    #[test]
    fn a_shared_policy_reloads_and_keeps_the_last_good_one() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("policy.toml");
        let grant = |rpcs: &str| {
            format!("[[grant]]\nidentity = \"cx://department/330000/*\"\nrpcs = [{rpcs}]\ncategories = [\"*\"]\nregions = [\"*\"]\n")
        };
        std::fs::write(&path, grant("\"Subscribe\"")).expect("write");
        let shared = SharedPolicy::load(zj(), &path).expect("load");
        let who = dept(zj(), "amr");
        assert!(shared.current().allows(&who, Rpc::Subscribe));
        assert!(!shared.current().allows(&who, Rpc::Profile));
        assert!(!shared.reload_if_changed().expect("unchanged"));
        std::fs::write(&path, grant("\"Subscribe\", \"Profile\"")).expect("write");
        assert!(shared.reload_if_changed().expect("changed"));
        assert_eq!(shared.version(), 1);
        assert!(shared.current().allows(&who, Rpc::Profile));
        std::fs::write(&path, grant("\"Subscribe\", \"Teleport\"")).expect("write");
        let e = shared.reload_if_changed().expect_err("malformed");
        assert!(e.to_string().contains("Teleport"), "{e}");
        assert!(
            shared.current().allows(&who, Rpc::Profile),
            "the last good policy stays"
        );
        assert_eq!(shared.version(), 1);
        assert!(!shared.reload_if_changed().expect("still bad, already refused"));
    }
}

//! Who may call what. A verified identity grants nothing by itself: the node's access policy
//! decides. Built-in rules: the node's own region's publisher may Publish; `cx://node/*` may Sync and
//! Heads (only nodes, unless the policy grants more); operators may read SyncStatus. The policy file (TOML) adds grants. Invariant: anything not
//! granted is refused.

use crate::pki::Identity;
use crate::record::Region;
use serde::Deserialize;
use std::path::Path;

#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Rpc {
    Publish,
    Sync,
    Heads,
    Subscribe,
    Profile,
    Acknowledge,
    SyncStatus,
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
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawGrant {
    /// An exact identity URI, or a prefix ending in `*` (e.g. `cx://department/330000/*`).
    identity: String,
    rpcs: Vec<String>,
}

#[derive(Clone, Debug)]
struct Grant {
    pattern: String,
    rpcs: Vec<Rpc>,
}

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
}

impl Policy {
    /// The built-in rules only.
    pub fn builtin(region: Region) -> Policy {
        Policy {
            region,
            grants: Vec::new(),
        }
    }

    pub fn load(region: Region, path: &Path) -> Result<Policy, PolicyError> {
        let text = std::fs::read_to_string(path).map_err(|source| PolicyError::Read {
            path: path.display().to_string(),
            source,
        })?;
        Policy::parse(region, &text).map_err(|message| PolicyError::Parse {
            path: path.display().to_string(),
            message,
        })
    }

    pub fn parse(region: Region, text: &str) -> Result<Policy, String> {
        let raw: RawPolicy = toml::from_str(text).map_err(|e| e.to_string())?;
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
                        format!("grant[{i}].rpcs: unknown rpc {r:?} (known: Publish, Sync, Heads, Subscribe, Profile, Acknowledge, SyncStatus)")
                    })
                })
                .collect::<Result<Vec<_>, _>>()?;
            grants.push(Grant {
                pattern: g.identity,
                rpcs,
            });
        }
        Ok(Policy { region, grants })
    }

    pub fn allows(&self, who: &Identity, rpc: Rpc) -> bool {
        let builtin = match (who, rpc) {
            (Identity::Publisher(r), Rpc::Publish) => *r == self.region,
            (Identity::Node(_), Rpc::Sync | Rpc::Heads) => true,
            (Identity::Operator(_), Rpc::SyncStatus) => true,
            _ => false,
        };
        if builtin {
            return true;
        }
        let uri = who.uri();
        self.grants.iter().any(|g| g.rpcs.contains(&rpc) && g.matches(&uri))
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
    fn bad_policies_name_the_problem() {
        let e = Policy::parse(zj(), "[[grant]]\nidentity = \"cx://node/330000\"\nrpcs = [\"Drop\"]\n")
            .expect_err("unknown rpc");
        assert!(e.contains("grant[0].rpcs") && e.contains("Drop"), "{e}");
        let e = Policy::parse(zj(), "[[grant]]\nidentity = \"node/330000\"\nrpcs = []\n").expect_err("bad identity");
        assert!(e.contains("must start with cx://"), "{e}");
        assert!(Policy::parse(zj(), "[[grants]]\n").is_err(), "unknown keys are refused");
    }
}

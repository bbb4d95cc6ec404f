//! What a department may see, as its access policy grants it: one `GrantScope` per grant that
//! matches its identity for the RPC. Grants are never merged field by field (penalties from one
//! region and licences from another must not become penalties from both): a record is admitted
//! when one grant admits all of it.

use super::Facts;
use crate::record::{Category, DisclosureClass, Region, SharingClass};
use std::collections::BTreeSet;

/// One grant's reach. `None` = every category / every region.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct GrantScope {
    pub categories: Option<BTreeSet<Category>>,
    pub regions: Option<BTreeSet<Region>>,
    pub sharing: BTreeSet<SharingClass>,
    pub disclosure: BTreeSet<DisclosureClass>,
    /// Records about natural persons (resident-ID subjects) only where this is set.
    pub natural_persons: bool,
}

impl GrantScope {
    pub fn admits(&self, f: &Facts) -> bool {
        self.categories.as_ref().is_none_or(|c| c.contains(&f.category))
            && self.regions.as_ref().is_none_or(|r| r.contains(&f.origin))
            && self.sharing.contains(&f.sharing)
            && self.disclosure.contains(&f.disclosure)
            && (self.natural_persons || !f.natural_person())
    }

    fn canonical(&self) -> String {
        let list = |v: Vec<&str>| v.join("+");
        format!(
            "categories={};regions={};sharing={};disclosure={};natural_persons={}",
            self.categories
                .as_ref()
                .map_or("*".to_string(), |c| list(c.iter().map(|c| c.code()).collect())),
            self.regions.as_ref().map_or("*".to_string(), |r| r
                .iter()
                .map(|r| r.to_string())
                .collect::<Vec<_>>()
                .join("+")),
            list(self.sharing.iter().map(|s| s.code()).collect()),
            list(self.disclosure.iter().map(|d| d.code()).collect()),
            self.natural_persons
        )
    }
}

/// Everything one caller may see through one RPC; empty = nothing.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Scope {
    pub grants: Vec<GrantScope>,
}

impl Scope {
    pub fn is_empty(&self) -> bool {
        self.grants.is_empty()
    }

    pub fn admits(&self, f: &Facts) -> bool {
        self.grants.iter().any(|g| g.admits(f))
    }

    pub fn may_see_category(&self, c: Category) -> bool {
        self.grants
            .iter()
            .any(|g| g.categories.as_ref().is_none_or(|s| s.contains(&c)))
    }

    pub fn may_see_region(&self, r: Region) -> bool {
        self.grants
            .iter()
            .any(|g| g.regions.as_ref().is_none_or(|s| s.contains(&r)))
    }

    pub fn may_see_natural_persons(&self) -> bool {
        self.grants.iter().any(|g| g.natural_persons)
    }

    /// A canonical text of the scope (grant order does not matter).
    pub fn canonical(&self) -> String {
        let mut grants: Vec<String> = self.grants.iter().map(GrantScope::canonical).collect();
        grants.sort();
        grants.dedup();
        grants.join("|")
    }
}

//! What the cluster keeps in etcd, under `[cluster] prefix` (default
//! "/baton/"). Every key but none lives under its member's lease, so a
//! member that dies takes its keys with it:
//!
//! - `members/ID`   [`MemberRecord`]: what the member is and can do (status, takeover rules)
//! - `alive/ID`     a counter the member bumps every heartbeat (fast liveness)
//! - `owners/NAME`  [`OwnerRecord`]: who holds the instance (created only if absent)
//! - `handover/NAME` [`Handover`]: written with a planned release, names the taker
//! - `conns/NAME`   [`ConnRecord`]: the owner's client connections, for a
//!   taker's tickle ACKs (a taker keeps the last one it saw after it went)
use baton_config::{InstanceName, MemberId};
use serde::{Deserialize, Serialize};
use std::collections::{BTreeMap, BTreeSet};

#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct MemberRecord {
    pub member: MemberId,
    pub lease: i64,
    /// Digest of each instance's definition in this member's config.
    pub digests: BTreeMap<InstanceName, String>,
    /// Instances this member could place now (one of their ports is up).
    pub hostable: BTreeSet<InstanceName>,
    /// Instances it holds.
    pub held: BTreeSet<InstanceName>,
    /// It is shutting down: releasing, not a candidate for anything.
    pub leaving: bool,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct OwnerRecord {
    pub member: MemberId,
    pub lease: i64,
    /// The owner's digest of the instance's definition: a taker with
    /// another one does not take it over.
    #[serde(default)]
    pub digest: String,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Handover {
    pub from: MemberId,
    pub to: MemberId,
}

/// A client connection to an instance's address (the address is the
/// instance's, so it is not repeated).
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
pub struct Conn {
    pub local_port: u16,
    pub remote: std::net::IpAddr,
    pub remote_port: u16,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ConnRecord {
    pub member: MemberId,
    pub conns: Vec<Conn>,
}

/// The key layout of one cluster.
#[derive(Clone, Debug)]
pub struct Keys {
    pub prefix: String,
}

/// A key of the cluster, parsed.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Key {
    Member(MemberId),
    Alive(MemberId),
    Owner(InstanceName),
    Handover(InstanceName),
    Conns(InstanceName),
}

impl Keys {
    pub fn member(&self, id: &MemberId) -> String {
        format!("{}members/{id}", self.prefix)
    }
    pub fn alive(&self, id: &MemberId) -> String {
        format!("{}alive/{id}", self.prefix)
    }
    pub fn owner(&self, instance: &InstanceName) -> String {
        format!("{}owners/{instance}", self.prefix)
    }
    pub fn handover(&self, instance: &InstanceName) -> String {
        format!("{}handover/{instance}", self.prefix)
    }
    pub fn conns(&self, instance: &InstanceName) -> String {
        format!("{}conns/{instance}", self.prefix)
    }

    /// A key under the prefix, or None for anything else (ignored).
    pub fn parse(&self, key: &str) -> Option<Key> {
        let rest = key.strip_prefix(&self.prefix)?;
        let (kind, name) = rest.split_once('/')?;
        if name.is_empty() || name.contains('/') {
            return None;
        }
        Some(match kind {
            "members" => Key::Member(name.into()),
            "alive" => Key::Alive(name.into()),
            "owners" => Key::Owner(name.into()),
            "handover" => Key::Handover(name.into()),
            "conns" => Key::Conns(name.into()),
            _ => return None,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_round_trip_and_strangers_are_ignored() {
        let k = Keys {
            prefix: "/baton/".into(),
        };
        assert_eq!(
            k.parse(&k.owner(&"iscsi-a".into())),
            Some(Key::Owner("iscsi-a".into()))
        );
        assert_eq!(
            k.parse(&k.member(&"gw1".into())),
            Some(Key::Member("gw1".into()))
        );
        assert_eq!(
            k.parse(&k.alive(&"gw1".into())),
            Some(Key::Alive("gw1".into()))
        );
        assert_eq!(
            k.parse(&k.handover(&"x".into())),
            Some(Key::Handover("x".into()))
        );
        assert_eq!(k.parse(&k.conns(&"x".into())), Some(Key::Conns("x".into())));
        for stranger in [
            "/other/owners/a",
            "/baton/owners/",
            "/baton/owners/a/b",
            "/baton/zz/a",
        ] {
            assert_eq!(k.parse(stranger), None, "{stranger}");
        }
    }
}

//! Why an instance is not placed where it could be: the cluster's word
//! ([`ClusterView`], [`FenceCause`]) and each port's refusal ([`Reason`]).
use baton_config::model::{InstanceName, MemberId};
use std::collections::{BTreeMap, BTreeSet};
use std::fmt;
use std::time::Duration;

/// the member holding an instance's owner key may place it.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct ClusterView {
    /// Instances whose owner key this member holds.
    pub held: BTreeSet<InstanceName>,
    /// Why this member may not hold the others now (absent: not-claimed).
    pub withheld: BTreeMap<InstanceName, Reason>,
}

impl ClusterView {
    /// None when `instance` may be placed here.
    pub fn refusal(&self, instance: &str) -> Option<Reason> {
        if self.held.contains(instance) {
            return None;
        }
        Some(
            self.withheld
                .get(instance)
                .cloned()
                .unwrap_or(Reason::NotClaimed),
        )
    }
}

/// Why a member holds nothing (its addresses are dropped).
#[derive(Clone, Copy, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum FenceCause {
    /// etcd did not answer a keepalive before the owner's deadline.
    NoQuorum,
    /// The lease is gone (expired, or revoked by a member that found this one silent).
    LeaseLost,
}

impl fmt::Display for FenceCause {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            FenceCause::NoQuorum => "no quorum",
            FenceCause::LeaseLost => "lease lost",
        })
    }
}

#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(tag = "reason", rename_all = "kebab-case")]
pub enum Reason {
    /// baton has never seen this port (missing device).
    PortMissing,
    /// Link down (held down or failed).
    PortDown,
    /// Link up, but not yet for `hold_up` (or `failback_delay` for a failback).
    PortSettling {
        #[serde(with = "millis")]
        remaining: Duration,
    },
    /// The port reaches none of the instance's networks.
    DifferentNetwork,
    /// The port reaches the network but serves no subnet holding the address.
    SubnetMismatch,
    VlanNotAllowed {
        vlan: u16,
    },
    /// Another live member holds the instance's owner key.
    ClaimedByMember {
        member: MemberId,
    },
    /// Nobody holds it and this member is not the one to claim it now (a
    /// member before it in `members` is alive, or a takeover waits out the
    /// old owner's deadline).
    NotClaimed,
    /// A `[health]` check it needs failed: no port of this member serves it.
    CheckFailed {
        check: String,
    },
    /// No port here can serve it (each failed or missing) and no other
    /// member of its list can host it: it stays.
    NoMemberCanHost,
    /// No port here can serve it (each failed or missing): on a single
    /// host it stays where it is, there being nowhere else to go.
    NoLocalPort,
    /// This member fenced itself: it holds nothing until etcd answers again.
    Fenced {
        cause: FenceCause,
    },
    /// A member with a different definition of the instance is alive: no takeover.
    ConfigDiffers {
        member: MemberId,
    },
    /// Another device answered the RFC 5227 / DAD probe on this port.
    AddressInUse,
    /// The last move to this port failed; it is tried again after a pause.
    RetryBackoff {
        #[serde(with = "millis")]
        remaining: Duration,
    },
    AddressCapReached {
        cap: u32,
    },
    MacCapReached {
        cap: u32,
    },
}

/// A `Duration` as whole milliseconds in JSON.
mod millis {
    use serde::{Deserialize as _, Deserializer, Serializer};
    use std::time::Duration;

    pub fn serialize<S: Serializer>(d: &Duration, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_u64(d.as_millis() as u64)
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Duration, D::Error> {
        Ok(Duration::from_millis(u64::deserialize(d)?))
    }
}

impl Reason {
    /// Short stable name for logs, status and metrics labels.
    pub fn name(&self) -> &'static str {
        match self {
            Reason::PortMissing => "port-missing",
            Reason::PortDown => "port-down",
            Reason::PortSettling { .. } => "port-settling",
            Reason::DifferentNetwork => "different-network",
            Reason::SubnetMismatch => "subnet-mismatch",
            Reason::VlanNotAllowed { .. } => "vlan-not-allowed",
            Reason::ClaimedByMember { .. } => "claimed-by-member",
            Reason::NotClaimed => "not-claimed",
            Reason::NoMemberCanHost => "no-member-can-host",
            Reason::NoLocalPort => "no-local-port",
            Reason::CheckFailed { .. } => "check-failed",
            Reason::Fenced { .. } => "fenced",
            Reason::ConfigDiffers { .. } => "config-differs",
            Reason::AddressInUse => "address-in-use",
            Reason::RetryBackoff { .. } => "retry-backoff",
            Reason::AddressCapReached { .. } => "address-cap-reached",
            Reason::MacCapReached { .. } => "mac-cap-reached",
        }
    }
}

impl fmt::Display for Reason {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Reason::PortSettling { remaining } | Reason::RetryBackoff { remaining } => {
                write!(f, "{} ({}ms left)", self.name(), remaining.as_millis())
            }
            Reason::VlanNotAllowed { vlan } => write!(f, "{} (VLAN {vlan})", self.name()),
            Reason::ClaimedByMember { member } | Reason::ConfigDiffers { member } => {
                write!(f, "{} (member {member})", self.name())
            }
            Reason::Fenced { cause } => write!(f, "{} ({cause})", self.name()),
            Reason::CheckFailed { check } => write!(f, "{} ({check})", self.name()),
            Reason::AddressCapReached { cap } | Reason::MacCapReached { cap } => {
                write!(f, "{} (cap {cap})", self.name())
            }
            _ => f.write_str(self.name()),
        }
    }
}

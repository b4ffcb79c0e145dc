//! The control protocol between `baton` CLI commands and the daemon: one
//! JSON object per line over a root-only Unix socket. Version 1.
pub use crate::decide::{MoveKind, PortCondition, Reason};
use baton_config::{InstanceName, MemberId, PortName};
use serde::{Deserialize, Serialize};

pub const VERSION: u32 = 1;
pub const DEFAULT_SOCKET: &str = "/run/baton/baton.sock";

#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(tag = "cmd", rename_all = "lowercase")]
pub enum Request {
    Status,
    Move {
        instance: InstanceName,
        port: PortName,
    },
    /// Planned handover to another cluster member.
    Handover {
        instance: InstanceName,
        member: MemberId,
    },
    Reload,
    Events,
}

#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct Envelope<T> {
    pub v: u32,
    #[serde(flatten)]
    pub body: T,
}

#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(tag = "result", rename_all = "lowercase")]
pub enum Response {
    Status(Status),
    Done { message: String },
    Error { message: String },
}

#[derive(Clone, Debug, Default, Serialize, Deserialize)]
pub struct Status {
    pub config: String,
    pub uptime_ms: u64,
    pub ports: Vec<PortStatus>,
    pub instances: Vec<InstanceStatus>,
    #[serde(default)]
    pub cluster: Option<ClusterStatus>,
    /// The `[health]` checks.
    #[serde(default)]
    pub checks: Vec<CheckStatus>,
}

impl Status {
    /// Keeps only `names` of the instances; an unknown name is an error
    /// (nothing is printed of a status that silently lacks it).
    pub fn only(&mut self, names: &[InstanceName]) -> anyhow::Result<()> {
        if let Some(missing) = names
            .iter()
            .find(|n| !self.instances.iter().any(|i| i.name == **n))
        {
            let known: Vec<String> = self.instances.iter().map(|i| i.name.to_string()).collect();
            anyhow::bail!("no instance {missing}; instances: {}", known.join(", "));
        }
        self.instances.retain(|i| names.contains(&i.name));
        Ok(())
    }
}

/// A `[health]` check: its verdict, and what it saw (the links it watches,
/// or its probe's last observation).
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct CheckStatus {
    pub name: String,
    /// links, pidfile, process, tcp or exec.
    #[serde(default)]
    pub kind: String,
    pub ok: bool,
    /// A probe that has not observed yet (neither passing nor failed).
    #[serde(default)]
    pub pending: bool,
    /// A probe's verdict since (the daemon's clock, ms).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub since_ms: Option<u64>,
    /// A probe's last observation ("pid 412 exited", "refused").
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub detail: Option<String>,
    #[serde(default)]
    pub links: Vec<LinkStatus>,
}

/// A watched link's state, read as a port's is (hold timers).
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct LinkStatus {
    pub name: String,
    pub state: PortCondition,
}

/// This member's place in the cluster.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct ClusterStatus {
    pub member: MemberId,
    pub lease: Option<i64>,
    /// Why it holds nothing now.
    pub fenced: Option<crate::decide::FenceCause>,
    /// Until its deadline (daemon and dataplane), ms; 0 when passed.
    pub deadline_left_ms: u64,
    pub members: Vec<MemberStatus>,
    /// instance -> the member holding it.
    pub owners: std::collections::BTreeMap<InstanceName, MemberId>,
}

/// Another member (or this one) as the cluster sees it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct MemberStatus {
    pub id: MemberId,
    /// Its alive counter moved within dead_after.
    pub alive: bool,
    /// Since its alive counter last moved (ms).
    pub silent_ms: Option<u64>,
    /// Its definitions of the instances this member knows are the same.
    pub digests_match: bool,
    pub held: Vec<InstanceName>,
    /// The instances it could place now (one of their ports is up).
    #[serde(default)]
    pub hostable: Vec<InstanceName>,
    pub leaving: bool,
}

#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct PortStatus {
    pub name: PortName,
    pub ifindex: Option<u32>,
    /// What the engine makes of it.
    pub state: PortCondition,
    /// What the kernel says.
    pub link: LinkCondition,
    /// Milliseconds since the link last changed.
    pub since_ms: u64,
    /// Frames seen by the dataplane at ingress.
    pub rx_frames: u64,
}

#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct InstanceStatus {
    pub name: InstanceName,
    pub address: String,
    pub ports: Vec<PortName>,
    pub owner: Option<PortName>,
    /// Why it is not where the engine would like it (no eligible port), per port.
    pub refused: Vec<Refusal>,
    pub last_move: Option<MoveRecord>,
    /// The last repair baton made to it (drift another tool caused).
    pub last_repair: Option<RepairRecord>,
    /// An error reconciling it, retried with backoff (None when healthy).
    pub error: Option<String>,
    /// The last time another host claimed its address while baton held it.
    pub conflict: Option<ConflictRecord>,
    /// Per port: frames addressed to it and ms since the last one.
    pub traffic: Vec<PortTraffic>,
    /// In a cluster: the member holding its owner key.
    #[serde(default)]
    pub cluster_owner: Option<MemberId>,
    /// In a cluster: why this member may not hold it now.
    #[serde(default)]
    pub withheld: Option<Reason>,
    /// Why no port here serves it as it should: a check it needs failed
    /// (`check-failed`), or, in a cluster, nothing here can serve it and no
    /// member can take it (`no-member-can-host`).
    #[serde(default)]
    pub unserved: Option<Reason>,
}

/// One port's refusal of an instance.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Refusal {
    pub port: PortName,
    #[serde(flatten)]
    pub reason: Reason,
}

impl std::fmt::Display for Refusal {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}: {}", self.port, self.reason)
    }
}

#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct PortTraffic {
    pub port: PortName,
    pub rx_packets: u64,
    pub last_seen_ms: Option<u64>,
}

#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct MoveRecord {
    pub from: Option<PortName>,
    pub to: PortName,
    pub kind: MoveKind,
    /// Milliseconds since the daemon started.
    pub at_ms: u64,
    /// How long the move itself took, in microseconds.
    pub took_us: u64,
    /// Sockets whose retransmission backoff the move ended (RFC 6069), and
    /// the ICMPs that took; None until the revert has run (or when off).
    #[serde(default)]
    pub revived_sockets: Option<u64>,
    #[serde(default)]
    pub revert_icmps: Option<u64>,
    /// After a takeover: the old owner's client connections sent tickle ACKs.
    #[serde(default)]
    pub tickled: Option<u64>,
}

/// What `baton events` follows.
#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(tag = "event", rename_all = "kebab-case")]
pub enum Event {
    Port {
        at_ms: u64,
        port: PortName,
        link: LinkCondition,
        state: PortCondition,
    },
    Move {
        at_ms: u64,
        instance: InstanceName,
        from: Option<PortName>,
        to: PortName,
        kind: MoveKind,
        took_us: u64,
    },
    /// baton found the kernel differing from what it wants, and fixed it.
    Repaired {
        at_ms: u64,
        instance: InstanceName,
        what: Repair,
        detail: String,
    },
    /// Reconciling an instance failed (`attempts` times in a row);
    /// retried after `retry_ms`.
    RepairFailed {
        at_ms: u64,
        instance: InstanceName,
        error: String,
        #[serde(default)]
        attempts: u32,
        retry_ms: u64,
    },
    /// Another host claimed an address baton holds (RFC 5227 2.4).
    Conflict {
        at_ms: u64,
        instance: InstanceName,
        /// The port the claim arrived on.
        port: PortName,
        /// The claimant's MAC.
        by: String,
        /// baton answered with an announcement (at most one per 10 s).
        defended: bool,
    },
    /// A move ended the retransmission backoff of the sockets on the
    /// instance's address (RFC 6069): how many, with how many ICMPs.
    /// A takeover's tickle ACKs to the old owner's client connections.
    Tickled {
        at_ms: u64,
        instance: InstanceName,
        connections: u64,
        acks: u64,
    },
    Revived {
        at_ms: u64,
        instance: InstanceName,
        sockets: u64,
        icmps: u64,
        /// Sockets still backed off after the last round.
        left: u64,
    },
    /// This follower read too slowly and the daemon dropped `missed`
    /// events for it (the others were not held up): `baton status` shows
    /// the state now.
    Missed {
        missed: u64,
    },
    /// Events may have been missed (netlink overrun, monitor restarted):
    /// baton re-read the kernel's state.
    Resync {
        at_ms: u64,
        reason: String,
    },
    Refused {
        at_ms: u64,
        instance: InstanceName,
        port: PortName,
        #[serde(flatten)]
        reason: Reason,
    },
    MoveFailed {
        at_ms: u64,
        instance: InstanceName,
        to: PortName,
        /// The move's kind (absent from daemons before it was added).
        #[serde(default, skip_serializing_if = "Option::is_none")]
        kind: Option<MoveKind>,
        error: String,
    },
    Reload {
        at_ms: u64,
        ok: bool,
        message: String,
    },
    /// This member took the instance's owner key (`from`: the member that
    /// handed it over).
    Claimed {
        at_ms: u64,
        instance: InstanceName,
        from: Option<MemberId>,
    },
    /// This member let the instance go (to `to`, if named).
    Released {
        at_ms: u64,
        instance: InstanceName,
        to: Option<MemberId>,
    },
    /// This member's owner key vanished (its lease was revoked or expired).
    OwnerLost {
        at_ms: u64,
        instance: InstanceName,
    },
    /// A member was silent for dead_after: this one revoked its lease.
    MemberRevoked {
        at_ms: u64,
        member: MemberId,
        silent_ms: u64,
    },
    Fenced {
        at_ms: u64,
        cause: crate::decide::FenceCause,
    },
    Unfenced {
        at_ms: u64,
    },
    /// A `[health]` check passes again, or failed.
    Check {
        at_ms: u64,
        check: String,
        ok: bool,
        /// A probe's observation that decided it.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        detail: Option<String>,
    },
    /// The cluster says the instance is not this member's: its address left.
    Withdrawn {
        at_ms: u64,
        instance: InstanceName,
        #[serde(flatten)]
        reason: Reason,
    },
}

/// What the kernel says of a port's link.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum LinkCondition {
    Up,
    NoCarrier,
    AdminDown,
    Missing,
}

/// What a repair put right.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Repair {
    /// The address was missing from its owner.
    Address,
    /// The instance's macvlan was missing, down, or had the wrong MAC or lower port.
    Device,
    /// A copy of the address (or an up standby MAC) on a port that is not the owner.
    Copy,
    /// A static route was missing or pointed elsewhere.
    Route,
    /// The dataplane's instance entry differed.
    MapEntry,
    /// Something baton made for an instance that no longer exists.
    Leftover,
}

#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct ConflictRecord {
    pub by: String,
    pub port: PortName,
    pub at_ms: u64,
    /// Claims seen since baton placed the instance.
    pub count: u64,
    pub defended: bool,
}

#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct RepairRecord {
    pub what: Repair,
    pub detail: String,
    pub at_ms: u64,
}

macro_rules! kebab_display {
    ($($t:ty),*) => {$(
        impl std::fmt::Display for $t {
            fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                // The serde name: one spelling everywhere (JSON, tables, logs, labels).
                let s = serde_json::to_value(self).map_err(|_| std::fmt::Error)?;
                f.write_str(s.as_str().unwrap_or("?"))
            }
        }
    )*};
}
kebab_display!(PortCondition, LinkCondition, MoveKind, Repair);

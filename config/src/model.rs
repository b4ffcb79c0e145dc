//! The validated configuration. Names are the keys of TOML tables
//! (`[ports.ge0]`), so they are unique by construction.
pub use crate::names::{InstanceName, MemberId, PortName};
use ipnet::IpNet;
use std::collections::BTreeMap;
use std::net::IpAddr;
use std::path::PathBuf;
use std::time::Duration;

#[derive(Clone, Debug, PartialEq)]
pub struct Config {
    pub ports: BTreeMap<PortName, Port>,
    pub networks: BTreeMap<String, Network>,
    pub instances: BTreeMap<InstanceName, Instance>,
    pub timers: Timers,
    pub limits: Limits,
    pub cluster: Option<Cluster>,
    /// Named checks of what the instances need besides their ports.
    pub health: BTreeMap<String, Check>,
    pub metrics: Metrics,
    pub daemon: DaemonSettings,
}

/// A check of something the instances need besides their ports
/// (`[health.NAME]`): the storage side's links, the target process, a
/// service's TCP port, or a command.
#[derive(Clone, Debug, PartialEq)]
pub struct Check {
    pub probe: Probe,
    /// Consecutive passing observations before a failed probe passes again.
    pub rise: u32,
    /// Consecutive failed observations before a passing probe fails.
    pub fall: u32,
    /// How often a probe observes (links are read from kernel events).
    pub interval: Duration,
    /// How long one observation may take (tcp, exec).
    pub timeout: Duration,
    /// With no `[cluster]`: a failure withdraws the instances that need the
    /// check (initiators' multipath turns to another gateway); by default
    /// they stay and the failure is reported.
    pub withdraw: bool,
}

impl Check {
    pub const DEFAULT_INTERVAL: Duration = Duration::from_secs(1);
    pub const DEFAULT_TIMEOUT: Duration = Duration::from_secs(1);
    pub const DEFAULT_RISE: u32 = 2;
    /// Two failed observations for a probe; one for a process (its exit is
    /// certain, the kernel says so through its pidfd).
    pub fn default_fall(probe: &Probe) -> u32 {
        match probe {
            Probe::Process(_) => 1,
            _ => 2,
        }
    }
}

/// What a check observes.
#[derive(Clone, Debug, PartialEq)]
pub enum Probe {
    /// Interfaces that are not data ports, by name, read as the ports are.
    Links {
        links: Vec<String>,
        fail_when: FailWhen,
    },
    /// A process that must run.
    Process(ProcessMatch),
    /// A listener that must accept a connection from this host.
    Tcp(std::net::SocketAddr),
    /// A command that must exit 0 within the timeout (argv, no shell).
    Exec(Vec<String>),
}

impl Probe {
    /// The key that names its kind in the file.
    pub fn kind(&self) -> &'static str {
        match self {
            Probe::Links { .. } => "links",
            Probe::Process(ProcessMatch::Pidfile(_)) => "pidfile",
            Probe::Process(ProcessMatch::Name(_)) => "process",
            Probe::Tcp(_) => "tcp",
            Probe::Exec(_) => "exec",
        }
    }
}

/// How a process check finds its process.
#[derive(Clone, Debug, PartialEq)]
pub enum ProcessMatch {
    /// The pid written in this file.
    Pidfile(PathBuf),
    /// A process whose name (`/proc/PID/comm`) is exactly this.
    Name(String),
}

/// When a check of several links fails.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum FailWhen {
    /// One of them down (either storage link down is a unit failure).
    #[default]
    Any,
    /// Every one of them down.
    All,
}

/// How the daemon runs.
#[derive(Clone, Debug, PartialEq)]
pub struct DaemonSettings {
    /// SCHED_FIFO priority (1..=99) so a busy host cannot delay a failover;
    /// 0 runs it as an ordinary process.
    pub realtime_priority: u32,
    /// mlockall: the daemon's pages stay resident, so a host short of
    /// memory cannot make a failover wait for the disk.
    pub lock_memory: bool,
    /// Where the ingress logic runs: XDP (the default) or TCX ingress, for
    /// drivers where XDP costs more than it gives (veth: XDP turns the
    /// peer's TSO off; `cargo xtask bench dataplane` measures both).
    pub ingress: IngressHook,
    /// How often the daemon re-reads the kernel's whole state and repairs
    /// any difference, whatever events said (the safety net for lost events).
    pub resync_interval: Duration,
}

#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum IngressHook {
    #[default]
    Xdp,
    Tcx,
}

impl Default for DaemonSettings {
    fn default() -> Self {
        DaemonSettings {
            realtime_priority: 10,
            lock_memory: true,
            ingress: IngressHook::Xdp,
            resync_interval: Duration::from_secs(10),
        }
    }
}

/// The Prometheus endpoint.
#[derive(Clone, Debug, PartialEq)]
pub struct Metrics {
    /// Where to serve /metrics; None when `enabled = false`.
    pub listen: Option<std::net::SocketAddr>,
}

impl Default for Metrics {
    fn default() -> Self {
        Metrics {
            listen: Some(std::net::SocketAddr::from(([127, 0, 0, 1], 9750))),
        }
    }
}

/// A data NIC of the host.
#[derive(Clone, Debug, PartialEq)]
pub struct Port {
    /// L2 segments the port is plugged into.
    pub networks: Vec<String>,
    /// The subnets the port serves; empty = every subnet of its networks.
    pub subnets: Vec<IpNet>,
    /// VLAN ids the port carries tagged.
    pub vlans: Vec<u16>,
    /// Overrides of `limits` for this port.
    pub max_addresses: Option<u32>,
    pub max_macs: Option<u32>,
}

/// A named L2 segment.
#[derive(Clone, Debug, PartialEq)]
pub struct Network {
    pub subnets: Vec<IpNet>,
    /// VLAN ids allowed on this segment; empty = any.
    pub vlans: Vec<u16>,
}

#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum Failback {
    /// Stay on the port it moved to until moved by hand.
    #[default]
    Never,
    /// Go back to the first port of the list once it is stable for `failback_delay`.
    Auto,
}

#[derive(Clone, Debug, PartialEq)]
pub struct Route {
    pub to: IpNet,
    pub via: IpAddr,
    /// `to` is 0.0.0.0/0 or ::/0 and the file says so on purpose: the route
    /// replaces the host's default route.
    pub replaces_default: bool,
}

/// How many instances the dataplane's table holds (a VLAN instance takes
/// two entries: tagged and its untagged twin).
pub const MAX_INSTANCE_ENTRIES: usize = 4096;

/// An instance's id in the dataplane (counters, macvlan names): a hash of
/// its name, so it survives reloads and restarts whatever else the config
/// holds. FNV-1a, 32 bits; 0 is kept for "none". `baton check` refuses two
/// names with one id.
pub fn instance_id(name: &str) -> u32 {
    let hash = name.bytes().fold(0x811c_9dc5u32, |h, b| {
        (h ^ u32::from(b)).wrapping_mul(0x0100_0193)
    });
    hash.max(1)
}

/// A service with one address.
#[derive(Clone, Debug, PartialEq)]
pub struct Instance {
    /// Address with prefix length.
    pub address: IpNet,
    /// Primary first, then secondaries in order of preference.
    pub ports: Vec<PortName>,
    pub vlan: Option<u16>,
    pub mac: Option<[u8; 6]>,
    pub routes: Vec<Route>,
    /// L4 ports it serves (iSCSI: 3260).
    pub services: Vec<u16>,
    /// TCP ports whose payload the dataplane reads as iSCSI PDUs (default:
    /// the services on port 3260), at most [`MAX_ISCSI_PORTS`].
    pub iscsi_ports: Vec<u16>,
    /// CRC32C digests the iSCSI logins on those ports negotiate.
    pub iscsi_digests: Digests,
    /// CPUs its flows are steered to (at most [`MAX_INSTANCE_CPUS`]).
    pub cpus: Vec<u32>,
    pub failback: Failback,
    /// Overrides `timers.revert_backoff` for this instance.
    pub revert_backoff: Option<bool>,
    /// In a cluster: the members that may hold it, in order of preference.
    pub members: Vec<MemberId>,
    /// The `[health]` checks it needs (None: every one).
    pub checks: Option<Vec<String>>,
}

impl Instance {
    /// Whether it needs the check `name` (every check, unless it lists its own).
    pub fn needs(&self, name: &str) -> bool {
        self.checks
            .as_ref()
            .is_none_or(|c| c.iter().any(|n| n == name))
    }

    /// Whether a move of this instance ends its sockets' retransmission backoff.
    pub fn reverts_backoff(&self, timers: &Timers) -> bool {
        self.revert_backoff.unwrap_or(timers.revert_backoff)
    }
}

/// The IANA port of iSCSI.
pub const ISCSI_PORT: u16 = 3260;
/// How many iSCSI ports / steering CPUs one instance can have (the
/// dataplane's instance entry holds them inline).
pub const MAX_ISCSI_PORTS: usize = 4;
pub const MAX_INSTANCE_CPUS: usize = 8;

/// iSCSI HeaderDigest / DataDigest (CRC32C) in use after login.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Digests {
    pub header: bool,
    pub data: bool,
}

#[derive(Clone, Debug, PartialEq)]
pub struct Timers {
    /// How long a port must stay down before it counts as failed.
    pub hold_down: Duration,
    /// How long a port must stay up before it counts as up again.
    pub hold_up: Duration,
    /// How long the primary must be stable before an `auto` failback.
    pub failback_delay: Duration,
    pub announce_count: u32,
    pub announce_interval: Duration,
    /// How long to wait for an answer to the RFC 5227 / DAD probe.
    pub probe_time: Duration,
    /// After a move, end the retransmission backoff of the sockets on the
    /// address (RFC 6069 ICMPs), so a stall lasts the outage and no more.
    pub revert_backoff: bool,
}

impl Default for Timers {
    fn default() -> Self {
        Timers {
            hold_down: Duration::from_secs(2),
            hold_up: Duration::from_secs(2),
            failback_delay: Duration::from_secs(30),
            // IPaddr2's defaults: 5 announcements 200 ms apart.
            announce_count: 5,
            announce_interval: Duration::from_millis(200),
            probe_time: Duration::from_millis(200),
            revert_backoff: true,
        }
    }
}

#[derive(Clone, Debug, PartialEq)]
pub struct Limits {
    /// Addresses one port may hold.
    pub addresses_per_port: u32,
    /// Per-instance MACs one port may hold.
    pub macs_per_port: u32,
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            addresses_per_port: 15,
            macs_per_port: 8,
        }
    }
}

/// Membership in a cluster of gateways through etcd (v3 API).
#[derive(Clone, Debug, PartialEq)]
pub struct Cluster {
    /// This member's name, unique in the cluster.
    pub member_id: MemberId,
    /// The HA link's port (never a data port).
    pub ha_port: PortName,
    /// etcd client URLs: http://HOST:PORT or https://HOST:PORT.
    pub endpoints: Vec<String>,
    /// Key prefix of this cluster in etcd (ends with "/").
    pub prefix: String,
    pub tls: Option<Tls>,
    /// The member's lease (whole seconds, as etcd grants them).
    pub lease_ttl: Duration,
    /// An owner drops its addresses this long before its lease could expire.
    pub fence_margin: Duration,
    /// How often the member renews its lease and says it is alive.
    pub heartbeat: Duration,
    /// Silence after which another member revokes this one's lease.
    pub dead_after: Duration,
    /// D: an owner is silent this long after its last answered keepalive
    /// (0: no fast path; the lease rule alone, TTL - margin).
    pub owner_deadline: Duration,
    /// After a takeover, tickle ACKs to the old owner's client connections
    /// (they reconnect at once instead of waiting for their own timers).
    pub tickle: bool,
}

impl Cluster {
    pub const DEFAULT_PREFIX: &'static str = "/baton/";
    pub const DEFAULT_LEASE_TTL: Duration = Duration::from_secs(2);
    pub const DEFAULT_FENCE_MARGIN: Duration = Duration::from_millis(500);
    pub const DEFAULT_HEARTBEAT: Duration = Duration::from_millis(50);
    pub const DEFAULT_DEAD_AFTER: Duration = Duration::from_millis(400);
    pub const DEFAULT_OWNER_DEADLINE: Duration = Duration::from_millis(300);

    /// How long an owner may hold its addresses after sending a keepalive
    /// that was answered: the fast deadline D, or the lease rule.
    pub fn hold_after_keepalive(&self) -> Duration {
        if self.owner_deadline.is_zero() {
            self.lease_ttl.saturating_sub(self.fence_margin)
        } else {
            self.owner_deadline
        }
    }
}

/// TLS to etcd, as etcd itself authenticates clients.
#[derive(Clone, Debug, PartialEq)]
pub struct Tls {
    pub ca_file: PathBuf,
    /// Client certificate and key (both or neither).
    pub cert_file: Option<PathBuf>,
    pub key_file: Option<PathBuf>,
}

impl Config {
    /// The address cap of a port (its override, else the global limit).
    pub fn address_cap(&self, port: &str) -> u32 {
        self.ports
            .get(port)
            .and_then(|p| p.max_addresses)
            .unwrap_or(self.limits.addresses_per_port)
    }

    pub fn mac_cap(&self, port: &str) -> u32 {
        self.ports
            .get(port)
            .and_then(|p| p.max_macs)
            .unwrap_or(self.limits.macs_per_port)
    }

    /// Subnets a port serves: its own list, else every subnet of its networks.
    pub fn port_subnets(&self, port: &str) -> Vec<IpNet> {
        let Some(p) = self.ports.get(port) else {
            return Vec::new();
        };
        if !p.subnets.is_empty() {
            return p.subnets.clone();
        }
        p.networks
            .iter()
            .filter_map(|n| self.networks.get(n))
            .flat_map(|n| n.subnets.iter().copied())
            .collect()
    }
}

/// Formats a MAC as aa:bb:cc:dd:ee:ff.
pub fn mac_string(mac: &[u8; 6]) -> String {
    mac.iter()
        .map(|b| format!("{b:02x}"))
        .collect::<Vec<_>>()
        .join(":")
}

/// Parses aa:bb:cc:dd:ee:ff (or with dashes).
pub fn parse_mac(s: &str) -> Option<[u8; 6]> {
    let parts: Vec<&str> = s.split([':', '-']).collect();
    if parts.len() != 6 {
        return None;
    }
    let mut mac = [0u8; 6];
    for (b, p) in mac.iter_mut().zip(parts) {
        if p.len() != 2 {
            return None;
        }
        *b = u8::from_str_radix(p, 16).ok()?;
    }
    Some(mac)
}

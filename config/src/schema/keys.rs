//! The list itself: every key with its kind, default, limits and text.
use super::{Key, Table, ms};
use crate::duration;
use crate::model::{Check, Cluster, DaemonSettings, Limits, Metrics, Timers};

pub const KEYS: &[Key] = &[
    key!(
        Top,
        "ports",
        "tables",
        None,
        "at least one",
        "The data ports (NICs) of this host, by interface name."
    ),
    key!(
        Top,
        "networks",
        "tables",
        None,
        "",
        "Named L2 segments with their subnets and VLANs."
    ),
    key!(
        Top,
        "instances",
        "tables",
        None,
        "at most 4096 dataplane entries (a VLAN instance takes two)",
        "The services, each with one address."
    ),
    key!(
        Top,
        "timers",
        "table",
        None,
        "",
        "Detection, failback and announcement timers."
    ),
    key!(Top, "limits", "table", None, "", "Per-port caps."),
    key!(
        Top,
        "cluster",
        "table",
        None,
        "",
        "Membership in a cluster of gateways (optional)."
    ),
    key!(
        Top,
        "metrics",
        "table",
        None,
        "",
        "The Prometheus endpoint."
    ),
    key!(Top, "daemon", "table", None, "", "How the daemon runs."),
    key!(
        Top,
        "health",
        "tables",
        None,
        "",
        "Named checks of what the instances need besides their ports (the storage side's links, the target process, a TCP listener, a command): a failed one takes them off this member as a lost port does."
    ),
    key!(
        Health,
        "links",
        "list of interface names",
        None,
        "one of links, pidfile, process, tcp, exec; existing interfaces that are not data ports, each once",
        "Interfaces the instances need that are not data ports (the links to the storage: HBAs, SAN NICs), read from the kernel's link events with the ports' hold timers."
    ),
    key!(
        Health,
        "fail_when",
        "\"any\" or \"all\"",
        Some(|| "\"any\"".to_string()),
        "links only",
        "\"any\": the check fails when one of its links is down (either storage link down is a unit failure); \"all\": only when every one is."
    ),
    key!(
        Health,
        "pidfile",
        "absolute path",
        None,
        "one of links, pidfile, process, tcp, exec",
        "A process that must run: the pid in this file (e.g. the target's). Its exit is heard at once through a pidfd; while it is not running the file is read again every interval."
    ),
    key!(
        Health,
        "process",
        "process name",
        None,
        "one of links, pidfile, process, tcp, exec; 1-15 characters",
        "A process that must run, by its exact name (/proc/PID/comm, e.g. \"tgtd\"); its exit is heard through a pidfd."
    ),
    key!(
        Health,
        "tcp",
        "address:port",
        None,
        "one of links, pidfile, process, tcp, exec",
        "A listener that must accept a connection from this host every interval (e.g. \"127.0.0.1:3260\": a target bound to the wildcard address serves every instance's address)."
    ),
    key!(
        Health,
        "exec",
        "command as a list (argv; no shell)",
        None,
        "one of links, pidfile, process, tcp, exec; an absolute program path",
        "A command that must exit 0 within the timeout, run every interval; for what the others cannot express."
    ),
    key!(
        Health,
        "interval",
        "duration",
        Some(|| duration::display(Check::DEFAULT_INTERVAL)),
        "100ms..=1h",
        "How often a pidfile, process, tcp or exec check observes."
    ),
    key!(
        Health,
        "timeout",
        "duration",
        Some(|| format!(
            "{}, or the interval if shorter",
            duration::display(Check::DEFAULT_TIMEOUT)
        )),
        "10ms..=interval",
        "How long a tcp connection or a command may take before the observation fails."
    ),
    key!(
        Health,
        "rise",
        "integer",
        Some(|| Check::DEFAULT_RISE.to_string()),
        "1..=100",
        "Passing observations in a row before a failed check passes again (links: hold_up instead)."
    ),
    key!(
        Health,
        "fall",
        "integer",
        Some(|| "1 for pidfile and process, 2 otherwise".into()),
        "1..=100",
        "Failed observations in a row before a passing check fails (links: hold_down instead)."
    ),
    key!(
        Health,
        "withdraw",
        "boolean",
        Some(|| "false".into()),
        "",
        "With no [cluster]: a failure takes the address of every instance that needs the check off this host, until it passes again (for initiators whose multipath turns to another gateway). false: they stay and the failure is reported."
    ),
    key!(
        Port,
        "networks",
        "list of network names",
        None,
        "defined networks",
        "The networks this port reaches."
    ),
    key!(
        Port,
        "subnets",
        "list of prefixes",
        Some(|| "its networks' subnets".into()),
        "",
        "Narrows the subnets this port serves."
    ),
    key!(
        Port,
        "vlans",
        "list of VLAN ids",
        Some(|| "none".into()),
        "1..=4094",
        "The VLANs this port carries."
    ),
    key!(
        Port,
        "max_addresses",
        "integer",
        Some(|| Limits::default().addresses_per_port.to_string()),
        "1..=100000",
        "Addresses this port may hold (overrides limits.addresses_per_port)."
    ),
    key!(
        Port,
        "max_macs",
        "integer",
        Some(|| Limits::default().macs_per_port.to_string()),
        "1..=100000",
        "Instance MACs this port may hold (overrides limits.macs_per_port)."
    ),
    key!(
        Network,
        "subnets",
        "list of prefixes",
        None,
        "at least one",
        "The subnets of this segment."
    ),
    key!(
        Network,
        "vlans",
        "list of VLAN ids",
        Some(|| "none".into()),
        "1..=4094",
        "The VLANs of this segment."
    ),
    key!(
        Instance,
        "address",
        "address/prefix",
        None,
        "required; unique; inside a subnet of one of its ports",
        "The service address (IPv4 or IPv6)."
    ),
    key!(
        Instance,
        "ports",
        "list of port names",
        None,
        "required; each once",
        "Where it may live, primary first."
    ),
    key!(
        Instance,
        "vlan",
        "VLAN id",
        Some(|| "none".into()),
        "1..=4094, carried by one of its ports",
        "Its 802.1Q tag (pushed and popped by the dataplane)."
    ),
    key!(
        Instance,
        "mac",
        "MAC address",
        Some(|| "the owner port's".into()),
        "unicast, unique",
        "Its own MAC, carried by a macvlan on the owner port."
    ),
    key!(
        Instance,
        "routes",
        "list of routes",
        Some(|| "none".into()),
        "gateways on-link; no default route unless replaces_default",
        "Static routes that follow it."
    ),
    key!(
        Instance,
        "services",
        "list of ports",
        Some(|| "none".into()),
        "1..=65535",
        "The L4 ports it serves."
    ),
    key!(
        Instance,
        "iscsi_ports",
        "list of ports",
        Some(|| "its services that are 3260".into()),
        "at most 4",
        "Where the dataplane counts iSCSI PDUs."
    ),
    key!(
        Instance,
        "iscsi_digests",
        "\"none\" | \"header\" | \"data\" | \"both\"",
        Some(|| "none".into()),
        "",
        "The digests its logins negotiate."
    ),
    key!(
        Instance,
        "cpus",
        "list of CPU ids",
        Some(|| "none".into()),
        "at most 8, CPUs of this host",
        "Steer its flows to these CPUs (XDP only)."
    ),
    key!(
        Instance,
        "failback",
        "\"never\" | \"auto\"",
        Some(|| "never".into()),
        "",
        "Go back to the primary once it is stable for failback_delay: the first port of the list; in a cluster also the first member of `members` that can host it (its ports up, its checks passing), from a member after it."
    ),
    key!(
        Instance,
        "revert_backoff",
        "boolean",
        Some(|| "timers.revert_backoff".into()),
        "",
        "Overrides timers.revert_backoff for this instance."
    ),
    key!(
        Instance,
        "members",
        "list of member ids",
        None,
        "required with [cluster], else not allowed",
        "The cluster members that may hold it, in order of preference."
    ),
    key!(
        Instance,
        "checks",
        "list of check names",
        None,
        "defined [health] checks (default: every one)",
        "The [health] checks it needs: while one fails, no port of this member serves it (in a cluster it goes to a member whose checks pass)."
    ),
    key!(
        Route,
        "to",
        "prefix",
        None,
        "required; 0.0.0.0/0 or ::/0 only with replaces_default",
        "The destination."
    ),
    key!(
        Route,
        "via",
        "address",
        None,
        "required; inside the instance's subnet",
        "The gateway."
    ),
    key!(
        Route,
        "replaces_default",
        "boolean",
        Some(|| "false".into()),
        "only on a default route",
        "Says a default route is meant to replace the host's."
    ),
    key!(
        Timers,
        "hold_down",
        "duration",
        Some(|| ms(Timers::default().hold_down)),
        "0 allowed",
        "How long a port must stay down before it counts as failed: a link that flaps back within it moves nothing."
    ),
    key!(
        Timers,
        "hold_up",
        "duration",
        Some(|| ms(Timers::default().hold_up)),
        "",
        "How long a port must stay up before it counts as up again."
    ),
    key!(
        Timers,
        "failback_delay",
        "duration",
        Some(|| ms(Timers::default().failback_delay)),
        "",
        "How long the primary must be stable before an auto failback."
    ),
    key!(
        Timers,
        "announce_count",
        "integer",
        Some(|| Timers::default().announce_count.to_string()),
        "1..=100",
        "Rounds of gratuitous ARP / unsolicited NA after a move."
    ),
    key!(
        Timers,
        "announce_interval",
        "duration",
        Some(|| ms(Timers::default().announce_interval)),
        "at most 10s",
        "Time between announcement rounds."
    ),
    key!(
        Timers,
        "probe_time",
        "duration",
        Some(|| ms(Timers::default().probe_time)),
        "1ms..=5s",
        "How long an RFC 5227 / DAD probe listens before an address is taken."
    ),
    key!(
        Timers,
        "revert_backoff",
        "boolean",
        Some(|| Timers::default().revert_backoff.to_string()),
        "",
        "After a move, end the TCP retransmission backoff of the sockets on the address (RFC 6069 ICMPs to both ends), so a stall lasts the outage and no more."
    ),
    key!(
        Limits,
        "addresses_per_port",
        "integer",
        Some(|| Limits::default().addresses_per_port.to_string()),
        "1..=100000",
        "Addresses one port may hold: a failover never piles more than this onto one port."
    ),
    key!(
        Limits,
        "macs_per_port",
        "integer",
        Some(|| Limits::default().macs_per_port.to_string()),
        "1..=100000",
        "Instance MACs one port may hold."
    ),
    key!(
        Cluster,
        "member_id",
        "name",
        None,
        "required; letters, digits, '-', 1..=32",
        "This member's name, unique in the cluster."
    ),
    key!(
        Cluster,
        "ha_port",
        "interface name",
        None,
        "required; not a data port",
        "The HA link's port (etcd is reached over it)."
    ),
    key!(
        Cluster,
        "endpoints",
        "list of URLs",
        None,
        "required; http:// or https://HOST:PORT",
        "etcd's client URLs (three or more members: a pair needs a third vote)."
    ),
    key!(
        Cluster,
        "prefix",
        "string",
        Some(|| Cluster::DEFAULT_PREFIX.into()),
        "starts and ends with '/'",
        "The cluster's keys in etcd."
    ),
    key!(
        Cluster,
        "ca_file",
        "path",
        None,
        "required for https endpoints",
        "CA of etcd's certificates (TLS)."
    ),
    key!(
        Cluster,
        "cert_file",
        "path",
        None,
        "with key_file",
        "Client certificate for etcd."
    ),
    key!(
        Cluster,
        "key_file",
        "path",
        None,
        "with cert_file; readable by root only",
        "Client key for etcd."
    ),
    key!(
        Cluster,
        "lease_ttl",
        "duration",
        Some(|| duration::display(Cluster::DEFAULT_LEASE_TTL)),
        "whole seconds, 1s..=60s",
        "The member's etcd lease; its owner keys live under it."
    ),
    key!(
        Cluster,
        "fence_margin",
        "duration",
        Some(|| duration::display(Cluster::DEFAULT_FENCE_MARGIN)),
        "shorter than lease_ttl",
        "An owner that cannot renew drops its addresses this long before the lease could expire."
    ),
    key!(
        Cluster,
        "heartbeat",
        "duration",
        Some(|| duration::display(Cluster::DEFAULT_HEARTBEAT)),
        "10ms..; shorter than owner_deadline and dead_after",
        "How often the member renews its lease and says it is alive."
    ),
    key!(
        Cluster,
        "dead_after",
        "duration",
        Some(|| duration::display(Cluster::DEFAULT_DEAD_AFTER)),
        "",
        "Silence after which another member revokes this one's lease and takes over."
    ),
    key!(
        Cluster,
        "owner_deadline",
        "duration",
        Some(|| duration::display(Cluster::DEFAULT_OWNER_DEADLINE)),
        "0 (fast path off) or shorter than lease_ttl - fence_margin",
        "An owner goes silent this long after its last answered keepalive (daemon and dataplane)."
    ),
    key!(
        Cluster,
        "tickle",
        "boolean",
        Some(|| "true".into()),
        "",
        "After a takeover, send the old owner's client connections tickle ACKs: their resets make the clients reconnect at once."
    ),
    key!(
        Metrics,
        "listen",
        "address:port",
        Some(|| Metrics::default()
            .listen
            .map_or("none".into(), |a| a.to_string())),
        "",
        "Where /metrics is served."
    ),
    key!(
        Metrics,
        "enabled",
        "boolean",
        Some(|| "true".into()),
        "",
        "false turns the endpoint off."
    ),
    key!(
        Daemon,
        "realtime_priority",
        "integer",
        Some(|| DaemonSettings::default().realtime_priority.to_string()),
        "0..=99 (0: not real-time)",
        "SCHED_FIFO priority of the main loop."
    ),
    key!(
        Daemon,
        "lock_memory",
        "boolean",
        Some(|| DaemonSettings::default().lock_memory.to_string()),
        "needs CAP_IPC_LOCK",
        "Keeps the daemon's memory resident (mlockall): no failover waits for a page from disk."
    ),
    key!(
        Daemon,
        "ingress",
        "\"xdp\" | \"tcx\"",
        Some(|| "xdp".into()),
        "needs a restart to change",
        "Where the ingress logic runs."
    ),
    key!(
        Daemon,
        "resync_interval",
        "duration",
        Some(|| ms(DaemonSettings::default().resync_interval)),
        "100ms..=1h",
        "How often the whole kernel state is read again and repaired, whatever events said."
    ),
];

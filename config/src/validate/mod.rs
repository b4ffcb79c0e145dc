//! Rules that span fields: references, overlaps, caps, host facts. Each
//! error is (field path, message with the fix).
use crate::model::*;
use std::collections::BTreeMap;
use std::net::IpAddr;
use std::time::Duration;

mod cluster;
mod health;
mod host;

pub use host::Host;

type Errors = Vec<(String, String)>;

pub fn validate(c: &Config, host: &Host) -> Errors {
    let mut e = Errors::new();
    networks(c, &mut e);
    ports(c, &mut e);
    instances(c, host, &mut e);
    caps(c, &mut e);
    timers(c, &mut e);
    if let Some(cluster) = &c.cluster {
        cluster::cluster(c, cluster, &mut e);
    }
    cluster::members(c, &mut e);
    health::checks(c, &mut e);
    host::interfaces(c, host, &mut e);
    e
}

/// An error for every entry of `v` that repeats an earlier one.
pub(super) fn repeats<T: PartialEq + std::fmt::Display>(
    path: &str,
    field: &str,
    v: &[T],
    e: &mut Errors,
) {
    for (i, x) in v.iter().enumerate() {
        if v[..i].contains(x) {
            e.push((
                format!("{path}.{field}[{i}]"),
                format!("{x} is listed twice"),
            ));
        }
    }
}

pub(super) fn list<'a, N: AsRef<str> + 'a>(names: impl Iterator<Item = &'a N>) -> String {
    let v: Vec<&str> = names.map(AsRef::as_ref).collect();
    if v.is_empty() {
        "(none)".into()
    } else {
        v.join(", ")
    }
}

fn networks(c: &Config, e: &mut Errors) {
    for (name, n) in &c.networks {
        if n.subnets.is_empty() {
            e.push((
                format!("networks.{name}.subnets"),
                "a network needs at least one subnet, e.g. subnets = [\"192.0.2.0/24\"]".into(),
            ));
        }
        for (i, s) in n.subnets.iter().enumerate() {
            if s.addr() != s.network() {
                e.push((
                    format!("networks.{name}.subnets[{i}]"),
                    format!(
                        "{s} has host bits set; did you mean {}/{}?",
                        s.network(),
                        s.prefix_len()
                    ),
                ));
            }
        }
    }
}

fn ports(c: &Config, e: &mut Errors) {
    if c.ports.is_empty() {
        e.push(("ports".into(), "no ports are defined; add at least one, e.g. [ports.ge0] with networks = [\"storage\"]".into()));
    }
    for (name, p) in &c.ports {
        for (i, n) in p.networks.iter().enumerate() {
            if !c.networks.contains_key(n) {
                e.push((
                    format!("ports.{name}.networks[{i}]"),
                    format!(
                        "network \"{n}\" is not defined; defined networks: {}",
                        list(c.networks.keys())
                    ),
                ));
            }
        }
        for (i, v) in p.vlans.iter().enumerate() {
            let nets: Vec<&Network> = p
                .networks
                .iter()
                .filter_map(|n| c.networks.get(n))
                .collect();
            if !nets.is_empty()
                && nets
                    .iter()
                    .all(|n| !n.vlans.is_empty() && !n.vlans.contains(v))
            {
                e.push((format!("ports.{name}.vlans[{i}]"), format!("VLAN {v} is not allowed on any network of this port; add it to a network's vlans or remove it")));
            }
        }
    }
}

fn instances(c: &Config, host: &Host, e: &mut Errors) {
    let entries: usize = c
        .instances
        .values()
        .map(|i| if i.vlan.is_some() { 2 } else { 1 })
        .sum();
    if entries > MAX_INSTANCE_ENTRIES {
        e.push((
            "instances".into(),
            format!(
                "{} instances need {entries} dataplane entries (a VLAN instance takes two); the table holds {MAX_INSTANCE_ENTRIES}: split them across hosts",
                c.instances.len()
            ),
        ));
    }
    let mut seen_id: BTreeMap<u32, &str> = BTreeMap::new();
    for name in c.instances.keys() {
        if let Some(other) = seen_id.insert(instance_id(name), name) {
            e.push((
                format!("instances.{name}"),
                format!(
                    "its name hashes to the same dataplane id ({:#010x}) as instance \"{other}\"; rename one of them",
                    instance_id(name)
                ),
            ));
        }
    }
    let mut seen_addr: BTreeMap<IpAddr, &str> = BTreeMap::new();
    let mut seen_mac: BTreeMap<[u8; 6], &str> = BTreeMap::new();
    for (name, inst) in &c.instances {
        let path = format!("instances.{name}");
        if inst.ports.is_empty() {
            e.push((
                format!("{path}.ports"),
                "lists no port; add its ports, primary first: ports = [\"ge0\", \"ge1\"]".into(),
            ));
        }
        for (i, p) in inst.ports.iter().enumerate() {
            if !c.ports.contains_key(p) {
                e.push((
                    format!("{path}.ports[{i}]"),
                    format!(
                        "port \"{p}\" is not defined; defined ports: {}",
                        list(c.ports.keys())
                    ),
                ));
            } else if inst.ports[..i].contains(p) {
                e.push((
                    format!("{path}.ports[{i}]"),
                    format!("port \"{p}\" is listed twice; list each port once, primary first"),
                ));
            }
        }
        let addr = inst.address.addr();
        if let Some(other) = seen_addr.insert(addr, name) {
            e.push((format!("{path}.address"), format!("{addr} is already the address of instance \"{other}\"; every instance needs its own address")));
        }
        if addr == inst.address.network()
            && inst.address.prefix_len() < inst.address.max_prefix_len() - 1
        {
            e.push((
                format!("{path}.address"),
                format!(
                    "{} is the subnet's own address, not a host address",
                    inst.address
                ),
            ));
        }
        let defined: Vec<&PortName> = inst
            .ports
            .iter()
            .filter(|p| c.ports.contains_key(*p))
            .collect();
        let mut reachable: Vec<ipnet::IpNet> =
            defined.iter().flat_map(|p| c.port_subnets(p)).collect();
        reachable.sort();
        reachable.dedup();
        if !defined.is_empty() && !reachable.iter().any(|s| s.contains(&addr)) {
            e.push((format!("{path}.address"), format!(
                "{addr} is outside every subnet its ports reach ({}); fix the address or add its subnet to a network of these ports",
                if reachable.is_empty() { "none".to_string() } else { reachable.iter().map(|s| s.to_string()).collect::<Vec<_>>().join(", ") }
            )));
        }
        if let Some(v) = inst.vlan
            && !defined.is_empty()
            && !defined.iter().any(|p| c.ports[*p].vlans.contains(&v))
        {
            e.push((
                format!("{path}.vlan"),
                format!(
                    "VLAN {v} is not carried by any of its ports ({}); add it to a port's vlans",
                    list(defined.iter().copied())
                ),
            ));
        }
        if let Some(mac) = inst.mac {
            if mac == [0; 6] {
                e.push((format!("{path}.mac"), "00:00:00:00:00:00 is not a usable MAC; use a locally administered unicast one such as 02:ba:70:00:00:01".into()));
            } else if mac[0] & 1 == 1 {
                e.push((format!("{path}.mac"), format!("{} is a multicast MAC (low bit of the first byte set); use a unicast one such as 02:ba:70:00:00:01", mac_string(&mac))));
            } else if let Some(other) = seen_mac.insert(mac, name) {
                e.push((
                    format!("{path}.mac"),
                    format!(
                        "{} is already the MAC of instance \"{other}\"",
                        mac_string(&mac)
                    ),
                ));
            }
        }
        for (i, r) in inst.routes.iter().enumerate() {
            if r.to.addr().is_ipv4() != addr.is_ipv4() || r.via.is_ipv4() != addr.is_ipv4() {
                e.push((
                    format!("{path}.routes[{i}]"),
                    format!(
                        "route {} via {} is not of the instance address's family",
                        r.to, r.via
                    ),
                ));
            } else if !inst.address.contains(&r.via) || r.via == addr {
                e.push((format!("{path}.routes[{i}].via"), format!("gateway {} is not on-link: it is outside {}; use a gateway inside the instance's subnet", r.via, inst.address.trunc())));
            }
            if r.to.prefix_len() == 0 && !r.replaces_default {
                e.push((
                    format!("{path}.routes[{i}].to"),
                    format!(
                        "{} would replace the host's default route; add replaces_default = true to this route if that is meant",
                        r.to
                    ),
                ));
            } else if r.replaces_default && r.to.prefix_len() != 0 {
                e.push((
                    format!("{path}.routes[{i}].replaces_default"),
                    format!("{} is not a default route; remove replaces_default", r.to),
                ));
            }
        }
        repeats(
            &path,
            "routes",
            &inst.routes.iter().map(|r| r.to).collect::<Vec<_>>(),
            e,
        );
        if inst.cpus.len() > MAX_INSTANCE_CPUS {
            e.push((
                format!("{path}.cpus"),
                format!(
                    "names {} CPUs; an instance can be steered to at most {MAX_INSTANCE_CPUS}",
                    inst.cpus.len()
                ),
            ));
        }
        if inst.iscsi_ports.len() > MAX_ISCSI_PORTS {
            e.push((
                format!("{path}.iscsi_ports"),
                format!(
                    "names {} ports; the dataplane follows at most {MAX_ISCSI_PORTS} iSCSI ports per instance",
                    inst.iscsi_ports.len()
                ),
            ));
        }
        repeats(&path, "cpus", &inst.cpus, e);
        repeats(&path, "iscsi_ports", &inst.iscsi_ports, e);
        for (i, cpu) in inst.cpus.iter().enumerate() {
            if *cpu >= host.cpus {
                e.push((
                    format!("{path}.cpus[{i}]"),
                    format!(
                        "CPU {cpu} does not exist on this host (CPUs 0..={})",
                        host.cpus.saturating_sub(1)
                    ),
                ));
            }
        }
    }
}

/// Caps the configuration itself exceeds: with every port up, each instance
/// sits on its primary.
fn caps(c: &Config, e: &mut Errors) {
    let mut addrs: BTreeMap<&str, u32> = BTreeMap::new();
    let mut macs: BTreeMap<&str, u32> = BTreeMap::new();
    for (name, inst) in &c.instances {
        let Some(primary) = inst.ports.first().filter(|p| c.ports.contains_key(*p)) else {
            continue;
        };
        let n = addrs.entry(primary).or_default();
        *n += 1;
        if *n == c.address_cap(primary) + 1 {
            e.push((format!("instances.{name}.ports[0]"), format!(
                "port {primary} would hold {n} addresses with every port up, over its cap of {}; raise limits.addresses_per_port or ports.{primary}.max_addresses, or give this instance another primary",
                c.address_cap(primary)
            )));
        }
        if inst.mac.is_some() {
            let m = macs.entry(primary).or_default();
            *m += 1;
            if *m == c.mac_cap(primary) + 1 {
                e.push((format!("instances.{name}.mac"), format!(
                    "port {primary} would hold {m} instance MACs with every port up, over its cap of {}; raise limits.macs_per_port or ports.{primary}.max_macs",
                    c.mac_cap(primary)
                )));
            }
        }
    }
}

fn timers(c: &Config, e: &mut Errors) {
    let r = c.daemon.resync_interval;
    if r < Duration::from_millis(100) || r > Duration::from_secs(3600) {
        e.push((
            "daemon.resync_interval".into(),
            "use 100ms..=1h (default 10s): the full resync is the safety net for lost events"
                .into(),
        ));
    }
    let t = &c.timers;
    if t.announce_interval > Duration::from_secs(10) {
        e.push((
            "timers.announce_interval".into(),
            "longer than 10s; announcements must follow a move quickly (default 200ms)".into(),
        ));
    }
    if t.probe_time.is_zero() || t.probe_time > Duration::from_secs(5) {
        e.push((
            "timers.probe_time".into(),
            "use a probe time in 1ms..=5s (default 200ms); an address is never taken unprobed"
                .into(),
        ));
    }
}

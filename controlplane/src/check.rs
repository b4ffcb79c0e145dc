//! `baton check -c FILE`: validate and summarise a configuration.
use crate::decide::{self, Inputs, Placement};
use baton_config::InstanceName;
use baton_config::{Config, duration};
use comfy_table::{Table, presets::NOTHING};
use std::collections::{BTreeMap, BTreeSet};
use std::time::Duration;

/// Where each instance goes with every port up (what the daemon does at
/// start; in a cluster, once this member holds the instance).
pub fn placement_all_up(config: &Config) -> BTreeMap<InstanceName, Placement> {
    let ports = decide::all_ports_up(config);
    let plan = decide::decide(&Inputs {
        config,
        ports: &ports,
        cluster: None,
        in_use: &BTreeSet::new(),
        retry_at: &BTreeMap::new(),
        placement: &BTreeMap::new(),
        now: Duration::ZERO,
    });
    plan.placements
}

/// Where an instance goes with every port up, in words.
fn placed_at(p: Option<&Placement>) -> String {
    match p {
        Some(Placement::On(p)) => p.to_string(),
        Some(Placement::Stays { refused, .. }) => {
            let why: Vec<String> = refused.iter().map(|(p, r)| format!("{p}: {r}")).collect();
            format!("unplaced ({})", why.join("; "))
        }
        Some(Placement::Withheld { reason, .. }) => format!("not here ({reason})"),
        None => "?".into(),
    }
}

/// `baton check --json`: each instance and where it goes with every port up.
pub fn placement_json(config: &Config) -> serde_json::Value {
    let placed = placement_all_up(config);
    config
        .instances
        .keys()
        .map(|n| {
            (
                n.to_string(),
                serde_json::Value::String(placed_at(placed.get(n))),
            )
        })
        .collect::<serde_json::Map<_, _>>()
        .into()
}

fn list<T: ToString>(v: &[T]) -> String {
    if v.is_empty() {
        return "-".into();
    }
    v.iter().map(T::to_string).collect::<Vec<_>>().join(",")
}

/// The ports the dataplane counts PDUs on, with the digests it expects.
fn iscsi(i: &baton_config::model::Instance) -> String {
    let d = &i.iscsi_digests;
    let digests = match (d.header, d.data) {
        (false, false) => "",
        (true, false) => " (header digest)",
        (false, true) => " (data digest)",
        (true, true) => " (header+data digests)",
    };
    format!("{}{digests}", list(&i.iscsi_ports))
}

pub fn summary(config: &Config) -> String {
    let t = &config.timers;
    let mut out = format!(
        "{} ports, {} networks, {} instances; hold_down {} hold_up {} failback_delay {}, {} announcements every {}\n",
        config.ports.len(),
        config.networks.len(),
        config.instances.len(),
        duration::display(t.hold_down),
        duration::display(t.hold_up),
        duration::display(t.failback_delay),
        t.announce_count,
        duration::display(t.announce_interval),
    );
    let mut ports = Table::new();
    ports.load_preset(NOTHING);
    ports.set_header(["port", "networks", "vlans", "max addrs", "max macs"]);
    for (name, p) in &config.ports {
        let vlans: Vec<String> = p.vlans.iter().map(u16::to_string).collect();
        ports.add_row([
            name.to_string(),
            p.networks.join(","),
            if vlans.is_empty() {
                "-".into()
            } else {
                vlans.join(",")
            },
            config.address_cap(name).to_string(),
            config.mac_cap(name).to_string(),
        ]);
    }
    out.push_str(&format!("{ports}\n"));
    let placed = placement_all_up(config);
    let mut insts = Table::new();
    insts.load_preset(NOTHING);
    insts.set_header([
        "instance",
        "address",
        "vlan",
        "ports",
        "failback",
        "iscsi ports",
        "cpus",
        "with all ports up",
    ]);
    for (name, i) in &config.instances {
        let at = placed_at(placed.get(name));
        insts.add_row([
            name.to_string(),
            i.address.to_string(),
            i.vlan.map_or("-".into(), |v| v.to_string()),
            i.ports.join(","),
            format!("{:?}", i.failback).to_lowercase(),
            iscsi(i),
            list(&i.cpus),
            at,
        ]);
    }
    out.push_str(&format!("{insts}\n"));
    if let Some(c) = &config.cluster {
        out.push_str(&format!(
            "\ncluster: member {} on {}, etcd {}{}, lease {}, fence margin {}, heartbeat {}, dead after {}, owner deadline {}\n",
            c.member_id,
            c.ha_port,
            c.endpoints.join(","),
            if c.tls.is_some() { " (TLS)" } else { "" },
            baton_config::duration::display(c.lease_ttl),
            baton_config::duration::display(c.fence_margin),
            baton_config::duration::display(c.heartbeat),
            baton_config::duration::display(c.dead_after),
            if c.owner_deadline.is_zero() {
                "off (lease rule)".to_string()
            } else {
                baton_config::duration::display(c.owner_deadline)
            },
        ));
    }
    out
}

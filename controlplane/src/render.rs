//! What the CLI prints: tables in iproute2's style (one line per object,
//! key fields first) and the same data as JSON. The daemon's status and
//! events, and the dataplane's counters.
use crate::dataplane;
use crate::protocol::{Event, InstanceStatus, Status};
use anyhow::Result;
use baton_common::Class;
use baton_config::PortName;
use comfy_table::{Table, presets::NOTHING};

pub fn ago(ms: u64) -> String {
    match ms {
        0..1_000 => format!("{ms}ms"),
        1_000..120_000 => format!("{:.1}s", ms as f64 / 1000.0),
        _ => format!("{}m", ms / 60_000),
    }
}

/// The status as tables, iproute2 style: one line per object, key fields first.
pub fn render_status(s: &Status) -> String {
    let mut ports = Table::new();
    ports.load_preset(NOTHING);
    ports.set_header(["port", "state", "link", "since", "rx frames"]);
    for p in &s.ports {
        ports.add_row([
            p.name.to_string(),
            p.state.to_string(),
            p.link.to_string(),
            format!("{} ago", ago(p.since_ms)),
            p.rx_frames.to_string(),
        ]);
    }
    let mut insts = Table::new();
    insts.load_preset(NOTHING);
    insts.set_header([
        "instance",
        "address",
        "owner",
        "ports",
        "last move",
        "traffic",
        "reason",
    ]);
    let mut notes = Vec::new();
    for i in &s.instances {
        insts.add_row([
            i.name.to_string(),
            i.address.clone(),
            i.owner
                .as_ref()
                .map_or_else(|| "-".into(), PortName::to_string),
            i.ports.join(","),
            last_move(i),
            traffic(i),
            match i.withheld.as_ref().or(i.unserved.as_ref()) {
                Some(r) => r.to_string(),
                None => i
                    .refused
                    .iter()
                    .map(|r| r.to_string())
                    .collect::<Vec<_>>()
                    .join("; "),
            },
        ]);
        if let Some(r) = &i.last_repair {
            notes.push(format!(
                "{}: repaired {} at {}: {}",
                i.name,
                r.what,
                ago(r.at_ms),
                r.detail
            ));
        }
        if let Some(c) = &i.conflict {
            notes.push(format!(
                "{}: address conflict: {} claimed it on {} at {} ({} claims{})",
                i.name,
                c.by,
                c.port,
                ago(c.at_ms),
                c.count,
                if c.defended { ", defended" } else { "" }
            ));
        }
        if let Some(e) = &i.error {
            notes.push(format!("{}: error: {e}", i.name));
        }
    }
    let notes: String = notes.iter().map(|n| format!("{n}\n")).collect();
    let cluster = s.cluster.as_ref().map_or(String::new(), render_cluster);
    let checks: String = s
        .checks
        .iter()
        .map(|c| {
            let state = match (c.pending, c.ok) {
                (true, _) => "pending",
                (false, true) => "ok",
                (false, false) => "FAILED",
            };
            let seen = if c.links.is_empty() {
                c.detail.clone().unwrap_or_default()
            } else {
                let links: Vec<String> = c
                    .links
                    .iter()
                    .map(|l| format!("{} {}", l.name, l.state))
                    .collect();
                links.join(", ")
            };
            format!("check {} ({}) {state}: {seen}\n", c.name, c.kind)
        })
        .collect();
    format!(
        "config {} up {}\n{ports}\n{insts}\n{notes}{checks}{cluster}",
        s.config,
        ago(s.uptime_ms)
    )
}

/// This member's lease and deadline, then one line per member.
fn render_cluster(c: &crate::protocol::ClusterStatus) -> String {
    let state = match c.fenced {
        Some(cause) => format!("fenced: {cause}"),
        None => format!("holding, deadline in {}", ago(c.deadline_left_ms)),
    };
    let mut members = Table::new();
    members.load_preset(NOTHING);
    members.set_header(["member", "alive", "silent", "config", "holds"]);
    for m in &c.members {
        members.add_row([
            m.id.to_string(),
            match (m.alive, m.leaving) {
                (_, true) => "leaving".to_string(),
                (true, _) => "yes".into(),
                (false, _) => "no".into(),
            },
            m.silent_ms.map_or("-".into(), ago),
            if m.digests_match { "same" } else { "differs" }.into(),
            if m.held.is_empty() {
                "-".into()
            } else {
                m.held.join(",")
            },
        ]);
    }
    format!(
        "cluster member {} lease {} {state}\n{members}\n",
        c.member,
        c.lease.map_or("-".into(), |l| format!("{l:x}")),
    )
}

fn last_move(i: &InstanceStatus) -> String {
    match &i.last_move {
        None => "-".into(),
        Some(m) => format!(
            "{} {}->{} at {} ({}us){}",
            m.kind,
            m.from.as_deref().unwrap_or("none"),
            m.to,
            ago(m.at_ms),
            m.took_us,
            match m.revived_sockets {
                Some(n) if n > 0 => format!(", {n} sockets revived"),
                _ => String::new(),
            } + &match m.tickled {
                Some(n) => format!(", {n} connections tickled"),
                None => String::new(),
            }
        ),
    }
}

fn traffic(i: &InstanceStatus) -> String {
    i.traffic
        .iter()
        .map(|t| {
            format!(
                "{}:{}{}",
                t.port,
                t.rx_packets,
                t.last_seen_ms
                    .map(|ms| format!(" ({} ago)", ago(ms)))
                    .unwrap_or_default()
            )
        })
        .collect::<Vec<_>>()
        .join(" ")
}

/// One line per event, for `baton events`.
pub fn render_event(e: &Event) -> String {
    match e {
        Event::Port {
            at_ms,
            port,
            link,
            state,
        } => format!("{at_ms:>9}ms port {port} link {link} state {state}"),
        Event::Move {
            at_ms,
            instance,
            from,
            to,
            kind,
            took_us,
        } => {
            format!(
                "{at_ms:>9}ms move {instance} {} -> {to} ({kind}, {took_us}us)",
                from.as_deref().unwrap_or("none")
            )
        }
        Event::Refused {
            at_ms,
            instance,
            port,
            reason,
        } => format!("{at_ms:>9}ms refused {instance} on {port}: {reason}"),
        Event::MoveFailed {
            at_ms,
            instance,
            to,
            error,
            ..
        } => format!("{at_ms:>9}ms move-failed {instance} -> {to}: {error}"),
        Event::Repaired {
            at_ms,
            instance,
            what,
            detail,
        } => format!("{at_ms:>9}ms repaired {instance} {what}: {detail}"),
        Event::RepairFailed {
            at_ms,
            instance,
            error,
            retry_ms,
            ..
        } => format!("{at_ms:>9}ms repair-failed {instance}: {error} (retry in {retry_ms}ms)"),
        Event::Conflict {
            at_ms,
            instance,
            port,
            by,
            defended,
        } => format!(
            "{at_ms:>9}ms conflict {instance}: {by} claims its address on {port}{}",
            if *defended { " (defended)" } else { "" }
        ),
        Event::Revived {
            at_ms,
            instance,
            sockets,
            icmps,
            left,
        } => format!(
            "{at_ms:>9}ms revived {instance}: {sockets} sockets out of backoff ({icmps} ICMPs, {left} left)"
        ),
        Event::Tickled {
            at_ms,
            instance,
            connections,
            acks,
        } => format!(
            "{at_ms:>9}ms tickled {instance}: {connections} connections of its last owner ({acks} ACKs)"
        ),
        Event::Missed { missed } => format!(
            "{:>11} {missed} events missed: this follower read too slowly (`baton status` shows the state now)",
            "-"
        ),
        Event::Resync { at_ms, reason } => format!("{at_ms:>9}ms resync: {reason}"),
        Event::Claimed {
            at_ms,
            instance,
            from,
        } => match from {
            Some(f) => format!("{at_ms:>9}ms claimed {instance} (handed over by {f})"),
            None => format!("{at_ms:>9}ms claimed {instance}"),
        },
        Event::Released {
            at_ms,
            instance,
            to,
        } => match to {
            Some(t) => format!("{at_ms:>9}ms released {instance} to {t}"),
            None => format!("{at_ms:>9}ms released {instance}"),
        },
        Event::OwnerLost { at_ms, instance } => {
            format!("{at_ms:>9}ms lost {instance}: its owner key is gone")
        }
        Event::MemberRevoked {
            at_ms,
            member,
            silent_ms,
        } => format!("{at_ms:>9}ms revoked member {member}: silent {silent_ms}ms"),
        Event::Fenced { at_ms, cause } => format!("{at_ms:>9}ms fenced: {cause}"),
        Event::Unfenced { at_ms } => format!("{at_ms:>9}ms unfenced"),
        Event::Withdrawn {
            at_ms,
            instance,
            reason,
        } => format!("{at_ms:>9}ms withdrew {instance}: {reason}"),
        Event::Check {
            at_ms,
            check,
            ok,
            detail,
        } => format!(
            "{at_ms:>9}ms check {check} {}{}",
            if *ok { "passes" } else { "failed" },
            detail.as_ref().map_or(String::new(), |d| format!(": {d}"))
        ),
        Event::Reload { at_ms, ok, message } => format!(
            "{at_ms:>9}ms reload {}: {message}",
            if *ok { "ok" } else { "refused" }
        ),
    }
}

pub fn print_instances(
    table: &dataplane::InstanceTable,
    counters: &[(
        baton_common::InstancePortKey,
        baton_common::InstanceCounters,
    )],
    pdus: &[(baton_common::InstancePortKey, baton_common::PduCounters)],
    json: bool,
) -> Result<()> {
    let mut rows = Vec::new();
    for (key, entry) in table.entries() {
        let addr = dataplane::addr_of(&key);
        let owner = crate::netdev::name_of(entry.owner_ifindex)
            .unwrap_or_else(|| format!("if{}", entry.owner_ifindex));
        let ports: Vec<serde_json::Value> = counters
            .iter()
            .filter(|(k, _)| k.id == entry.id)
            .map(|(k, c)| {
                let iscsi = pdus
                    .iter()
                    .find(|(pk, _)| pk == k)
                    .map(|(_, p)| pdu_json(p));
                serde_json::json!({
                    "port": crate::netdev::name_of(k.ifindex),
                    "rx_packets": c.rx_packets, "rx_bytes": c.rx_bytes, "last_seen_ns": c.last_seen_ns,
                    "solicits": c.solicits, "solicits_dropped": c.solicits_dropped,
                    "egress_redirected": c.egress_redirected,
                    "tags_popped": c.tags_popped, "tags_pushed": c.tags_pushed,
                    "iscsi": iscsi,
                })
            })
            .collect();
        rows.push(serde_json::json!({
            "address": addr.to_string(), "vlan": key.vlan, "id": entry.id, "owner": owner,
            "mac": baton_config::model::mac_string(&entry.mac), "ports": ports,
        }));
    }
    if json {
        println!("{}", serde_json::to_string_pretty(&rows)?);
        return Ok(());
    }
    let mut t = Table::new();
    t.load_preset(NOTHING);
    t.set_header([
        "address",
        "vlan",
        "owner",
        "mac",
        "port",
        "rx",
        "solicits",
        "dropped",
        "redirected",
        "iscsi pdus rx/tx",
        "resyncs",
    ]);
    for r in &rows {
        for p in r["ports"].as_array().map(Vec::as_slice).unwrap_or_default() {
            t.add_row([
                r["address"].as_str().unwrap_or("").to_string(),
                r["vlan"].to_string(),
                r["owner"].as_str().unwrap_or("").to_string(),
                r["mac"].as_str().unwrap_or("").to_string(),
                p["port"].as_str().unwrap_or("?").to_string(),
                p["rx_packets"].to_string(),
                p["solicits"].to_string(),
                p["solicits_dropped"].to_string(),
                p["egress_redirected"].to_string(),
                match p["iscsi"]["rx_total"].as_u64() {
                    Some(rx) => format!("{rx}/{}", p["iscsi"]["tx_total"]),
                    None => "-".into(),
                },
                p["iscsi"]["resyncs"]
                    .as_u64()
                    .map_or_else(|| "-".into(), |n| n.to_string()),
            ]);
        }
    }
    println!("{t}");
    Ok(())
}

/// PDUs by opcode name and direction, with totals.
fn pdu_json(p: &baton_common::PduCounters) -> serde_json::Value {
    let side = |d: usize| -> (serde_json::Map<String, serde_json::Value>, u64) {
        let mut m = serde_json::Map::new();
        let mut total = 0;
        for (op, n) in p.pdus[d].iter().enumerate() {
            if *n > 0 {
                let name = baton_common::iscsi_opcode_name(op as u8)
                    .map_or_else(|| format!("opcode-{op:#04x}"), str::to_string);
                m.insert(name, serde_json::json!(n));
                total += n;
            }
        }
        (m, total)
    };
    let (rx, rx_total) = side(baton_common::RX);
    let (tx, tx_total) = side(baton_common::TX);
    serde_json::json!({
        "rx": rx, "tx": tx, "rx_total": rx_total, "tx_total": tx_total,
        "resyncs": p.resyncs, "unsynced_segments": p.unsynced_segments,
    })
}

pub fn print_stats(rows: &[dataplane::PortCounters], json: bool) -> Result<()> {
    if json {
        let value: Vec<_> = rows
            .iter()
            .map(|r| {
                let mut classes = serde_json::Map::new();
                for class in Class::ALL {
                    let c = r.stats.get(class);
                    classes.insert(
                        class.name().into(),
                        serde_json::json!({"packets": c.packets, "bytes": c.bytes}),
                    );
                }
                serde_json::json!({"ifindex": r.ifindex, "port": r.port, "classes": classes})
            })
            .collect();
        println!("{}", serde_json::to_string_pretty(&value)?);
        return Ok(());
    }
    let mut table = Table::new();
    table.load_preset(NOTHING);
    let mut header = vec!["port".to_string(), "frames".into(), "bytes".into()];
    header.extend(Class::ALL.iter().map(|c| c.name().to_string()));
    table.set_header(header);
    for r in rows {
        let frames = r.stats.frames();
        let mut row = vec![
            r.port.clone().unwrap_or_else(|| format!("if{}", r.ifindex)),
            frames.packets.to_string(),
            frames.bytes.to_string(),
        ];
        row.extend(
            Class::ALL
                .iter()
                .map(|c| r.stats.get(*c).packets.to_string()),
        );
        table.add_row(row);
    }
    println!("{table}");
    Ok(())
}

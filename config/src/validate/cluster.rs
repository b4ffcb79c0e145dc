//! The cluster's rules: `[cluster]` itself (names, endpoints, TLS, the
//! liveness timers) and each instance's `members`.
use super::{Errors, repeats};
use crate::model::*;
use std::time::Duration;

/// A member's name: what etcd keys and status show.
fn member_name_ok(name: &str) -> bool {
    (1..=32).contains(&name.len()) && name.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-')
}

pub(super) fn cluster(c: &Config, cl: &Cluster, e: &mut Errors) {
    let mut push = |key: &str, msg: String| e.push((format!("cluster.{key}"), msg));
    if !member_name_ok(&cl.member_id) {
        push(
            "member_id",
            format!(
                "{:?} is not a member name: 1 to 32 letters, digits or '-'",
                cl.member_id
            ),
        );
    }
    if c.ports.contains_key(&cl.ha_port) {
        push(
            "ha_port",
            format!(
                "{} is a data port; the HA link needs a port of its own",
                cl.ha_port
            ),
        );
    }
    if cl.endpoints.is_empty() {
        push(
            "endpoints",
            "lists no etcd endpoint; add the client URL of every etcd member (a pair of gateways needs a third, witness member)".into(),
        );
    }
    for (i, url) in cl.endpoints.iter().enumerate() {
        let tls = url.starts_with("https://");
        let rest = url
            .strip_prefix("http://")
            .or_else(|| url.strip_prefix("https://"));
        let host_port = rest.map(|r| r.trim_end_matches('/'));
        let ok = host_port.is_some_and(|hp| {
            hp.rsplit_once(':')
                .is_some_and(|(h, p)| !h.is_empty() && p.parse::<u16>().is_ok_and(|p| p > 0))
        });
        if !ok {
            push(
                &format!("endpoints[{i}]"),
                format!(
                    "{url:?} is not an etcd client URL; write http://HOST:PORT or https://HOST:PORT (e.g. \"http://198.51.100.3:2379\")"
                ),
            );
        }
        if tls && cl.tls.is_none() {
            push(
                &format!("endpoints[{i}]"),
                format!(
                    "{url} is https: set ca_file (and cert_file/key_file if etcd asks for client certificates)"
                ),
            );
        }
    }
    if !(cl.prefix.starts_with('/') && cl.prefix.ends_with('/') && cl.prefix.len() > 1) {
        push(
            "prefix",
            format!(
                "{:?} must start and end with '/', e.g. \"/baton/\"",
                cl.prefix
            ),
        );
    }
    if let Some(tls) = &cl.tls {
        if tls.cert_file.is_some() != tls.key_file.is_some() {
            push(
                "cert_file",
                "cert_file and key_file go together (the client certificate and its key)".into(),
            );
        }
        for (key, file) in [
            ("ca_file", Some(&tls.ca_file)),
            ("cert_file", tls.cert_file.as_ref()),
        ] {
            if let Some(f) = file
                && let Err(err) = std::fs::metadata(f)
            {
                push(key, format!("cannot read {}: {err}", f.display()));
            }
        }
        if let Some(key) = &tls.key_file {
            private_key(key, &mut push);
        }
    }
    let ttl = cl.lease_ttl;
    if ttl.subsec_nanos() != 0 || !(1..=60).contains(&ttl.as_secs()) {
        push(
            "lease_ttl",
            "must be whole seconds from 1s to 60s (etcd grants leases in seconds)".into(),
        );
    }
    if cl.fence_margin.is_zero() || cl.fence_margin >= ttl {
        push(
            "fence_margin",
            "must be more than 0 and shorter than lease_ttl (e.g. lease_ttl = \"2s\", fence_margin = \"500ms\")".into(),
        );
    }
    if cl.heartbeat < Duration::from_millis(10) {
        push("heartbeat", "must be 10ms or more".into());
    }
    if cl.heartbeat >= cl.dead_after {
        push("dead_after", "must be longer than cluster.heartbeat (e.g. heartbeat = \"50ms\", dead_after = \"400ms\")".into());
    }
    let d = cl.owner_deadline;
    if !d.is_zero() && d <= cl.heartbeat {
        push("owner_deadline", "must be longer than cluster.heartbeat: an owner renews several times within it (e.g. heartbeat = \"50ms\", owner_deadline = \"300ms\")".into());
    }
    if !d.is_zero() && d >= ttl.saturating_sub(cl.fence_margin) {
        push("owner_deadline", "must be shorter than lease_ttl - fence_margin (the fast deadline is inside the lease rule), or 0 for the lease rule alone".into());
    }
    let _ = c;
}

/// A private key file: absolute, root's, not readable by others.
fn private_key(key: &std::path::Path, push: &mut impl FnMut(&str, String)) {
    if !key.is_absolute() {
        push(
            "key_file",
            format!("{} is a relative path; use an absolute one", key.display()),
        );
        return;
    }
    use std::os::unix::fs::MetadataExt as _;
    match std::fs::metadata(key) {
        Err(err) => push("key_file", format!("cannot read {}: {err}", key.display())),
        Ok(m) if m.mode() & 0o077 != 0 || m.uid() != 0 => push(
            "key_file",
            format!(
                "{} is readable by others than root (mode {:o}, owner uid {}); chown root {0} && chmod 600 {0}",
                key.display(),
                m.mode() & 0o777,
                m.uid()
            ),
        ),
        Ok(_) => {}
    }
}

/// Every instance of a cluster names the members that may hold it; a
/// single host's instances name none.
pub(super) fn members(c: &Config, e: &mut Errors) {
    for (name, inst) in &c.instances {
        let path = format!("instances.{name}.members");
        match &c.cluster {
            None if !inst.members.is_empty() => e.push((
                path,
                "needs a valid [cluster] (here it is missing or has errors): members only mean something in a cluster; remove it on a single host".into(),
            )),
            Some(_) if inst.members.is_empty() => e.push((
                path,
                "is missing: in a cluster every instance lists the members that may hold it, in order (e.g. members = [\"gw1\", \"gw2\"])".into(),
            )),
            _ => {
                for (i, m) in inst.members.iter().enumerate() {
                    if !member_name_ok(m) {
                        e.push((format!("{path}[{i}]"), format!("{m:?} is not a member name: 1 to 32 letters, digits or '-'")));
                    }
                }
                repeats(&format!("instances.{name}"), "members", &inst.members, e);
            }
        }
    }
}

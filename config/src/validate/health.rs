//! The `[health]` checks' rules: each watches links that exist as names
//! (not data ports, each once), and an instance needs only checks that are
//! defined.
use super::{Errors, list, repeats};
use crate::model::*;

/// An interface name as the kernel takes it (IFNAMSIZ - 1, no '/' or space).
fn interface_name_ok(name: &str) -> bool {
    (1..=15).contains(&name.len())
        && name != "."
        && name != ".."
        && !name
            .bytes()
            .any(|b| b == b'/' || b == b':' || b.is_ascii_whitespace())
}

pub(super) fn checks(c: &Config, e: &mut Errors) {
    for (name, check) in &c.health {
        let path = format!("health.{name}");
        if check.links.is_empty() {
            e.push((
                format!("{path}.links"),
                "has no links: name the links this check watches, e.g. links = [\"san0\"]".into(),
            ));
        }
        repeats(&path, "links", &check.links, e);
        for (i, link) in check.links.iter().enumerate() {
            if !interface_name_ok(link) {
                e.push((
                    format!("{path}.links[{i}]"),
                    format!(
                        "{link:?} is not an interface name (1-15 characters, no '/', ':' or spaces)"
                    ),
                ));
            } else if c.ports.contains_key(link.as_str()) {
                e.push((
                    format!("{path}.links[{i}]"),
                    format!("\"{link}\" is a data port: its state is the port's already; a check watches the other links (the storage side)"),
                ));
            }
        }
    }
    for (name, inst) in &c.instances {
        for (i, check) in inst.checks.iter().flatten().enumerate() {
            if !c.health.contains_key(check) {
                e.push((
                    format!("instances.{name}.checks[{i}]"),
                    format!(
                        "check \"{check}\" is not defined; defined checks: {}",
                        list(c.health.keys())
                    ),
                ));
            }
        }
    }
}

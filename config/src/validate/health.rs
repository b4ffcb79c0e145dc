//! The `[health]` checks' rules: links that are interface names (not data
//! ports, each once), absolute paths for pidfiles and programs, sane
//! timers, and an instance needs only checks that are defined.
use super::{Errors, list, repeats};
use crate::duration;
use crate::model::*;
use std::time::Duration;

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
        match &check.probe {
            Probe::Links { links, .. } => self::links(c, &path, links, e),
            Probe::Process(ProcessMatch::Pidfile(file)) if !file.is_absolute() => e.push((
                format!("{path}.pidfile"),
                format!("{:?} is not an absolute path", file.display()),
            )),
            Probe::Process(ProcessMatch::Name(n)) if !(1..=15).contains(&n.len()) || n.contains('/') => {
                e.push((
                    format!("{path}.process"),
                    format!("{n:?} is not a process name (1-15 characters, as /proc/PID/comm shows it; no '/')"),
                ))
            }
            Probe::Exec(argv) => match argv.first() {
                None => e.push((
                    format!("{path}.exec"),
                    "is empty: give the program and its arguments, e.g. exec = [\"/usr/local/bin/check-lun\", \"lun0\"]".into(),
                )),
                Some(prog) if !prog.starts_with('/') => e.push((
                    format!("{path}.exec[0]"),
                    format!("{prog:?} is not an absolute path: the daemon runs with no PATH of yours"),
                )),
                Some(_) => {}
            },
            _ => {}
        }
        let interval_ok =
            (Duration::from_millis(100)..=Duration::from_secs(3600)).contains(&check.interval);
        if !interval_ok {
            e.push((
                format!("{path}.interval"),
                format!(
                    "{} is out of range; use 100ms..=1h",
                    duration::display(check.interval)
                ),
            ));
        }
        if interval_ok
            && (check.timeout < Duration::from_millis(10) || check.timeout > check.interval)
        {
            e.push((
                format!("{path}.timeout"),
                format!(
                    "{} is out of range; use 10ms..=interval ({})",
                    duration::display(check.timeout),
                    duration::display(check.interval)
                ),
            ));
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

/// A links check's links: interface names, not data ports, each once.
fn links(c: &Config, path: &str, links: &[String], e: &mut Errors) {
    if links.is_empty() {
        e.push((
            format!("{path}.links"),
            "has no links: name the links this check watches, e.g. links = [\"san0\"]".into(),
        ));
    }
    repeats(path, "links", links, e);
    for (i, link) in links.iter().enumerate() {
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

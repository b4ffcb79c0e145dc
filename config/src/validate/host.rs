//! Facts about the machine a configuration is checked for: its CPUs, and
//! (for `baton check` on the host itself) its interfaces: a data port or a
//! watched link that does not exist is a mistake to catch before the
//! daemon runs with it down.
use super::Errors;
use crate::model::{Config, Probe};
use std::collections::BTreeSet;

#[derive(Clone, Debug)]
pub struct Host {
    /// Number of possible CPUs (ids 0..cpus).
    pub cpus: u32,
    /// The interfaces here (None: not known, not checked; the daemon runs
    /// with a missing port down, and a port may appear later).
    pub interfaces: Option<BTreeSet<String>>,
}

impl Host {
    pub fn this_machine() -> Host {
        let cpus = std::fs::read_to_string("/sys/devices/system/cpu/possible")
            .ok()
            .and_then(|s| {
                s.trim()
                    .rsplit(['-', ','])
                    .next()
                    .and_then(|n| n.parse::<u32>().ok())
            })
            .map(|last| last + 1)
            .or_else(|| {
                std::thread::available_parallelism()
                    .ok()
                    .map(|n| n.get() as u32)
            })
            .unwrap_or(1);
        Host {
            cpus,
            interfaces: None,
        }
    }

    /// A host of `cpus` CPUs whose interfaces are not checked.
    pub const fn with_cpus(cpus: u32) -> Host {
        Host {
            cpus,
            interfaces: None,
        }
    }

    /// This machine with its interfaces (this network namespace's, as
    /// /sys/class/net lists them) to check names against.
    pub fn this_machine_and_interfaces() -> std::io::Result<Host> {
        let interfaces = std::fs::read_dir("/sys/class/net")?
            .flatten()
            .filter_map(|e| e.file_name().into_string().ok())
            .collect();
        Ok(Host {
            interfaces: Some(interfaces),
            ..Host::this_machine()
        })
    }
}

pub(super) fn interfaces(c: &Config, host: &Host, e: &mut Errors) {
    let Some(here) = &host.interfaces else {
        return;
    };
    let missing = |name: &str| {
        format!(
            "no interface \"{name}\" on this host (its interfaces: {}); `baton check --offline` checks a file for another host",
            here.iter().cloned().collect::<Vec<_>>().join(", ")
        )
    };
    for name in c.ports.keys() {
        if !here.contains(name.as_str()) {
            e.push((format!("ports.{name}"), missing(name)));
        }
    }
    for (check, c) in &c.health {
        if let Probe::Links { links, .. } = &c.probe {
            for (i, link) in links.iter().enumerate() {
                if !here.contains(link) {
                    e.push((format!("health.{check}.links[{i}]"), missing(link)));
                }
            }
        }
    }
}

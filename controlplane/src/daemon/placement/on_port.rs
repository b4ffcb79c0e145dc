//! One instance on one port, described once: the macvlan that carries its
//! MAC there, the device its address lives on, its dataplane entry with that
//! port as owner. The move, the reconcile and the address defence all read
//! it from here.
use super::super::netlink::observed::Observed;
use super::super::ports::PortTable;
use crate::dataplane;
use crate::netdev;
use anyhow::{Context as _, Result};
use baton_common::InstanceEntry;
use baton_config::Config;
use baton_config::model::Instance;
use baton_config::{InstanceName, PortName};

pub struct OnPort<'a> {
    pub name: &'a InstanceName,
    pub inst: &'a Instance,
    pub port: &'a PortName,
}

impl<'a> OnPort<'a> {
    /// None when the config has no such instance.
    pub fn new(
        config: &'a Config,
        name: &'a InstanceName,
        port: &'a PortName,
    ) -> Option<OnPort<'a>> {
        let inst = config.instances.get(name)?;
        Some(OnPort { name, inst, port })
    }

    /// The instance's id in the dataplane and in its macvlans' names.
    pub fn id(&self) -> u32 {
        baton_config::instance_id(self.name)
    }

    /// The macvlan that carries the instance's MAC on this port (None when
    /// it has no MAC of its own).
    pub fn macvlan(&self) -> Option<String> {
        self.inst.mac?;
        Some(macvlan_name(self.id(), self.port))
    }

    /// The device its address lives on when this port owns it: the port,
    /// or its macvlan there (as the kernel shows it now).
    pub fn device(&self, ports: &PortTable, observed: &Observed) -> Option<u32> {
        match self.macvlan() {
            Some(name) => observed.link(&name).map(|l| l.ifindex),
            None => ports.ifindex(self.port),
        }
    }

    /// The one builder of the instance's dataplane entry with this port as owner.
    pub fn entry(&self, ports: &PortTable) -> Result<InstanceEntry> {
        let ifindex = ports
            .ifindex(self.port)
            .with_context(|| format!("port {} is missing", self.port))?;
        let owner = dataplane::EntryOwner {
            id: self.id(),
            ifindex,
            port_mac: netdev::mac_of(self.port)?,
            counted: ports.counted(self.inst),
        };
        Ok(dataplane::entry_for(self.inst, &owner))
    }
}

/// Name of the macvlan that carries instance `id`'s MAC on `port`: "bt",
/// the id, and 20 bits of a hash of the port's name (15 bytes, the most a
/// device name may have). It depends on nothing else in the config, so
/// reloads and restarts find the same devices.
pub fn macvlan_name(id: u32, port: &str) -> String {
    let tag = baton_config::instance_id(port) & 0xf_ffff;
    format!("bt{id:08x}{tag:05x}")
}

/// The instance id in the name of a macvlan baton made (also the older
/// "btIDp<N>" form), or None for any other device.
pub fn macvlan_owner_id(name: &str) -> Option<u32> {
    let rest = name.strip_prefix("bt")?;
    let (id, tail) = rest.split_at_checked(8)?;
    let ours = (tail.len() == 5 && tail.bytes().all(|b| b.is_ascii_hexdigit()))
        || tail
            .strip_prefix('p')
            .is_some_and(|n| !n.is_empty() && n.bytes().all(|b| b.is_ascii_digit()));
    if !ours {
        return None;
    }
    u32::from_str_radix(id, 16).ok()
}

//! The instance table (VLAN, address) -> owner, as userspace writes it, and
//! the per-instance counters it reads back.
use super::PinDir;
use anyhow::{Context as _, Result};
use aya::maps::{HashMap, Map, MapData};
use baton_common::{InstanceCounters, InstanceEntry, InstanceKey, InstancePortKey, names};
use std::net::IpAddr;

pub fn key_for(vlan: Option<u16>, addr: IpAddr) -> InstanceKey {
    let vlan = vlan.unwrap_or(0);
    match addr {
        IpAddr::V4(a) => InstanceKey::v4(vlan, a.octets()),
        IpAddr::V6(a) => InstanceKey::v6(vlan, a.octets()),
    }
}

/// The address a key names.
pub fn addr_of(key: &InstanceKey) -> IpAddr {
    if key.family == 4 {
        IpAddr::from([key.addr[0], key.addr[1], key.addr[2], key.addr[3]])
    } else {
        IpAddr::from(key.addr)
    }
}

/// The pinned instance map. [`InstanceTable::set`] is the atomic flip of a
/// move: one map update, seen whole by every BPF reader.
pub struct InstanceTable {
    map: HashMap<MapData, InstanceKey, InstanceEntry>,
}

impl InstanceTable {
    pub fn open(pins: &PinDir) -> Result<Self> {
        let data = super::pinned_map(pins, names::INSTANCES_MAP)?;
        let map = HashMap::try_from(Map::HashMap(data))
            .context("BATON_INSTANCES is not baton's instance table")?;
        Ok(InstanceTable { map })
    }

    pub fn set(&mut self, key: &InstanceKey, entry: &InstanceEntry) -> Result<()> {
        self.map
            .insert(key, entry, 0)
            .context("updating the instance table")
    }

    pub fn get(&self, key: &InstanceKey) -> Option<InstanceEntry> {
        self.map.get(key, 0).ok()
    }

    pub fn remove(&mut self, key: &InstanceKey) -> Result<()> {
        match self.map.remove(key) {
            Ok(()) => Ok(()),
            // Absent already: the goal state.
            Err(aya::maps::MapError::KeyNotFound) => Ok(()),
            Err(aya::maps::MapError::SyscallError(e))
                if e.io_error.raw_os_error() == Some(libc::ENOENT) =>
            {
                Ok(())
            }
            Err(e) => Err(e).context("removing from the instance table"),
        }
    }

    pub fn entries(&self) -> Vec<(InstanceKey, InstanceEntry)> {
        self.map.iter().filter_map(Result::ok).collect()
    }
}

/// Per-instance, per-port counters, summed over CPUs.
pub fn instance_counters(pins: &PinDir) -> Result<Vec<(InstancePortKey, InstanceCounters)>> {
    super::stats::summed(pins, names::INSTANCE_STATS_MAP, InstanceCounters::add)
}

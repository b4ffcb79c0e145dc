//! The instance table (VLAN, address) -> owner, as userspace writes it, and
//! the per-instance counters it reads back.
use super::PinDir;
use anyhow::{Context as _, Result};
use aya::maps::{HashMap, Map, MapData};
use baton_common::{
    InstanceCounters, InstanceEntry, InstanceKey, InstancePortKey, MAX_INSTANCE_CPUS,
    MAX_ISCSI_PORTS, PduCounters, flags, names,
};
use baton_config::model::Instance;
use std::net::IpAddr;

/// The dataplane's view of a configured instance: its MAC (when it has one),
/// iSCSI ports and digests, CPU set, VLAN. Id and owner are filled by the caller.
/// A VLAN instance gets [`flags::VLAN_TAGS`]: this kernel has no 802.1Q
/// devices, so its address sits on the port and the programs pop and push its tag.
pub fn entry_for(inst: &Instance) -> InstanceEntry {
    let mut e = InstanceEntry::default();
    if let Some(mac) = inst.mac {
        e.mac = mac;
        e.flags |= flags::OWN_MAC;
    }
    if inst.iscsi_digests.header {
        e.flags |= flags::HEADER_DIGEST;
    }
    if inst.iscsi_digests.data {
        e.flags |= flags::DATA_DIGEST;
    }
    for (slot, port) in e.iscsi_ports.iter_mut().zip(&inst.iscsi_ports) {
        *slot = *port;
    }
    for (slot, cpu) in e.cpus.iter_mut().zip(&inst.cpus) {
        // Validation keeps CPU ids below the host's count.
        *slot = u16::try_from(*cpu).unwrap_or(u16::MAX);
    }
    e.cpu_count = inst.cpus.len().min(MAX_INSTANCE_CPUS) as u8;
    debug_assert!(inst.iscsi_ports.len() <= MAX_ISCSI_PORTS);
    if let Some(vlan) = inst.vlan {
        e.vlan = vlan;
        e.flags |= flags::VLAN_TAGS;
    }
    e
}

/// The untagged twin of a tagged key: what TC egress looks up for the
/// frames the kernel sends untagged for a [`flags::VLAN_TAGS`] instance.
pub fn untagged(key: &InstanceKey) -> Option<InstanceKey> {
    (key.vlan != 0).then_some(InstanceKey { vlan: 0, ..*key })
}

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
        let b = key.bytes();
        IpAddr::from([b[0], b[1], b[2], b[3]])
    } else {
        IpAddr::from(key.bytes())
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

    /// Writes an instance's entry; for a [`flags::VLAN_TAGS`] instance its
    /// untagged twin first, then the tagged key (ingress sees the move last).
    pub fn set(&mut self, key: &InstanceKey, entry: &InstanceEntry) -> Result<()> {
        if entry.flags & flags::VLAN_TAGS != 0
            && let Some(twin) = untagged(key)
        {
            self.map
                .insert(twin, entry, 0)
                .context("updating the instance table")?;
        }
        self.map
            .insert(key, entry, 0)
            .context("updating the instance table")
    }

    pub fn get(&self, key: &InstanceKey) -> Option<InstanceEntry> {
        self.map.get(key, 0).ok()
    }

    /// Removes an entry, and the untagged twin of a tagged one.
    pub fn remove(&mut self, key: &InstanceKey) -> Result<()> {
        if let Some(twin) = untagged(key)
            && self.get(&twin).is_some_and(|e| e.vlan == key.vlan)
        {
            self.remove_one(&twin)?;
        }
        self.remove_one(key)
    }

    fn remove_one(&mut self, key: &InstanceKey) -> Result<()> {
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

/// iSCSI PDUs per opcode per instance per port, summed over CPUs.
pub fn pdu_counters(pins: &PinDir) -> Result<Vec<(InstancePortKey, PduCounters)>> {
    super::stats::summed(pins, names::PDU_STATS_MAP, PduCounters::add)
}

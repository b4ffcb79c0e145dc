//! The instance table (VLAN, address) -> owner, as userspace writes it, and
//! the per-instance counters it reads back.
use super::PinDir;
use anyhow::{Context as _, Result};
use aya::maps::{HashMap, Map, MapData};
use aya::maps::{PerCpuArray, PerCpuValues};
use baton_common::{
    InstanceCounters, InstanceEntry, InstanceKey, InstancePortKey, MAX_INSTANCE_CPUS,
    MAX_INSTANCE_SLOTS, MAX_ISCSI_PORTS, PduCounters, SlotCounters, flags, names,
};
use baton_config::model::Instance;
use std::collections::{BTreeMap, BTreeSet};
use std::net::IpAddr;

/// Where an instance's entry places it: its id, the owner port (ifindex
/// and MAC) and the ports it is counted on.
pub struct EntryOwner {
    pub id: u32,
    pub ifindex: u32,
    pub port_mac: [u8; 6],
    pub counted: [u32; baton_common::MAX_COUNTED_PORTS],
}

/// The one builder of an instance's entry: its MAC (its own, else the
/// owner port's), iSCSI ports and digests, CPU set, VLAN, owner.
/// A VLAN instance gets [`flags::VLAN_TAGS`]: this kernel has no 802.1Q
/// devices, so its address sits on the port and the programs pop and push its tag.
/// A cluster instance gets [`flags::CLUSTER`].
pub fn entry_for(inst: &Instance, owner: &EntryOwner) -> InstanceEntry {
    let mut e = InstanceEntry {
        id: owner.id,
        owner_ifindex: owner.ifindex,
        mac: owner.port_mac,
        ports: owner.counted,
        ..Default::default()
    };
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
    // A cluster instance (it names its members) falls silent at the
    // member's fence deadline.
    if !inst.members.is_empty() {
        e.flags |= flags::CLUSTER;
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
/// move: one map update, seen whole by every BPF reader. The table also
/// hands out each instance's element of the counter array (its slot): kept
/// across moves, restarts and reloads, zeroed when a new instance gets it.
pub struct InstanceTable {
    map: InstanceMap,
    stats: CounterArray,
    /// Slots in use, by the key the caller placed the instance under.
    slots: BTreeMap<InstanceKey, u16>,
}

type InstanceMap = HashMap<MapData, InstanceKey, InstanceEntry>;
type CounterArray = PerCpuArray<MapData, SlotCounters>;

/// The pinned instance table and per-instance counter array.
fn open_maps(pins: &PinDir) -> Result<(InstanceMap, CounterArray)> {
    let data = super::pinned_map(pins, names::INSTANCES_MAP)?;
    let map = HashMap::try_from(Map::HashMap(data))
        .context("BATON_INSTANCES is not baton's instance table")?;
    let data = super::pinned_map(pins, names::INSTANCE_STATS_MAP)?;
    let stats = PerCpuArray::try_from(Map::PerCpuArray(data))
        .context("BATON_INSTANCE_STATS is not baton's instance counter array")?;
    Ok((map, stats))
}

/// The slot of an instance past [`MAX_INSTANCE_SLOTS`]: not counted.
const NO_SLOT: u16 = u16::MAX;

impl InstanceTable {
    pub fn open(pins: &PinDir) -> Result<Self> {
        let (map, stats) = open_maps(pins)?;
        let mut slots = BTreeMap::new();
        for (key, entry) in map.iter().filter_map(Result::ok) {
            // A twin shares its tagged key's slot.
            let tagged = InstanceKey {
                vlan: entry.vlan,
                ..key
            };
            slots.insert(tagged, entry.slot);
        }
        Ok(InstanceTable { map, stats, slots })
    }

    /// Writes an instance's entry; for a [`flags::VLAN_TAGS`] instance its
    /// untagged twin first, then the tagged key (ingress sees the move last).
    /// The entry's slot is the table's to fill.
    pub fn set(&mut self, key: &InstanceKey, entry: &InstanceEntry) -> Result<()> {
        let entry = InstanceEntry {
            slot: self.slot_for(key)?,
            ..*entry
        };
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

    /// The instance's slot, or a free one with its counters zeroed.
    fn slot_for(&mut self, key: &InstanceKey) -> Result<u16> {
        if let Some(slot) = self.slots.get(key) {
            return Ok(*slot);
        }
        let used: BTreeSet<u16> = self.slots.values().copied().collect();
        let slot = (0..MAX_INSTANCE_SLOTS as u16)
            .find(|s| !used.contains(s))
            .unwrap_or(NO_SLOT);
        if slot != NO_SLOT {
            let cpus = aya::util::nr_cpus().map_err(|(_, e)| e)?;
            let zeros = PerCpuValues::try_from(vec![SlotCounters::default(); cpus])
                .context("zero counters")?;
            self.stats
                .set(u32::from(slot), zeros, 0)
                .context("zeroing an instance's counters")?;
        }
        self.slots.insert(*key, slot);
        Ok(slot)
    }

    /// The entry under `key`; its slot is the table's business and reads 0.
    pub fn get(&self, key: &InstanceKey) -> Option<InstanceEntry> {
        self.map
            .get(key, 0)
            .ok()
            .map(|e| InstanceEntry { slot: 0, ..e })
    }

    /// Removes an entry, and the untagged twin of a tagged one; frees its slot.
    pub fn remove(&mut self, key: &InstanceKey) -> Result<()> {
        if let Some(twin) = untagged(key)
            && self.get(&twin).is_some_and(|e| e.vlan == key.vlan)
        {
            self.remove_one(&twin)?;
        }
        self.slots.remove(key);
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

    /// Per-instance, per-port counters, summed over CPUs: for each instance
    /// (twins once), each port it is counted on.
    pub fn counters(&self) -> Result<Vec<(InstancePortKey, InstanceCounters)>> {
        counters_of(&self.map, &self.stats)
    }
}

/// Per-instance, per-port counters, summed over CPUs.
pub fn instance_counters(pins: &PinDir) -> Result<Vec<(InstancePortKey, InstanceCounters)>> {
    let (map, stats) = open_maps(pins)?;
    counters_of(&map, &stats)
}

/// Each instance's counters (twins once) on each port it is counted on.
fn counters_of(
    map: &InstanceMap,
    stats: &CounterArray,
) -> Result<Vec<(InstancePortKey, InstanceCounters)>> {
    let mut out = Vec::new();
    let mut seen = BTreeSet::new();
    for (_, entry) in map.iter().filter_map(Result::ok) {
        if entry.slot == NO_SLOT || !seen.insert(entry.slot) {
            continue;
        }
        let per_cpu = stats
            .get(&u32::from(entry.slot), 0)
            .context("reading BATON_INSTANCE_STATS")?;
        for (pos, ifindex) in entry.ports.iter().enumerate() {
            if *ifindex == 0 {
                continue;
            }
            let mut sum = InstanceCounters::default();
            for cpu in per_cpu.iter() {
                sum.add(&cpu.ports[pos]);
            }
            out.push((
                InstancePortKey {
                    id: entry.id,
                    ifindex: *ifindex,
                },
                sum,
            ));
        }
    }
    out.sort_by_key(|(k, _)| *k);
    Ok(out)
}

/// iSCSI PDUs per opcode per instance per port, summed over CPUs.
pub fn pdu_counters(pins: &PinDir) -> Result<Vec<(InstancePortKey, PduCounters)>> {
    super::stats::summed(pins, names::PDU_STATS_MAP, PduCounters::add)
}

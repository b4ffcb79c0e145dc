//! The instance table (VLAN, address) -> owner, as userspace writes it, and
//! the per-instance counters it reads back.
use super::PinDir;
use anyhow::{Context as _, Result};
use aya::maps::{Array, Map, MapData};
use aya::maps::{PerCpuArray, PerCpuValues};
use baton_common::{
    ENTRY_ELEMENTS, INDEX_DELETED, INDEX_SLOTS, InstanceCounters, InstanceEntry, InstanceKey,
    InstancePortKey, KeyedEntry, MAX_INSTANCE_CPUS, MAX_INSTANCE_SLOTS, MAX_ISCSI_PORTS,
    MAX_PROBES, PduCounters, SlotCounters, flags, names,
};
use baton_config::model::Instance;
use std::collections::{BTreeMap, BTreeSet};
use std::net::IpAddr;
use std::time::{Duration, Instant};

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

/// The pinned instance table: an index and an entry array (see the
/// programs' INSTANCE_INDEX). [`InstanceTable::set`] is the atomic flip of
/// a move: the key's idle element is written, then its index position is
/// switched to it (one 4-byte store), so every BPF reader sees the old
/// entry or the new one whole. The table also hands out each instance's
/// element of the counter array (its slot): kept across moves, restarts
/// and reloads, zeroed when a new instance gets it.
pub struct InstanceTable {
    index: IndexArray,
    elements: EntryArray,
    stats: CounterArray,
    /// Every key's index position and live element, as the kernel has them.
    placed: BTreeMap<InstanceKey, Placed>,
    /// Element pairs no longer live, and since when: a program may still
    /// read one for a moment, so it is not written again within [`QUIET`].
    retired: BTreeMap<u32, Instant>,
    /// Slots in use, by the key the caller placed the instance under.
    slots: BTreeMap<InstanceKey, u16>,
}

/// Where a key sits: its index position, its live element, when that
/// element became live, and the entry written there (the table is its
/// only writer: the counters need no read of the kernel's copy).
#[derive(Clone, Copy)]
struct Placed {
    position: u32,
    element: u32,
    since: Instant,
    entry: InstanceEntry,
}

/// How long an element that stopped being live is left alone before it is
/// written again. A program runs for microseconds with its pointer into the
/// array (softirq or bh-disabled, not preempted); 10 ms is far past that.
/// A key switched twice within it waits out the rest (moves are further apart).
const QUIET: Duration = Duration::from_millis(10);

type IndexArray = Array<MapData, u32>;
type EntryArray = Array<MapData, KeyedEntry>;
type CounterArray = PerCpuArray<MapData, SlotCounters>;

/// The pinned instance index, entry array and per-instance counter array.
fn open_maps(pins: &PinDir) -> Result<(IndexArray, EntryArray, CounterArray)> {
    let data = super::pinned_map(pins, names::INSTANCE_INDEX_MAP)?;
    let index = Array::try_from(Map::Array(data))
        .context("BATON_INST_INDEX is not baton's instance index")?;
    let data = super::pinned_map(pins, names::INSTANCE_ENTRIES_MAP)?;
    let elements = Array::try_from(Map::Array(data))
        .context("BATON_INST_ENTRY is not baton's instance entry array")?;
    Ok((index, elements, open_stats(pins)?))
}

/// The pinned per-instance counter array.
fn open_stats(pins: &PinDir) -> Result<CounterArray> {
    let data = super::pinned_map(pins, names::INSTANCE_STATS_MAP)?;
    PerCpuArray::try_from(Map::PerCpuArray(data))
        .context("BATON_INSTANCE_STATS is not baton's instance counter array")
}

/// The slot of an instance past [`MAX_INSTANCE_SLOTS`]: not counted.
const NO_SLOT: u16 = u16::MAX;

impl InstanceTable {
    pub fn open(pins: &PinDir) -> Result<Self> {
        let (index, elements, stats) = open_maps(pins)?;
        let mut placed = BTreeMap::new();
        let mut slots = BTreeMap::new();
        // Written by an earlier process: long enough ago.
        let long_ago = Instant::now()
            .checked_sub(QUIET)
            .unwrap_or_else(Instant::now);
        for position in 0..INDEX_SLOTS {
            let element = index
                .get(&position, 0)
                .context("reading the instance index")?;
            if element == 0 || element == INDEX_DELETED || element > ENTRY_ELEMENTS {
                continue;
            }
            let keyed = elements
                .get(&(element - 1), 0)
                .context("reading the instance entries")?;
            placed.insert(
                keyed.key,
                Placed {
                    position,
                    element: element - 1,
                    since: long_ago,
                    entry: keyed.entry,
                },
            );
            // A twin shares its tagged key's slot.
            let tagged = InstanceKey {
                vlan: keyed.entry.vlan,
                ..keyed.key
            };
            slots.insert(tagged, keyed.entry.slot);
        }
        Ok(InstanceTable {
            index,
            elements,
            stats,
            placed,
            retired: BTreeMap::new(),
            slots,
        })
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
            self.write(&twin, &entry)?;
        }
        self.write(key, &entry)
    }

    /// One key's entry: into its idle element, then the index switched to
    /// it; a new key gets a free element pair and index position first.
    fn write(&mut self, key: &InstanceKey, entry: &InstanceEntry) -> Result<()> {
        let keyed = KeyedEntry {
            key: *key,
            entry: *entry,
        };
        if let Some(p) = self.placed.get(key).copied() {
            let live = self
                .elements
                .get(&p.element, 0)
                .context("reading the instance entries")?;
            if live == keyed {
                return Ok(());
            }
            // The idle element was live until `since`.
            if let Some(rest) = QUIET.checked_sub(p.since.elapsed()) {
                std::thread::sleep(rest);
            }
            let idle = p.element ^ 1;
            self.elements
                .set(idle, keyed, 0)
                .context("updating the instance table")?;
            self.index
                .set(p.position, idle + 1, 0)
                .context("updating the instance table")?;
            self.placed.insert(
                *key,
                Placed {
                    element: idle,
                    since: Instant::now(),
                    entry: *entry,
                    ..p
                },
            );
            return Ok(());
        }
        let pair = self.free_pair()?;
        let position = self.free_position(key)?;
        let element = pair * 2;
        self.elements
            .set(element, keyed, 0)
            .context("updating the instance table")?;
        self.index
            .set(position, element + 1, 0)
            .context("updating the instance table")?;
        self.retired.remove(&pair);
        self.placed.insert(
            *key,
            Placed {
                position,
                element,
                since: Instant::now(),
                entry: *entry,
            },
        );
        Ok(())
    }

    /// An element pair no key uses and none used within [`QUIET`].
    fn free_pair(&mut self) -> Result<u32> {
        self.retired.retain(|_, at| at.elapsed() < QUIET);
        let used: BTreeSet<u32> = self.placed.values().map(|p| p.element / 2).collect();
        (0..ENTRY_ELEMENTS / 2)
            .find(|p| !used.contains(p) && !self.retired.contains_key(p))
            .with_context(|| {
                format!(
                    "the instance table is full ({} entries)",
                    ENTRY_ELEMENTS / 2
                )
            })
    }

    /// The first free (or deleted) index position a lookup for `key`
    /// reaches within [`MAX_PROBES`].
    fn free_position(&self, key: &InstanceKey) -> Result<u32> {
        let home = key.index_slot();
        for probe in 0..MAX_PROBES {
            let position = (home + probe) & (INDEX_SLOTS - 1);
            let element = self
                .index
                .get(&position, 0)
                .context("reading the instance index")?;
            if element == 0 || element == INDEX_DELETED {
                return Ok(position);
            }
        }
        anyhow::bail!(
            "the instance index has no free position within {MAX_PROBES} of {}'s",
            addr_of(key)
        )
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
        let p = self.placed.get(key)?;
        self.elements
            .get(&p.element, 0)
            .ok()
            .filter(|k| k.key == *key)
            .map(|k| InstanceEntry { slot: 0, ..k.entry })
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

    /// Marks its index position deleted (lookups probe on past it); its
    /// element pair rests for [`QUIET`]. Absent already: the goal state.
    fn remove_one(&mut self, key: &InstanceKey) -> Result<()> {
        let Some(p) = self.placed.remove(key) else {
            return Ok(());
        };
        self.index
            .set(p.position, INDEX_DELETED, 0)
            .context("removing from the instance table")?;
        self.retired.insert(p.element / 2, Instant::now());
        Ok(())
    }

    pub fn entries(&self) -> Vec<(InstanceKey, InstanceEntry)> {
        self.placed
            .iter()
            .filter_map(|(key, p)| {
                let k = self.elements.get(&p.element, 0).ok()?;
                (k.key == *key).then_some((*key, k.entry))
            })
            .collect()
    }

    /// Every placed entry as this table wrote it (or found it at open):
    /// what the counters are read by, with no read of the kernel's copy.
    pub fn counted(&self) -> Vec<InstanceEntry> {
        self.placed.values().map(|p| p.entry).collect()
    }

    /// Per-instance, per-port counters, summed over CPUs: for each instance
    /// (twins once), each port it is counted on.
    pub fn counters(&self) -> Result<Vec<(InstancePortKey, InstanceCounters)>> {
        counters_of(&self.counted(), &self.stats)
    }
}

/// Per-instance, per-port counters, summed over CPUs (the whole table read).
pub fn instance_counters(pins: &PinDir) -> Result<Vec<(InstancePortKey, InstanceCounters)>> {
    InstanceTable::open(pins)?.counters()
}

/// The counters of `entries` ([`InstanceTable::counted`] of a table held
/// elsewhere): only the counter array is opened and read, one element per
/// instance (opening the table walks all of its index positions).
pub fn counters_of_entries(
    pins: &PinDir,
    entries: &[InstanceEntry],
) -> Result<Vec<(InstancePortKey, InstanceCounters)>> {
    counters_of(entries, &open_stats(pins)?)
}

/// Each instance's counters (twins once) on each port it is counted on.
fn counters_of(
    entries: &[InstanceEntry],
    stats: &CounterArray,
) -> Result<Vec<(InstancePortKey, InstanceCounters)>> {
    let mut out = Vec::new();
    let mut seen = BTreeSet::new();
    for entry in entries {
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

//! Reading the per-CPU port counters from the pinned map.
use super::PinDir;
use crate::netdev;
use anyhow::{Context as _, Result};
use aya::maps::{Map, PerCpuHashMap};
use baton_common::{PortStats, names};

#[derive(Clone, Debug)]
pub struct PortCounters {
    pub ifindex: u32,
    /// Name in the caller's namespace, if the device still exists there.
    pub port: Option<String>,
    /// Summed over CPUs.
    pub stats: PortStats,
}

/// Every port the dataplane has seen, sorted by ifindex.
pub fn read_stats(pins: &PinDir) -> Result<Vec<PortCounters>> {
    let data = super::pinned_map(pins, names::PORT_STATS_MAP)?;
    let map: PerCpuHashMap<_, u32, PortStats> =
        PerCpuHashMap::try_from(Map::PerCpuHashMap(data))
            .context("BATON_PORT_STATS is not baton's port statistics map")?;
    let mut out = Vec::new();
    for entry in map.iter() {
        let (ifindex, per_cpu) = entry.context("reading a port statistics entry")?;
        let mut stats = PortStats::default();
        for cpu in per_cpu.iter() {
            stats.add(cpu);
        }
        out.push(PortCounters {
            ifindex,
            port: netdev::name_of(ifindex),
            stats,
        });
    }
    out.sort_by_key(|c| c.ifindex);
    Ok(out)
}

//! Reading the per-CPU port counters from the pinned map.
use super::PinDir;
use crate::netdev;
use anyhow::{Context as _, Result, bail};
use aya::maps::{Map, MapData, PerCpuHashMap};
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
    let path = pins.map(names::PORT_STATS_MAP);
    if !path.exists() {
        bail!(
            "no dataplane counters at {} (is baton attached? `baton dataplane attach --port ...`)",
            path.display()
        );
    }
    let data = MapData::from_pin(&path).with_context(|| format!("opening {}", path.display()))?;
    let map: PerCpuHashMap<_, u32, PortStats> =
        PerCpuHashMap::try_from(Map::PerCpuHashMap(data))
            .with_context(|| format!("{} is not baton's port statistics map", path.display()))?;
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

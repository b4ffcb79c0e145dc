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

/// Every entry of a pinned per-CPU hash map, each summed over the CPUs with
/// `add`, sorted by key.
pub(crate) fn summed<K, V>(
    pins: &PinDir,
    name: &str,
    add: impl Fn(&mut V, &V),
) -> Result<Vec<(K, V)>>
where
    K: aya::Pod + Ord + Copy,
    V: aya::Pod + Default,
{
    let data = super::pinned_map(pins, name)?;
    let map: PerCpuHashMap<_, K, V> = PerCpuHashMap::try_from(Map::PerCpuHashMap(data))
        .with_context(|| format!("{name} is not one of baton's per-CPU maps"))?;
    let mut out = Vec::new();
    for entry in map.iter() {
        let (key, per_cpu) = entry.with_context(|| format!("reading {name}"))?;
        let mut sum = V::default();
        for cpu in per_cpu.iter() {
            add(&mut sum, cpu);
        }
        out.push((key, sum));
    }
    out.sort_by_key(|(k, _)| *k);
    Ok(out)
}

/// Every port the dataplane has seen, sorted by ifindex.
pub fn read_stats(pins: &PinDir) -> Result<Vec<PortCounters>> {
    Ok(
        summed::<u32, PortStats>(pins, names::PORT_STATS_MAP, PortStats::add)?
            .into_iter()
            .map(|(ifindex, stats)| PortCounters {
                ifindex,
                port: netdev::name_of(ifindex),
                stats,
            })
            .collect(),
    )
}

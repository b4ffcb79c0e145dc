//! Reading the per-CPU port counters from the pinned map.
use super::PinDir;
use crate::netdev;
use anyhow::{Context as _, Result};
use aya::maps::{Map, PerCpuArray, PerCpuHashMap};
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

/// Every port the dataplane has seen, sorted by ifindex (0: ports whose
/// ifindex is past the array, counted together).
pub fn read_stats(pins: &PinDir) -> Result<Vec<PortCounters>> {
    let data = super::pinned_map(pins, names::PORT_STATS_MAP)?;
    let map = PerCpuArray::try_from(Map::PerCpuArray(data))
        .context("BATON_PORT_STATS is not baton's port counter array")?;
    Ok(port_totals(&map)?
        .into_iter()
        .map(|(ifindex, stats)| PortCounters {
            ifindex,
            port: netdev::name_of(ifindex),
            stats,
        })
        .collect())
}

/// The port counter array's non-empty slots, summed over CPUs.
pub fn port_totals<T: std::borrow::Borrow<aya::maps::MapData>>(
    map: &PerCpuArray<T, PortStats>,
) -> Result<Vec<(u32, PortStats)>> {
    let mut out = Vec::new();
    for ifindex in 0..map.len() {
        let sum = sum_at(map, ifindex)?;
        if sum.frames().packets > 0 {
            out.push((ifindex, sum));
        }
    }
    Ok(out)
}

/// The counters of these ports only, one lookup each (an ifindex past the
/// array has none of its own). The daemon serves `baton status` on its
/// loop: walking the whole array there (~1,000 lookups, ~4 ms on the lab's
/// VM) held up a failover that came meanwhile.
pub fn read_port_stats(pins: &PinDir, ifindexes: &[u32]) -> Result<Vec<(u32, PortStats)>> {
    let data = super::pinned_map(pins, names::PORT_STATS_MAP)?;
    let map = PerCpuArray::try_from(Map::PerCpuArray(data))
        .context("BATON_PORT_STATS is not baton's port counter array")?;
    let mut out = Vec::new();
    for &ifindex in ifindexes.iter().filter(|i| **i < map.len()) {
        out.push((ifindex, sum_at(&map, ifindex)?));
    }
    Ok(out)
}

fn sum_at<T: std::borrow::Borrow<aya::maps::MapData>>(
    map: &PerCpuArray<T, PortStats>,
    ifindex: u32,
) -> Result<PortStats> {
    let mut sum = PortStats::default();
    for cpu in map
        .get(&ifindex, 0)
        .with_context(|| format!("reading BATON_PORT_STATS[{ifindex}]"))?
        .iter()
    {
        sum.add(cpu);
    }
    Ok(sum)
}

//! CPU steering: the cpumap queues instance flows are redirected into, and
//! how many frames went to each CPU.
use super::PinDir;
use anyhow::{Context as _, Result};
use aya::maps::{CpuMap, Map, PerCpuArray};
use baton_common::{MAX_CPUS, names};

/// Queue length of a cpumap entry (the kernel allows at most 16384).
const CPU_QUEUE: u32 = 2048;

/// Gives each CPU an instance steers to a cpumap queue. A CPU without one
/// is never steered to: the XDP program passes the frame where it is.
pub fn enable_cpus(pins: &PinDir, cpus: impl IntoIterator<Item = u32>) -> Result<()> {
    let data = super::pinned_map(pins, names::CPU_MAP)?;
    let mut map =
        CpuMap::try_from(Map::CpuMap(data)).context("BATON_CPUS is not baton's cpumap")?;
    for cpu in cpus {
        let present = map.get(cpu, 0).is_ok_and(|v| v.queue_size > 0);
        if !present {
            map.set(cpu, CPU_QUEUE, None, 0)
                .with_context(|| format!("giving CPU {cpu} a cpumap queue"))?;
        }
    }
    Ok(())
}

/// Frames steered to each CPU (summed over the CPUs that steered them);
/// only CPUs with a count.
pub fn steered(pins: &PinDir) -> Result<Vec<(u32, u64)>> {
    let data = super::pinned_map(pins, names::STEERED_MAP)?;
    let map: PerCpuArray<_, u64> = PerCpuArray::try_from(Map::PerCpuArray(data))
        .context("BATON_STEERED is not baton's steering counter")?;
    let mut out = Vec::new();
    for cpu in 0..MAX_CPUS {
        let n: u64 = map
            .get(&cpu, 0)
            .with_context(|| format!("reading BATON_STEERED[{cpu}]"))?
            .iter()
            .sum();
        if n > 0 {
            out.push((cpu, n));
        }
    }
    Ok(out)
}

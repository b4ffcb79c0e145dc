//! Reading the lab's captures: each frame's time and bytes, and the TCP
//! port a frame goes to.
use anyhow::{Context as _, Result};

/// Packet times in a pcap file (ms since the Unix epoch): the global
/// header, then a 16-byte header per record (seconds, microseconds, lengths).
pub fn pcap_times_ms(path: &std::path::Path) -> Result<Vec<f64>> {
    Ok(pcap_frames(path)?.into_iter().map(|(t, _)| t).collect())
}

/// Each captured frame of a pcap tcpdump wrote: its time (ms of the Unix
/// clock) and its bytes (as far as the snap length kept them).
pub fn pcap_frames(path: &std::path::Path) -> Result<Vec<(f64, Vec<u8>)>> {
    let data = std::fs::read(path).with_context(|| format!("reading {}", path.display()))?;
    let u32_at = |o: usize| -> Option<u32> {
        Some(u32::from_le_bytes(data.get(o..o + 4)?.try_into().ok()?))
    };
    if u32_at(0) != Some(0xa1b2_c3d4) {
        anyhow::bail!("{} is not a little-endian µs pcap", path.display());
    }
    let (mut at, mut out) = (24, Vec::new());
    while let (Some(sec), Some(usec), Some(len)) = (u32_at(at), u32_at(at + 4), u32_at(at + 8)) {
        let bytes = data
            .get(at + 16..at + 16 + len as usize)
            .unwrap_or_default();
        out.push((
            f64::from(sec) * 1000.0 + f64::from(usec) / 1000.0,
            bytes.to_vec(),
        ));
        at += 16 + len as usize;
    }
    Ok(out)
}

/// The TCP destination port of an Ethernet + IPv4 frame.
pub fn tcp_dst_port(frame: &[u8]) -> Option<u16> {
    let ihl = usize::from(frame.get(14)? & 0x0f) * 4;
    let at = 14 + ihl + 2;
    Some(u16::from_be_bytes(frame.get(at..at + 2)?.try_into().ok()?))
}

/// The initiator back to I/O after `failed_ms` (Unix clock): the target's
/// first data segment on another connection than the last one before it
/// (a new login), in ms after it. Errors when there was no I/O before.
pub fn relogin_after(frames: &[(f64, Vec<u8>)], failed_ms: f64) -> Result<Option<f64>> {
    let before = frames
        .iter()
        .rev()
        .find(|(t, _)| *t < failed_ms)
        .and_then(|(_, f)| tcp_dst_port(f))
        .ok_or_else(|| anyhow::anyhow!("the initiator did no I/O before the failure"))?;
    Ok(frames
        .iter()
        .find(|(t, f)| *t > failed_ms && tcp_dst_port(f) != Some(before))
        .map(|(t, _)| t - failed_ms))
}

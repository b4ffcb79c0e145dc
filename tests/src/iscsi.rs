//! A real iSCSI target (tgtd) in a lab gateway, and the numbers that prove a
//! session survived: its I_T nexus ids (a re-login gets a new one).
use crate::{Netns, Peer, run_checked};
use anyhow::{Context as _, Result};
use std::path::PathBuf;
use std::sync::atomic::{AtomicU32, Ordering};

pub const IQN: &str = "iqn.2026-11.lab.baton:lun";
static SEQ: AtomicU32 = AtomicU32::new(0);

pub struct Target {
    /// tgtd's control port (-C): its socket file is shared by all namespaces.
    ctl: String,
    peer: Option<Peer>,
    lun: PathBuf,
    /// The LUN file is this target's (deleted with it), not shared.
    owns_lun: bool,
    portal: std::net::IpAddr,
}

impl Target {
    /// Starts tgtd on `portal`:3260 in `ns` with a file-backed LUN of `mib` MiB.
    /// The portal address must exist in `ns`.
    pub fn start(ns: &Netns, portal: std::net::IpAddr, mib: u64) -> Result<Target> {
        let ctl = next_ctl();
        let lun = std::env::temp_dir().join(format!("baton-lun-{ctl}.img"));
        let f = std::fs::File::create(&lun)?;
        f.set_len(mib << 20)?;
        Target::serve(ns, portal, ctl, lun, true)
    }

    /// The same target name serving an existing file (two gateways of a
    /// cluster exporting one shared LUN); the file is left in place.
    pub fn start_shared(
        ns: &Netns,
        portal: std::net::IpAddr,
        lun: &std::path::Path,
    ) -> Result<Target> {
        Target::serve(ns, portal, next_ctl(), lun.to_path_buf(), false)
    }

    fn serve(
        ns: &Netns,
        portal: std::net::IpAddr,
        ctl: String,
        lun: PathBuf,
        owns_lun: bool,
    ) -> Result<Target> {
        let peer = ns.spawn(&[
            "tgtd",
            "-f",
            "-C",
            &ctl,
            "--iscsi",
            &format!("portal={portal}:3260"),
        ])?;
        let mut t = Target {
            ctl,
            peer: Some(peer),
            lun,
            owns_lun,
            portal,
        };
        ns.wait_listening(3260)
            .context("tgtd did not start listening")?;
        t.adm(&[
            "--lld", "iscsi", "--op", "new", "--mode", "target", "--tid", "1", "-T", IQN,
        ])?;
        let path = t.lun.to_string_lossy().into_owned();
        t.adm(&[
            "--lld",
            "iscsi",
            "--op",
            "new",
            "--mode",
            "logicalunit",
            "--tid",
            "1",
            "--lun",
            "1",
            "-b",
            &path,
        ])?;
        t.adm(&[
            "--lld", "iscsi", "--op", "bind", "--mode", "target", "--tid", "1", "-I", "ALL",
        ])?;
        t.peer.as_mut().context("tgtd")?;
        Ok(t)
    }

    /// Sets a target parameter (e.g. HeaderDigest = CRC32C) for new logins.
    pub fn set_param(&self, name: &str, value: &str) -> Result<()> {
        self.adm(&[
            "--lld", "iscsi", "--op", "update", "--mode", "target", "--tid", "1", "-n", name, "-v",
            value,
        ])?;
        Ok(())
    }

    fn adm(&self, args: &[&str]) -> Result<String> {
        let mut full = vec!["-C", self.ctl.as_str()];
        full.extend_from_slice(args);
        run_checked("tgtadm", &full)
    }

    /// tgtd's pid (for a pidfile a `[health]` check reads).
    pub fn pid(&self) -> u32 {
        self.peer.as_ref().map_or(0, crate::Peer::pid)
    }

    /// tgtd dies as a crash would (SIGKILL); returns once it has exited.
    pub fn crash(&mut self) -> Result<()> {
        let mut peer = self.peer.take().context("tgtd already stopped")?;
        // SAFETY: kill(2) on our own child's pid.
        unsafe { libc::kill(peer.pid() as i32, libc::SIGKILL) };
        for _ in 0..200 {
            if peer.try_wait()?.is_some() {
                return Ok(());
            }
            std::thread::sleep(std::time::Duration::from_millis(10));
        }
        anyhow::bail!("tgtd did not exit after SIGKILL")
    }

    pub fn url(&self) -> String {
        format!("iscsi://{}/{IQN}/1", self.portal)
    }

    /// The I_T nexus ids (one per session) the target holds now.
    pub fn nexus(&self) -> Result<Vec<u64>> {
        let out = self.adm(&["--lld", "iscsi", "--mode", "target", "--op", "show"])?;
        Ok(out
            .lines()
            .filter_map(|l| l.trim().strip_prefix("I_T nexus:")?.trim().parse().ok())
            .collect())
    }
}

/// tgtd's control port for the next target (tgtd takes -C up to 32767).
fn next_ctl() -> String {
    (1000 + (std::process::id() % 300) * 100 + SEQ.fetch_add(1, Ordering::Relaxed) % 100)
        .to_string()
}

impl Drop for Target {
    fn drop(&mut self) {
        let _ = self.adm(&[
            "--lld", "iscsi", "--op", "delete", "--force", "--mode", "target", "--tid", "1",
        ]);
        let _ = self.adm(&["--op", "delete", "--mode", "system"]);
        drop(self.peer.take());
        if self.owns_lun {
            let _ = std::fs::remove_file(&self.lun);
        }
    }
}

/// iSCSI PDUs per opcode, initiator -> target and target -> initiator.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct PduTally {
    pub requests: std::collections::BTreeMap<u8, u64>,
    pub responses: std::collections::BTreeMap<u8, u64>,
    /// (HeaderDigest, DataDigest) = CRC32C in the login responses.
    pub digests: (bool, bool),
}

/// The PDUs in a pcap file (tcpdump -w) of TCP port 3260, decoded the long
/// way, independently of baton: each connection's two byte streams
/// reassembled by sequence number, then walked header by header, with
/// digests when the login responses negotiated them.
pub fn pdus_in_pcap(path: &std::path::Path) -> Result<PduTally> {
    use std::collections::BTreeMap;
    let data = std::fs::read(path).with_context(|| format!("reading {}", path.display()))?;
    anyhow::ensure!(data.len() >= 24, "{} is not a pcap file", path.display());
    let magic = u32::from_le_bytes([data[0], data[1], data[2], data[3]]);
    anyhow::ensure!(
        magic == 0xa1b2_c3d4 || magic == 0xa1b2_3c4d,
        "{}: not a little-endian pcap file",
        path.display()
    );
    // (src, sport, dst, dport) -> (first payload byte's sequence number, pieces by sequence)
    type Flow = (std::net::IpAddr, u16, std::net::IpAddr, u16);
    type Pieces = (Option<u32>, Vec<(u32, Vec<u8>)>);
    let mut flows: BTreeMap<Flow, Pieces> = BTreeMap::new();
    let mut at = 24;
    while at + 16 <= data.len() {
        let incl =
            u32::from_le_bytes([data[at + 8], data[at + 9], data[at + 10], data[at + 11]]) as usize;
        let frame = data
            .get(at + 16..at + 16 + incl)
            .context("pcap record runs past the end")?;
        at += 16 + incl;
        let Ok(p) = etherparse::SlicedPacket::from_ethernet(frame) else {
            continue;
        };
        let (Some(net), Some(etherparse::TransportSlice::Tcp(tcp))) = (p.net, p.transport) else {
            continue;
        };
        let (src, dst) = match net {
            etherparse::NetSlice::Ipv4(ip) => (
                ip.header().source_addr().into(),
                ip.header().destination_addr().into(),
            ),
            etherparse::NetSlice::Ipv6(ip) => (
                ip.header().source_addr().into(),
                ip.header().destination_addr().into(),
            ),
            _ => continue,
        };
        let flow = flows
            .entry((src, tcp.source_port(), dst, tcp.destination_port()))
            .or_default();
        if tcp.syn() {
            flow.0 = Some(tcp.sequence_number().wrapping_add(1));
        }
        if !tcp.payload().is_empty() {
            flow.1.push((tcp.sequence_number(), tcp.payload().to_vec()));
        }
    }
    // Each direction's bytes in order, repeats dropped.
    let mut streams: Vec<(bool, Vec<u8>)> = Vec::new();
    for ((_, sport, _, dport), (isn, pieces)) in flows {
        let Some(isn) = isn else {
            anyhow::bail!("a flow {sport} -> {dport} without its SYN in the capture");
        };
        let mut sorted: Vec<(u32, Vec<u8>)> = pieces
            .into_iter()
            .map(|(seq, b)| (seq.wrapping_sub(isn), b))
            .collect();
        sorted.sort_by_key(|(off, _)| *off);
        let mut stream = Vec::new();
        for (off, bytes) in sorted {
            let off = off as usize;
            anyhow::ensure!(
                off <= stream.len(),
                "bytes missing from the capture at {off}"
            );
            if off + bytes.len() > stream.len() {
                stream.extend_from_slice(&bytes[stream.len() - off..]);
            }
        }
        streams.push((dport == 3260, stream));
    }
    let negotiated = |key: &str| {
        streams
            .iter()
            .any(|(req, s)| !req && s.windows(key.len()).any(|w| w == key.as_bytes()))
    };
    let digests = (
        negotiated("HeaderDigest=CRC32C"),
        negotiated("DataDigest=CRC32C"),
    );
    let mut tally = PduTally {
        digests,
        ..PduTally::default()
    };
    for (request, s) in &streams {
        let mut pos = 0;
        while pos + 48 <= s.len() {
            let opcode = s[pos] & 0x3f;
            let ahs = s[pos + 4] as usize * 4;
            let data = u32::from_be_bytes([0, s[pos + 5], s[pos + 6], s[pos + 7]]) as usize;
            let login = opcode == 0x03 || opcode == 0x23;
            let mut len = 48 + ahs + data.div_ceil(4) * 4;
            if digests.0 && !login {
                len += 4;
            }
            if digests.1 && !login && data > 0 {
                len += 4;
            }
            let side = if *request {
                &mut tally.requests
            } else {
                &mut tally.responses
            };
            *side.entry(opcode).or_default() += 1;
            pos += len;
        }
    }
    Ok(tally)
}

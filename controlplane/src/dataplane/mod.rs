//! Loading baton's BPF object, attaching it to ports and reading its maps.
//!
//! Everything lives under one bpffs directory per host (default
//! `/sys/fs/bpf/baton`): the maps by name, and for each attached port two
//! pinned links, `links/xdp-PORT` (ingress) and `links/tc-egress-PORT`
//! (TCX egress). Pinned links keep the programs attached while no baton
//! process runs; detaching is removing the pins.
pub mod bench;
pub mod fence;
mod instances;
pub mod kernel_btf;
pub mod links;
pub mod macvlan;
pub mod pinned_maps;
mod pins;
pub mod sockets;
pub mod stats;
pub mod steering;

pub use instances::{
    EntryOwner, InstanceTable, addr_of, counters_of_entries, entry_for, instance_counters, key_for,
    pdu_counters, untagged,
};
pub use pins::{DEFAULT_PIN_DIR, PinDir};
pub use stats::{PortCounters, read_port_stats, read_stats};

use crate::netdev::{self, Netdev};
use anyhow::{Context as _, Result, anyhow, bail};
use aya::{
    Ebpf, EbpfLoader,
    programs::{SchedClassifier, TcAttachType, Xdp, XdpMode, links::FdLink, links::PinnedLink},
};
use baton_common::names;
use std::os::fd::{AsFd as _, BorrowedFd};
use std::path::PathBuf;
use tracing::{info, warn};

/// The BPF object built by aya-build from `dataplane-ebpf`.
pub static OBJECT: &[u8] =
    aya::include_bytes_aligned!(concat!(env!("OUT_DIR"), "/baton-dataplane"));

/// How to attach XDP. `Auto` tries native (driver) mode and falls back to
/// generic (skb) mode, logging why.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, clap::ValueEnum, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum AttachMode {
    #[default]
    Auto,
    Native,
    Skb,
}

/// Opens one of baton's pinned maps by name.
pub(crate) fn pinned_map(pins: &PinDir, name: &str) -> Result<aya::maps::MapData> {
    let path = pins.map(name);
    if !path.exists() {
        bail!(
            "no {name} at {} (is baton attached? `baton dataplane attach --port ...`)",
            path.display()
        );
    }
    aya::maps::MapData::from_pin(&path).with_context(|| format!("opening {}", path.display()))
}

/// Which programs to attach. `Baton` is the product; the others exist so
/// benchmarks can compare in the same run.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, clap::ValueEnum, serde::Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum ProgramSet {
    /// baton_xdp at ingress, baton_tc_egress at egress.
    #[default]
    Baton,
    /// An empty XDP_PASS program, attached the same way (the baseline).
    Empty,
    /// baton_tc_ingress at TCX ingress instead of XDP, baton_tc_egress at egress.
    TcIngress,
}

/// Loads the object with its maps pinned (created or reused) in `pins`.
pub fn load(pins: &PinDir) -> Result<Ebpf> {
    pins.ensure()?;
    // aya would reuse a pinned map of another shape (an earlier baton's).
    pinned_maps::remove_misfits(pins)?;
    EbpfLoader::new()
        .default_map_pin_directory(pins.maps())
        .load(OBJECT)
        .context(
            "loading baton's BPF object (a kernel >= 6.6 with BTF; CAP_BPF, CAP_PERFMON and CAP_NET_ADMIN)",
        )
}

/// Loads `program` into the kernel (the verifier runs); returns the number
/// of instructions the verifier processed.
pub fn load_program(ebpf: &mut Ebpf, program: &str) -> Result<u32> {
    let prog = ebpf
        .program_mut(program)
        .ok_or_else(|| anyhow!("program {program} missing from the BPF object"))?;
    let loaded = match prog {
        aya::programs::Program::Xdp(p) => p.load(),
        aya::programs::Program::SchedClassifier(p) => p.load(),
        _ => bail!("{program} is neither XDP nor TC"),
    };
    if let Err(e) = loaded {
        // EPERM/EACCES before or in the verifier: a capability is missing.
        let text = format!("{e:#}");
        if text.contains("os error 1)") || text.contains("os error 13)") {
            return Err(anyhow!(e).context(format!(
                "the kernel refused to load {program}: baton needs CAP_BPF, CAP_PERFMON and CAP_NET_ADMIN"
            )));
        }
        return Err(anyhow!(e).context(format!("verifier rejected {program}")));
    }
    Ok(prog
        .info()
        .ok()
        .and_then(|i| i.verified_instruction_count())
        .unwrap_or(0))
}

/// Loads the object and one program (for tests and `verify`).
pub fn load_xdp(pins: &PinDir, program: &str) -> Result<(Ebpf, u32)> {
    let mut ebpf = load(pins)?;
    let insns = load_program(&mut ebpf, program)?;
    Ok((ebpf, insns))
}

/// What attaching did on a port.
#[derive(Clone, Copy, Debug, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Attachment {
    /// XDP in the driver.
    Native,
    /// XDP in generic (skb) mode.
    Skb,
    /// TCX ingress instead of XDP.
    Tcx,
    /// baton's pins existed and ran these programs.
    Already,
    /// baton's pins existed but ran other programs (an earlier baton's):
    /// swapped in place.
    Replaced,
}

impl std::fmt::Display for Attachment {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Attachment::Native => "native",
            Attachment::Skb => "skb",
            Attachment::Tcx => "tcx",
            Attachment::Already => "already",
            Attachment::Replaced => "replaced",
        })
    }
}

#[derive(Debug, serde::Serialize)]
pub struct Attached {
    pub port: String,
    pub mode: Attachment,
    pub verified_instructions: u32,
}

impl Attached {
    /// Attached before this call: nothing of it is this call's to undo.
    pub fn already(&self) -> bool {
        matches!(self.mode, Attachment::Already | Attachment::Replaced)
    }
}

/// Attaches baton's programs to every port, all or nothing: every port is
/// resolved first, and a failure part way detaches what this call attached.
pub fn attach(pins: &PinDir, ports: &[String], mode: AttachMode) -> Result<Vec<Attached>> {
    attach_set(pins, ports, mode, ProgramSet::Baton)
}

/// [`attach`] with a choice of programs.
pub fn attach_set(
    pins: &PinDir,
    ports: &[String],
    mode: AttachMode,
    set: ProgramSet,
) -> Result<Vec<Attached>> {
    if ports.is_empty() {
        bail!("no port given: name at least one with --port");
    }
    let devs = ports
        .iter()
        .map(|p| netdev::data_port(p))
        .collect::<Result<Vec<_>>>()?;
    let mut ebpf = load(pins)?;
    let insns = load_program(&mut ebpf, ingress_program(set))?;
    load_program(&mut ebpf, tc_egress_program(set))?;

    let mut marks = links::LinkMarks::open(pins)?;
    let mut done: Vec<Attached> = Vec::new();
    for dev in &devs {
        match attach_one(pins, &mut ebpf, &mut marks, dev, mode, set) {
            Ok(kind) => done.push(Attached {
                port: dev.name.clone(),
                mode: kind,
                verified_instructions: insns,
            }),
            Err(err) => {
                for undo in done.iter().filter(|a| !a.already()) {
                    if let Err(e) = unpin_port(pins, &undo.port) {
                        warn!(port = %undo.port, error = %e, "rollback: could not detach");
                    }
                }
                return Err(err);
            }
        }
    }
    Ok(done)
}

fn attach_one(
    pins: &PinDir,
    ebpf: &mut Ebpf,
    marks: &mut links::LinkMarks,
    dev: &Netdev,
    mode: AttachMode,
    set: ProgramSet,
) -> Result<Attachment> {
    let ingress_pin = match set {
        ProgramSet::Baton | ProgramSet::Empty => pins.xdp_link(&dev.name),
        ProgramSet::TcIngress => pins.tc_ingress_link(&dev.name),
    };
    // Each pin of the set with the program its link runs.
    let wanted = [
        (ingress_pin, ingress_program(set)),
        (pins.tc_link(&dev.name), tc_egress_program(set)),
    ];
    // Pins of the other ingress hook (after `[daemon] ingress` changed), or
    // of a device that is gone (the link then names ifindex 0 or an old
    // one), are not ours to keep.
    let all = [
        pins.xdp_link(&dev.name),
        pins.tc_link(&dev.name),
        pins.tc_ingress_link(&dev.name),
    ];
    let mut live = Vec::new();
    for pin in all.iter().filter(|p| p.exists()) {
        let link = links::PinnedLink::open(pin).with_context(|| {
            format!(
                "{} exists but is not a pinned link; remove it by hand",
                pin.display()
            )
        })?;
        let program = wanted.iter().find(|(p, _)| p == pin).map(|(_, prog)| *prog);
        if let Some(program) = program.filter(|_| link.ifindex == dev.ifindex) {
            live.push((pin, program, link));
        } else {
            info!(pin = %pin.display(), on = link.ifindex, port = %dev.name, "replacing a stale or other-hook pin");
            unpin(pin)?;
        }
    }
    if live.len() == wanted.len() {
        // Attached, but maybe by an earlier baton: its programs read maps
        // this one may have replaced, and lack what this one does.
        let mut swapped = 0;
        for (pin, program, link) in &live {
            if link
                .adopt(program_fd(ebpf, program)?, marks)
                .with_context(|| format!("giving {} this baton's {program}", pin.display()))?
            {
                warn!(pin = %pin.display(), now = program, "the link was not this baton's (an earlier baton's program, or other maps): its program swapped in place");
                swapped += 1;
            }
        }
        if swapped > 0 {
            return Ok(Attachment::Replaced);
        }
        info!(port = %dev.name, "already attached by baton; nothing to do");
        return Ok(Attachment::Already);
    }
    // Part of a set is there: start it again whole.
    for (pin, _) in wanted.iter().filter(|(p, _)| p.exists()) {
        unpin(pin)?;
    }
    let [(ingress_pin, ingress), (egress_pin, egress)] = &wanted;
    let label = match set {
        ProgramSet::Baton | ProgramSet::Empty => attach_xdp(ebpf, ingress, dev, mode, ingress_pin)?,
        ProgramSet::TcIngress => {
            attach_tc(ebpf, ingress, TcAttachType::Ingress, dev, ingress_pin)?;
            Attachment::Tcx
        }
    };
    let attached = attach_tc(ebpf, egress, TcAttachType::Egress, dev, egress_pin);
    let marked = attached.and_then(|()| wanted.iter().try_for_each(|(pin, _)| marks.mark_pin(pin)));
    if let Err(e) = marked {
        let _ = unpin_port(pins, &dev.name);
        return Err(e);
    }
    info!(port = %dev.name, mode = %label, programs = ?set, "attached");
    Ok(label)
}

/// The descriptor of a loaded program of the object.
pub fn program_fd<'a>(ebpf: &'a Ebpf, program: &str) -> Result<BorrowedFd<'a>> {
    let fd = match ebpf.program(program) {
        Some(aya::programs::Program::Xdp(p)) => p.fd(),
        Some(aya::programs::Program::SchedClassifier(p)) => p.fd(),
        Some(_) => bail!("{program} is neither XDP nor TC"),
        None => bail!("program {program} missing from the BPF object"),
    }
    .with_context(|| format!("{program} is not loaded"))?;
    Ok(fd.as_fd())
}

/// The ingress program of a set: XDP, or TCX ingress.
fn ingress_program(set: ProgramSet) -> &'static str {
    match set {
        ProgramSet::Baton => names::XDP_PROGRAM,
        ProgramSet::Empty => names::XDP_PASS_PROGRAM,
        ProgramSet::TcIngress => names::TC_INGRESS_PROGRAM,
    }
}

/// The TC egress program of a set: the empty baseline gets an empty one,
/// as baton runs one on every reply.
fn tc_egress_program(set: ProgramSet) -> &'static str {
    match set {
        ProgramSet::Empty => names::TC_PASS_PROGRAM,
        ProgramSet::Baton | ProgramSet::TcIngress => names::TC_EGRESS_PROGRAM,
    }
}

fn attach_xdp(
    ebpf: &mut Ebpf,
    program: &str,
    dev: &Netdev,
    mode: AttachMode,
    pin: &PathBuf,
) -> Result<Attachment> {
    let prog: &mut Xdp = ebpf
        .program_mut(program)
        .ok_or_else(|| anyhow!("program vanished"))?
        .try_into()?;
    let tries: &[(XdpMode, Attachment)] = match mode {
        AttachMode::Auto => &[
            (XdpMode::Driver, Attachment::Native),
            (XdpMode::Skb, Attachment::Skb),
        ],
        AttachMode::Native => &[(XdpMode::Driver, Attachment::Native)],
        AttachMode::Skb => &[(XdpMode::Skb, Attachment::Skb)],
    };
    let mut last_err = None;
    for (xdp_mode, label) in tries {
        match prog.attach_to_if_index(dev.ifindex, *xdp_mode) {
            Ok(link_id) => {
                let link: FdLink = prog.take_link(link_id)?.try_into().map_err(|e| {
                    anyhow!(
                        "kernel attached {} without a bpf_link ({e}); cannot pin",
                        dev.name
                    )
                })?;
                link.pin(pin)
                    .with_context(|| format!("pinning {}", pin.display()))?;
                return Ok(*label);
            }
            Err(err) => {
                let busy = is_busy(&err);
                let err = anyhow::Error::new(err);
                if busy {
                    return Err(err.context(format!(
                        "{} already has an XDP program that baton did not attach; \
                         detach it first (ip link set dev {} xdp off)",
                        dev.name, dev.name
                    )));
                }
                warn!(port = %dev.name, mode = %label, error = %format!("{err:#}"), "XDP attach failed");
                last_err = Some(err.context(format!("attaching XDP ({label}) to {}", dev.name)));
            }
        }
    }
    Err(last_err.unwrap_or_else(|| anyhow!("no attach mode tried")))
}

fn attach_tc(
    ebpf: &mut Ebpf,
    program: &str,
    at: TcAttachType,
    dev: &Netdev,
    pin: &PathBuf,
) -> Result<()> {
    let prog: &mut SchedClassifier = ebpf
        .program_mut(program)
        .ok_or_else(|| anyhow!("program vanished"))?
        .try_into()?;
    let link_id = prog
        .attach(&dev.name, at)
        .with_context(|| format!("attaching {program} ({at:?}, TCX) to {}", dev.name))?;
    let link: FdLink = prog.take_link(link_id)?.try_into().map_err(|e| {
        anyhow!(
            "TC egress on {} is not a bpf_link ({e}); kernel < 6.6?",
            dev.name
        )
    })?;
    link.pin(pin)
        .with_context(|| format!("pinning {}", pin.display()))?;
    Ok(())
}

fn is_busy(err: &aya::programs::ProgramError) -> bool {
    let mut source: Option<&dyn std::error::Error> = Some(err);
    while let Some(e) = source {
        if let Some(io) = e.downcast_ref::<std::io::Error>()
            && io.raw_os_error() == Some(libc::EBUSY)
        {
            return true;
        }
        source = e.source();
    }
    false
}

/// Detaches baton from every port given, refusing all of them if any was not
/// attached by baton.
pub fn detach(pins: &PinDir, ports: &[String]) -> Result<()> {
    if ports.is_empty() {
        bail!("no port given: name at least one with --port");
    }
    for port in ports {
        if !pins.xdp_link(port).exists()
            && !pins.tc_link(port).exists()
            && !pins.tc_ingress_link(port).exists()
        {
            bail!(
                "baton is not attached to {port} (no pin at {}); nothing was detached",
                pins.xdp_link(port).display()
            );
        }
    }
    for port in ports {
        unpin_port(pins, port)?;
        info!(%port, "detached");
    }
    Ok(())
}

fn unpin_port(pins: &PinDir, port: &str) -> Result<()> {
    for path in [
        pins.xdp_link(port),
        pins.tc_link(port),
        pins.tc_ingress_link(port),
    ] {
        if path.exists() {
            unpin(&path)?;
        }
    }
    Ok(())
}

/// Removing the only reference (the pin) detaches the link.
pub(crate) fn unpin(path: &PathBuf) -> Result<()> {
    let link = PinnedLink::from_pin(path).with_context(|| format!("opening {}", path.display()))?;
    link.unpin()
        .with_context(|| format!("removing {}", path.display()))?;
    Ok(())
}

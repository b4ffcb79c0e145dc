//! Loading baton's BPF object, attaching it to ports and reading its maps.
//!
//! Everything lives under one bpffs directory per host (default
//! `/sys/fs/bpf/baton`): the maps by name, and `links/xdp-PORT` for each
//! attached port. Pinned links keep the programs attached while no baton
//! process runs; detaching is removing the pin.
mod pins;
mod stats;

pub use pins::{DEFAULT_PIN_DIR, PinDir};
pub use stats::{PortCounters, read_stats};

use crate::netdev::{self, Netdev};
use anyhow::{Context as _, Result, anyhow, bail};
use aya::{
    Ebpf, EbpfLoader,
    programs::{Xdp, XdpMode, links::FdLink, links::PinnedLink},
};
use baton_common::names;
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

/// Loads the object with its maps pinned (created or reused) in `pins`.
pub fn load(pins: &PinDir) -> Result<Ebpf> {
    pins.ensure()?;
    EbpfLoader::new()
        .default_map_pin_directory(pins.maps())
        .load(OBJECT)
        .context("loading baton's BPF object (is this kernel >= 5.15 with BTF, and are we root?)")
}

/// Loads and verifies one program of the object, returning it with its object.
pub fn load_xdp(pins: &PinDir, program: &str) -> Result<(Ebpf, u32)> {
    let mut ebpf = load(pins)?;
    let prog: &mut Xdp = ebpf
        .program_mut(program)
        .ok_or_else(|| anyhow!("program {program} missing from the BPF object"))?
        .try_into()
        .with_context(|| format!("{program} is not an XDP program"))?;
    prog.load()
        .with_context(|| format!("verifier rejected {program}"))?;
    let insns = prog
        .info()
        .ok()
        .and_then(|info| info.verified_instruction_count())
        .unwrap_or(0);
    Ok((ebpf, insns))
}

#[derive(Debug, serde::Serialize)]
pub struct Attached {
    pub port: String,
    /// The mode the kernel accepted, or "already" when baton's pin existed.
    pub mode: String,
    pub verified_instructions: u32,
}

/// Attaches `baton_xdp` to every port, all or nothing: every port is resolved
/// first, and a failure part way detaches what this call attached.
pub fn attach(pins: &PinDir, ports: &[String], mode: AttachMode) -> Result<Vec<Attached>> {
    if ports.is_empty() {
        bail!("no port given: name at least one with --port");
    }
    let devs = ports
        .iter()
        .map(|p| netdev::data_port(p))
        .collect::<Result<Vec<_>>>()?;
    pins.ensure()?;
    let (mut ebpf, insns) = load_xdp(pins, names::XDP_PROGRAM)?;
    let prog: &mut Xdp = ebpf
        .program_mut(names::XDP_PROGRAM)
        .ok_or_else(|| anyhow!("program vanished"))?
        .try_into()?;

    let mut done: Vec<Attached> = Vec::new();
    for dev in &devs {
        match attach_one(pins, prog, dev, mode) {
            Ok(kind) => done.push(Attached {
                port: dev.name.clone(),
                mode: kind,
                verified_instructions: insns,
            }),
            Err(err) => {
                for undo in done.iter().filter(|a| a.mode != "already") {
                    if let Err(e) = unpin(pins, &undo.port) {
                        warn!(port = %undo.port, error = %e, "rollback: could not detach");
                    }
                }
                return Err(err);
            }
        }
    }
    Ok(done)
}

fn attach_one(pins: &PinDir, prog: &mut Xdp, dev: &Netdev, mode: AttachMode) -> Result<String> {
    let pin = pins.xdp_link(&dev.name);
    if pin.exists() {
        // Ours already: keep it (idempotent), but only if the pin is a live link.
        PinnedLink::from_pin(&pin).with_context(|| {
            format!(
                "{} exists but is not a pinned link; remove it by hand",
                pin.display()
            )
        })?;
        info!(port = %dev.name, "already attached by baton; nothing to do");
        return Ok("already".to_string());
    }
    let tries: &[(XdpMode, &str)] = match mode {
        AttachMode::Auto => &[(XdpMode::Driver, "native"), (XdpMode::Skb, "skb")],
        AttachMode::Native => &[(XdpMode::Driver, "native")],
        AttachMode::Skb => &[(XdpMode::Skb, "skb")],
    };
    let mut last_err = None;
    for (xdp_mode, label) in tries {
        match prog.attach_to_if_index(dev.ifindex, *xdp_mode) {
            Ok(link_id) => {
                let link = prog.take_link(link_id)?;
                let fd_link: FdLink = link.try_into().map_err(|e| {
                    anyhow!(
                        "kernel attached {} without a bpf_link ({e}); cannot pin",
                        dev.name
                    )
                })?;
                fd_link.pin(&pin).with_context(|| {
                    format!("pinning the link of {} at {}", dev.name, pin.display())
                })?;
                info!(port = %dev.name, mode = label, "attached {}", names::XDP_PROGRAM);
                return Ok(label.to_string());
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
                warn!(port = %dev.name, mode = label, error = %format!("{err:#}"), "XDP attach failed");
                last_err = Some(err.context(format!("attaching XDP ({label}) to {}", dev.name)));
            }
        }
    }
    Err(last_err.unwrap_or_else(|| anyhow!("no attach mode tried")))
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
        if !pins.xdp_link(port).exists() {
            bail!(
                "baton is not attached to {port} (no pin at {}); nothing was detached",
                pins.xdp_link(port).display()
            );
        }
    }
    for port in ports {
        unpin(pins, port)?;
        info!(%port, "detached");
    }
    Ok(())
}

/// Removing the only reference (the pin) detaches the link.
fn unpin(pins: &PinDir, port: &str) -> Result<()> {
    let path = pins.xdp_link(port);
    let link =
        PinnedLink::from_pin(&path).with_context(|| format!("opening {}", path.display()))?;
    link.unpin()
        .with_context(|| format!("removing {}", path.display()))?;
    Ok(())
}

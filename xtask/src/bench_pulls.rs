//! Pulled cables, baton and the scripted baseline taking turns (one lab
//! each, all up for the whole run, so a drift of the VM falls on all), and
//! every pull traced on one clock (CLOCK_MONOTONIC): the kernel's tracepoints
//! (`ktrace`), baton's move steps (its debug log), the probe's echoes and the
//! machine's own stalls (`stall_meter`). Each pull becomes a breakdown: when
//! the carrier went, when linkwatch ran, when the daemon woke and ran, each
//! step of its move, the announcement on the wire, the switch learning the
//! new port, the first echo after the gap; and what ran on each CPU meanwhile.
//!
//! baton runs three ways, the script two: with the lab's threads anywhere
//! (`Setup::Shared`, as the bench ran before: the client's real-time probe
//! threads preempt the gateway's daemon on this 2-CPU machine), with the
//! gateway on CPU 0 and the client on CPU 1 (`Setup::Separate`: on real
//! machines they are two), and separate with the daemon asked for its status
//! 20 times a second (`Setup::Polled`: never idle for seconds, as under
//! monitoring). Each pull also asks a cold meter in a process of its own.
use crate::ktrace::Ftrace;
use crate::pull_lab::{Instruments, Pull, Setup, SideKind, Still};
use crate::pull_side::Side;
use crate::stall_meter::{ColdProcess, Stall, StallMeter};
use anyhow::{Context as _, Result};

/// The sides, in the order they take turns.
pub const SIDES: [(SideKind, Setup); 5] = [
    (SideKind::Baton, Setup::Shared),
    (SideKind::Script, Setup::Shared),
    (SideKind::Baton, Setup::Separate),
    (SideKind::Script, Setup::Separate),
    (SideKind::Baton, Setup::Polled),
];

/// What the alternating runs measured.
pub struct Runs {
    pub pulls: Vec<Pull>,
    /// Probe runs without a pull, one per side every `STILL_EVERY` rounds.
    pub still: Vec<Still>,
    pub stalls: Vec<Stall>,
    pub watched_s: f64,
}

const STILL_EVERY: usize = 5;

/// `n` rounds: in each, one pull per side (baton and the script, each with
/// shared and with separate CPUs), all traced; the machine's stalls
/// measured throughout. The daemons' logs are kept in target/bench/.
pub fn alternating(n: usize) -> Result<Runs> {
    let mut sides = Vec::new();
    for (kind, setup) in SIDES {
        sides.push(
            match kind {
                SideKind::Baton => Side::baton(setup),
                SideKind::Script => Side::script(setup),
            }
            .with_context(|| format!("the {kind:?} lab, {setup:?}"))?,
        );
    }
    let with = Instruments {
        trace: Ftrace::new(&format!("baton-bench-{}", std::process::id()))?,
        stalls: StallMeter::start(crate::stall_meter::CPUS),
    };
    for side in sides.iter_mut() {
        side.cold = Some(ColdProcess::spawn()?);
    }
    let (mut pulls, mut still) = (Vec::new(), Vec::new());
    for i in 0..n {
        let mut line = format!("[bench] round {:>3}/{n}:", i + 1);
        for side in sides.iter_mut() {
            let (gap, pull) = side.pull(Some(&with))?;
            line += &format!(" {:?}/{:?} {gap:5.2}", side.kind, side.setup);
            pulls.extend(pull);
        }
        println!("{line} ms");
        if i % STILL_EVERY == STILL_EVERY - 1 {
            for side in &sides {
                still.push(side.still(&with.trace)?);
            }
        }
    }
    let (stalls, watched_s) = with.stalls.stop();
    for side in &sides {
        if let Some(d) = side.daemon() {
            let path = crate::workspace_root()
                .join(format!("target/bench/pulls-baton-{:?}.log", side.setup).to_lowercase());
            std::fs::write(&path, d.log_text())
                .with_context(|| format!("writing {}", path.display()))?;
        }
    }
    Ok(Runs {
        pulls,
        still,
        stalls,
        watched_s,
    })
}

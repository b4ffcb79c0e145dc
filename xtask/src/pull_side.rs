//! One side of the pulls bench: a lab with its mover (baton, or the
//! scripted `ip addr` + arping baseline), its echo responder, and one pull
//! traced on it.
use crate::ktrace::{Event, Ftrace};
use crate::pull_trace::{SEGMENTS, carrier_lost, cpu_use, move_steps, switch_learned};
use crate::stall_meter::ColdProcess;
use anyhow::{Context as _, Result};
use baton_lab::daemon::{Daemon, lab_config};
use baton_lab::{Lab, LabSpec, probe};
use std::collections::BTreeMap;
use std::net::IpAddr;
use std::time::{Duration, Instant};

use crate::pull_lab::{
    ADDR, BASELINE, BEFORE_PULL, INSTANCE_MAC, Instruments, OUTAGE_WITHIN_MS, Outage, PROBE_RUN,
    Poller, Pull, Setup, SideKind, Still, WINDOW,
};

/// One side of the comparison: its lab, its mover, its echo responder.
pub struct Side {
    pub kind: SideKind,
    pub setup: Setup,
    lab: Lab,
    daemon: Option<Daemon>,
    _echo: probe::Echo,
    owner: usize,
    /// The MAC each port's announcement carries (the switch learns it).
    announced_mac: [String; 2],
    /// This side's cold meter, asked at each traced pull.
    pub cold: Option<ColdProcess>,
    _poller: Option<Poller>,
}

impl Side {
    pub fn baton(setup: Setup) -> Result<Side> {
        let lab = Lab::build(&LabSpec::default())?;
        let timers = "hold_down = \"0\"\nhold_up = \"200ms\"\nannounce_count = 3\nannounce_interval = \"100ms\"";
        let wrapper = setup.wrapper();
        let wrapper: Vec<&str> = wrapper.iter().map(String::as_str).collect();
        let daemon = Daemon::start_wrapped(
            &lab,
            0,
            &lab_config(timers, &format!("mac = \"{INSTANCE_MAC}\"")),
            &[],
            &wrapper,
        )?;
        daemon.wait_owner("iscsi-a", "ge0", Duration::from_secs(3))?;
        let echo = probe::Echo::start_on(&lab.gw(0).ns, ADDR.parse()?, setup.gateway())?;
        let poller = (setup == Setup::Polled).then(|| Poller::start(daemon.socket.clone()));
        Ok(Side {
            kind: SideKind::Baton,
            setup,
            lab,
            daemon: Some(daemon),
            _echo: echo,
            owner: 0,
            announced_mac: [INSTANCE_MAC.into(), INSTANCE_MAC.into()],
            cold: None,
            _poller: poller,
        })
    }

    pub fn script(setup: Setup) -> Result<Side> {
        let lab = Lab::build(&LabSpec::default())?;
        let gw = &lab.gw(0).ns;
        gw.ip(&["addr", "add", &format!("{ADDR}/24"), "dev", "ge0"])?;
        let mut cmd = setup.wrapper();
        cmd.extend(["sh".into(), "-c".into(), BASELINE.into()]);
        let cmd: Vec<&str> = cmd.iter().map(String::as_str).collect();
        lab.spawn(gw, &cmd)?;
        std::thread::sleep(Duration::from_millis(300));
        let echo = probe::Echo::start_on(gw, ADDR.parse()?, setup.gateway())?;
        let mac = |port: &str| -> Result<String> {
            let out = gw.ip(&["-br", "link", "show", "dev", port])?;
            out.split_whitespace()
                .nth(2)
                .map(str::to_string)
                .with_context(|| format!("no MAC for {port} in {out:?}"))
        };
        let announced_mac = [mac("ge0")?, mac("ge1")?];
        Ok(Side {
            kind: SideKind::Script,
            setup,
            lab,
            daemon: None,
            _echo: echo,
            owner: 0,
            announced_mac,
            cold: None,
            _poller: None,
        })
    }

    pub fn lab(&self) -> &Lab {
        &self.lab
    }

    pub fn daemon(&self) -> Option<&Daemon> {
        self.daemon.as_ref()
    }

    /// The probe (10 kHz) for one run, from the client's CPU.
    fn probe(&self) -> Result<std::thread::JoinHandle<Result<probe::ProbeReport>>> {
        let addr: IpAddr = ADDR.parse()?;
        probe::run_on(
            &self.lab.client,
            addr,
            10_000,
            PROBE_RUN,
            self.setup.client(),
        )
    }

    /// Pulls the owner's cable under the probe; returns the longest gap (ms)
    /// and, with a trace, the pull's breakdown.
    pub fn pull(&mut self, with: Option<&Instruments>) -> Result<(f64, Option<Pull>)> {
        let trace = with.map(|w| &w.trace);
        let run = self.probe()?;
        std::thread::sleep(BEFORE_PULL);
        if let Some(t) = trace {
            t.syscalls_of(self.daemon.as_ref().and_then(Daemon::pid))?;
            t.start()?;
            // What ran just before the pull is part of the picture.
            std::thread::sleep(Duration::from_millis(2));
        }
        // The pull's `ip` is the switch's: with the client, off the gateway's CPU.
        if let Some(c) = self.setup.client() {
            probe::pin_to(c)?;
        }
        let pulled_us = probe::monotonic_us();
        let pulled = self.lab.pull_cable(0, self.owner);
        // Off the gateway's CPU (separate) while the gateway works.
        let cold = match (with, self.cold.as_mut()) {
            (Some(_), Some(c)) => Some(c.measure()?),
            _ => None,
        };
        probe::unpin()?;
        pulled?;
        let events = match trace {
            Some(t) => {
                std::thread::sleep(WINDOW);
                Some(t.stop()?)
            }
            None => None,
        };
        let report = run
            .join()
            .map_err(|_| anyhow::anyhow!("probe panicked"))??;
        self.lab.plug_cable(0, self.owner)?;
        let target = 1 - self.owner;
        self.wait_moved(target)?;
        self.owner = target;
        std::thread::sleep(Duration::from_millis(300)); // hold_up of the plugged port
        // The outage is the failover's own gap: the one the switch's learning
        // of the new port falls in. No echo can come between the carrier's
        // loss and that moment, so the gap runs from the last echo through
        // the old port to the first through the new one; a stall of the
        // machine inside it counts, one after the new path works does not
        // (in the first 50-round run two "outages" were stalls 16-19 ms
        // after it). Without that moment: the longest gap that ends after
        // the carrier's loss and begins within 20 ms of it, as before; and
        // untraced, within 50 ms of the pull command.
        let ms_of = |us: f64| (us - report.start_mono_us as f64) / 1000.0;
        let from = ms_of(pulled_us as f64);
        let carrier = events
            .as_deref()
            .and_then(|ev| carrier_lost(ev, pulled_us as f64));
        let window = match carrier {
            Some(c) => (ms_of(c), ms_of(c) + 20.0),
            None => (from, from + OUTAGE_WITHIN_MS),
        };
        let window_gap = report
            .gap_in(window.0, window.1)
            .context("the probe saw no echoes around the pull")?;
        let learned = events.as_deref().zip(carrier).and_then(|(ev, c)| {
            let side = &self.lab.gw(0).ports[target].switch_side;
            switch_learned(ev, c, side, &self.announced_mac[target])
        });
        let (gap_at, gap) = learned
            .and_then(|t| report.gap_spanning(ms_of(t)))
            .unwrap_or(window_gap);
        let outage = Outage {
            start_us: report.start_mono_us as f64 + gap_at * 1000.0,
            ms: gap,
            window_ms: window_gap.1,
        };
        let pull = events.map(|ev| {
            let mut p = self.breakdown(&report, &outage, pulled_us, target, &ev);
            if let Some(w) = with {
                p.stalls = w
                    .stalls
                    .within(outage.start_us, outage.start_us + outage.ms * 1000.0);
            }
            if let Some(c) = cold {
                p.cold_meter_us = c;
            }
            p
        });
        Ok((gap, pull))
    }

    /// The probe alone for one run, no pull, traced throughout: the machine's
    /// own stalls. Returns (the gap at the moment a pull would come, the
    /// longest gap of the run, what ran on the CPUs during the longest).
    pub fn still(&self, trace: &Ftrace) -> Result<Still> {
        trace.start()?;
        let run = self.probe()?;
        let report = run
            .join()
            .map_err(|_| anyhow::anyhow!("probe panicked"))??;
        let events = trace.stop()?;
        let at = BEFORE_PULL.as_secs_f64() * 1000.0;
        let at_pull = report.gap_in(at, at + OUTAGE_WITHIN_MS).map(|g| g.1);
        let start = report.start_mono_us as f64 + report.longest_gap_at_ms * 1000.0;
        Ok(Still {
            side: self.kind,
            setup: self.setup,
            gap_at_pull_ms: at_pull.unwrap_or(f64::NAN),
            longest_gap_ms: report.longest_gap_ms,
            longest_cpus: cpu_use(&events, start, start + report.longest_gap_ms * 1000.0),
        })
    }

    fn wait_moved(&self, target: usize) -> Result<()> {
        let port = ["ge0", "ge1"][target];
        if let Some(d) = &self.daemon {
            d.wait_owner("iscsi-a", port, Duration::from_secs(3))?;
            return Ok(());
        }
        let started = Instant::now();
        loop {
            let out = self
                .lab
                .gw(0)
                .ns
                .ip(&["-br", "addr", "show", "dev", port])?;
            if out.contains(ADDR) {
                return Ok(());
            }
            anyhow::ensure!(
                started.elapsed() < Duration::from_secs(3),
                "the script did not move the address to {port}"
            );
            std::thread::sleep(Duration::from_millis(5));
        }
    }

    fn breakdown(
        &self,
        report: &probe::ProbeReport,
        outage: &Outage,
        pulled_us: u64,
        target: usize,
        events: &[Event],
    ) -> Pull {
        let p0 = pulled_us as f64;
        let gap_start = outage.start_us;
        let first_echo = gap_start + outage.ms * 1000.0;
        let port = self.lab.gw(0).ports[target].name.clone();
        let switch_side = self.lab.gw(0).ports[target].switch_side.clone();
        let after = |t: f64, pred: &dyn Fn(&Event) -> bool| -> Option<f64> {
            events
                .iter()
                .find(|e| e.t_us >= t && pred(e))
                .map(|e| e.t_us)
        };
        let mut at: BTreeMap<&'static str, f64> = BTreeMap::new();
        at.insert("gap_start", gap_start);
        at.insert("first_echo", first_echo);
        let carrier = carrier_lost(events, p0);
        if let Some(c) = carrier {
            at.insert("carrier", c);
            if let Some(l) = after(c, &|e| {
                e.name == "workqueue_execute_start" && e.text.ends_with("linkwatch_event")
            }) {
                at.insert("linkwatch", l);
            }
        }
        // The switch learning the announced MAC on the target port, and the
        // announcement's transmit on that port just before it.
        let learned_from = carrier.unwrap_or(p0);
        if let Some(t) = switch_learned(
            events,
            learned_from,
            &switch_side,
            &self.announced_mac[target],
        ) {
            at.insert("switch_learned", t);
            if let Some(x) = events
                .iter()
                .rev()
                .find(|e| {
                    e.t_us <= t
                        && e.name == "net_dev_start_xmit"
                        && e.field("dev") == Some(port.as_str())
                })
                .map(|e| e.t_us)
            {
                at.insert("announcement_sent", x);
            }
        }
        if let Some(d) = &self.daemon {
            let tid = d.pid().map(|p| p as i32).unwrap_or(-1);
            let from = at.get("linkwatch").copied().unwrap_or(p0);
            let pid_is = |key: &'static str| {
                move |e: &Event| e.field(key).and_then(|v| v.parse::<i32>().ok()) == Some(tid)
            };
            if let Some(w) = after(from, &|e| e.name == "sched_wakeup" && pid_is("pid")(e)) {
                at.insert("daemon_woken", w);
                if let Some(r) = after(w, &|e| e.name == "sched_switch" && pid_is("next_pid")(e)) {
                    at.insert("daemon_running", r);
                }
            }
            if let Some(steps) = move_steps(&d.log_text(), p0, p0 + 1e6) {
                at.extend(steps);
            }
        }
        let window_end = events.last().map(|e| e.t_us).unwrap_or(p0);
        let seg = |a: &str, b: &str| Some(at.get(b)? - at.get(a)?);
        let mut segments = BTreeMap::new();
        for (name, a, b) in SEGMENTS {
            if let Some(v) = seg(a, b) {
                segments.insert(*name, v);
            }
        }
        let cpu_use = cpu_use(
            events,
            at.get("carrier").copied().unwrap_or(gap_start),
            first_echo.min(window_end),
        );
        Pull {
            side: self.kind,
            setup: self.setup,
            gap_ms: outage.ms,
            window_gap_ms: outage.window_ms,
            run_longest_gap_ms: report.longest_gap_ms,
            pulled_us,
            steps: at.into_iter().map(|(k, v)| (k, v - p0)).collect(),
            segments,
            cpu_use,
            stalls: Vec::new(),
            cold_meter_us: (f64::NAN, f64::NAN),
            beyond_window: first_echo > window_end,
            trace: events
                .iter()
                .filter(|e| e.t_us >= p0 && e.t_us <= first_echo + 100.0)
                .map(|e| e.line.clone())
                .collect(),
        }
    }
}

//! `baton dataplane ...`: the dataplane by hand (attach, own, steer,
//! counters, bench, verify), without the daemon.
use super::PinArgs;
use anyhow::{Result, bail};
use baton::dataplane::{self, AttachMode, PinDir};
use baton::render;
use baton_common::names;
use clap::Subcommand;

#[derive(Subcommand)]
pub enum DataplaneCmd {
    /// Attach baton's XDP program to ports (pinned: it stays after baton exits).
    Attach {
        /// A port to attach to (repeat for more).
        #[arg(long = "port", required = true)]
        ports: Vec<String>,
        /// XDP mode: auto (native, else generic/skb), native, or skb.
        #[arg(long, value_enum, default_value_t)]
        mode: AttachMode,
        /// Which programs (the others are benchmark baselines).
        #[arg(long, value_enum, default_value_t)]
        programs: dataplane::ProgramSet,
        #[command(flatten)]
        pins: PinArgs,
        /// JSON on stdout.
        #[arg(short, long)]
        json: bool,
    },
    /// Detach baton's XDP program from ports.
    Detach {
        /// A port to detach from (repeat for more).
        #[arg(long = "port", required = true)]
        ports: Vec<String>,
        #[command(flatten)]
        pins: PinArgs,
    },
    /// Per-port packet and byte counters by class.
    Stats {
        /// Only these ports (default: every port the dataplane has seen).
        #[arg(long = "port")]
        ports: Vec<String>,
        #[command(flatten)]
        pins: PinArgs,
        /// JSON on stdout.
        #[arg(short, long)]
        json: bool,
    },
    /// Make PORT the owner of ADDR in the instance table (what a move does).
    Own {
        /// The instance's address.
        address: std::net::IpAddr,
        /// The port that owns it.
        #[arg(long)]
        port: String,
        /// Its VLAN (its frames carry this tag).
        #[arg(long)]
        vlan: Option<u16>,
        /// The instance's own MAC (default: the port's).
        #[arg(long)]
        mac: Option<String>,
        /// The instance's dataplane id (its counters' key).
        #[arg(long, default_value_t = 0)]
        id: u32,
        /// A TCP port whose payload is iSCSI (repeat for more, at most 4).
        #[arg(long = "iscsi-port")]
        iscsi_ports: Vec<u16>,
        /// A CPU to steer the instance's flows to (repeat for more, at most 8).
        #[arg(long = "cpu")]
        cpus: Vec<u32>,
        /// CRC32C digests its iSCSI logins negotiate.
        #[arg(long, value_enum, default_value_t = DigestArg::None)]
        iscsi_digests: DigestArg,
        #[command(flatten)]
        pins: PinArgs,
    },
    /// Remove ADDR from the instance table.
    Disown {
        /// The instance's address.
        address: std::net::IpAddr,
        /// Its VLAN, if it has one.
        #[arg(long)]
        vlan: Option<u16>,
        #[command(flatten)]
        pins: PinArgs,
    },
    /// The instance table with per-port counters.
    Instances {
        #[command(flatten)]
        pins: PinArgs,
        /// JSON on stdout.
        #[arg(short, long)]
        json: bool,
    },
    /// Frames the XDP program steered to each CPU.
    Steered {
        #[command(flatten)]
        pins: PinArgs,
        /// JSON on stdout.
        #[arg(short, long)]
        json: bool,
    },
    /// Per-packet cost of each program (BPF_PROG_TEST_RUN); attaches nothing.
    Bench {
        /// Runs of each program per measurement.
        #[arg(long, default_value_t = 1_000_000)]
        repeat: u32,
        #[command(flatten)]
        pins: PinArgs,
    },
    /// The host's TCP sockets as the iter/tcp program reads them (state,
    /// snd_una, rcv_nxt, backoff): what the backoff revert acts on.
    Sockets {
        #[command(flatten)]
        pins: PinArgs,
    },
    /// Load and verify every program without attaching; print instruction counts.
    Verify {
        #[command(flatten)]
        pins: PinArgs,
    },
}

#[derive(Clone, Copy, Debug, clap::ValueEnum)]
pub enum DigestArg {
    None,
    Header,
    Data,
    Both,
}

impl From<DigestArg> for baton_config::model::Digests {
    fn from(d: DigestArg) -> Self {
        let (header, data) = match d {
            DigestArg::None => (false, false),
            DigestArg::Header => (true, false),
            DigestArg::Data => (false, true),
            DigestArg::Both => (true, true),
        };
        baton_config::model::Digests { header, data }
    }
}

pub fn dataplane_cmd(cmd: DataplaneCmd) -> Result<()> {
    match cmd {
        DataplaneCmd::Bench { repeat, pins } => {
            let costs = dataplane::bench::run(&PinDir::new(pins.pin_dir), repeat)?;
            println!("{}", serde_json::to_string_pretty(&costs)?);
        }
        DataplaneCmd::Attach {
            ports,
            mode,
            programs,
            pins,
            json,
        } => {
            let attached =
                dataplane::attach_set(&PinDir::new(pins.pin_dir), &ports, mode, programs)?;
            if json {
                println!("{}", serde_json::to_string_pretty(&attached)?);
            } else {
                for a in attached {
                    if a.mode == dataplane::Attachment::Replaced {
                        println!(
                            "{}: attached; its links ran other programs, now this baton's (swapped in place)",
                            a.port
                        );
                    } else if a.already() {
                        println!("{}: already attached", a.port);
                    } else {
                        println!(
                            "{}: attached {} ({} mode, {} instructions processed by the verifier) and {}",
                            a.port,
                            names::XDP_PROGRAM,
                            a.mode,
                            a.verified_instructions,
                            names::TC_EGRESS_PROGRAM
                        );
                    }
                }
            }
        }
        DataplaneCmd::Detach { ports, pins } => {
            dataplane::detach(&PinDir::new(pins.pin_dir), &ports)?;
            for port in ports {
                println!("{port}: detached");
            }
        }
        DataplaneCmd::Stats { ports, pins, json } => {
            let mut rows = dataplane::read_stats(&PinDir::new(pins.pin_dir))?;
            if !ports.is_empty() {
                for p in &ports {
                    baton::netdev::data_port(p)?;
                }
                rows.retain(|r| r.port.as_ref().is_some_and(|n| ports.contains(n)));
            }
            render::print_stats(&rows, json)?;
        }
        DataplaneCmd::Own {
            address,
            port,
            vlan,
            mac,
            id,
            iscsi_ports,
            cpus,
            iscsi_digests,
            pins,
        } => {
            use baton_config::model::{MAX_INSTANCE_CPUS, MAX_ISCSI_PORTS};
            if iscsi_ports.len() > MAX_ISCSI_PORTS || cpus.len() > MAX_INSTANCE_CPUS {
                bail!(
                    "an instance has at most {MAX_ISCSI_PORTS} iSCSI ports and {MAX_INSTANCE_CPUS} CPUs"
                );
            }
            let dev = baton::netdev::data_port(&port)?;
            let mac = match mac {
                Some(m) => Some(baton_config::model::parse_mac(&m).ok_or_else(|| {
                    anyhow::anyhow!("{m:?} is not a MAC address (aa:bb:cc:dd:ee:ff)")
                })?),
                None => None,
            };
            let pins = PinDir::new(pins.pin_dir);
            dataplane::steering::enable_cpus(&pins, cpus.iter().copied())?;
            let inst = baton_config::model::Instance {
                address: ipnet::IpNet::from(address),
                ports: vec![port.as_str().into()],
                vlan,
                mac,
                routes: vec![],
                services: iscsi_ports.clone(),
                iscsi_ports,
                iscsi_digests: iscsi_digests.into(),
                cpus,
                failback: baton_config::model::Failback::Never,
                revert_backoff: None,
                members: vec![],
                checks: None,
            };
            // Counted on its owner and the other attached ports.
            let others = pins
                .attached_ports()
                .into_iter()
                .filter(|p| *p != port)
                .filter_map(|p| baton::netdev::index_of(&p));
            let mut counted = [0; baton_common::MAX_COUNTED_PORTS];
            for (slot, ifindex) in counted
                .iter_mut()
                .zip(std::iter::once(dev.ifindex).chain(others))
            {
                *slot = ifindex;
            }
            let owner = dataplane::EntryOwner {
                id,
                ifindex: dev.ifindex,
                port_mac: baton::netdev::mac_of(&port)?,
                counted,
            };
            let entry = dataplane::entry_for(&inst, &owner);
            let mut table = dataplane::InstanceTable::open(&pins)?;
            table.set(&dataplane::key_for(vlan, address), &entry)?;
            println!("{address}: owned by {port}");
        }
        DataplaneCmd::Disown {
            address,
            vlan,
            pins,
        } => {
            let mut table = dataplane::InstanceTable::open(&PinDir::new(pins.pin_dir))?;
            table.remove(&dataplane::key_for(vlan, address))?;
            println!("{address}: removed");
        }
        DataplaneCmd::Instances { pins, json } => {
            let pins = PinDir::new(pins.pin_dir);
            let table = dataplane::InstanceTable::open(&pins)?;
            let counters = dataplane::instance_counters(&pins)?;
            let pdus = dataplane::pdu_counters(&pins)?;
            render::print_instances(&table, &counters, &pdus, json)?;
        }
        DataplaneCmd::Steered { pins, json } => {
            let steered = dataplane::steering::steered(&PinDir::new(pins.pin_dir))?;
            if json {
                let map: serde_json::Map<_, _> = steered
                    .iter()
                    .map(|(cpu, n)| (cpu.to_string(), serde_json::json!(n)))
                    .collect();
                println!("{}", serde_json::Value::Object(map));
            } else {
                for (cpu, n) in steered {
                    println!("cpu {cpu}: {n} frames steered");
                }
            }
        }
        DataplaneCmd::Sockets { pins } => {
            let mut sockets = dataplane::sockets::TcpSockets::load(&PinDir::new(pins.pin_dir))?;
            for s in sockets.read()? {
                println!(
                    "{} {}:{} -> {}:{} state {} snd_una {} rcv_nxt {} backoff {} retransmits {}",
                    if s.local.is_ipv4() { "tcp" } else { "tcp6" },
                    s.local,
                    s.local_port,
                    s.remote,
                    s.remote_port,
                    s.state,
                    s.snd_una,
                    s.rcv_nxt,
                    s.backoff,
                    s.retransmits
                );
            }
        }
        DataplaneCmd::Verify { pins } => {
            let pins = PinDir::new(pins.pin_dir);
            for prog in [
                names::XDP_PROGRAM,
                names::TC_EGRESS_PROGRAM,
                names::TC_INGRESS_PROGRAM,
                names::XDP_PASS_PROGRAM,
            ] {
                let (_ebpf, insns) = dataplane::load_xdp(&pins, prog)?;
                println!("{prog}: verified, {insns} instructions processed");
            }
        }
    }
    Ok(())
}

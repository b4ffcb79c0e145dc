//! `baton`: the command-line interface (and, later, the daemon).
use anyhow::Result;
use baton::dataplane::{self, AttachMode, DEFAULT_PIN_DIR, PinDir};
use baton_common::{Class, names};
use clap::{Parser, Subcommand};
use comfy_table::{Table, presets::NOTHING};
use std::path::PathBuf;

#[derive(Parser)]
#[command(
    name = "baton",
    version,
    about = "Keeps service addresses reachable when a port fails"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Validate a configuration file; print a summary, or every error.
    Check {
        #[arg(short, long, default_value = "/etc/baton/baton.toml")]
        config: PathBuf,
    },
    /// Attach, detach and inspect the XDP dataplane on this host's ports.
    #[command(subcommand)]
    Dataplane(DataplaneCmd),
}

#[derive(clap::Args)]
struct PinArgs {
    /// bpffs directory holding baton's pinned maps and links.
    #[arg(long, default_value = DEFAULT_PIN_DIR)]
    pin_dir: PathBuf,
}

#[derive(Subcommand)]
enum DataplaneCmd {
    /// Attach baton's XDP program to ports (pinned: it stays after baton exits).
    Attach {
        #[arg(long = "port", required = true)]
        ports: Vec<String>,
        #[arg(long, value_enum, default_value_t)]
        mode: AttachMode,
        #[command(flatten)]
        pins: PinArgs,
        #[arg(long)]
        json: bool,
    },
    /// Detach baton's XDP program from ports.
    Detach {
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
        #[arg(long)]
        json: bool,
    },
    /// Load and verify every program without attaching; print instruction counts.
    Verify {
        #[command(flatten)]
        pins: PinArgs,
    },
}

fn main() {
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env().unwrap_or_else(|_| "warn".into()),
        )
        .with_writer(std::io::stderr)
        .init();
    if let Err(err) = run(Cli::parse()) {
        eprintln!("baton: error: {err:#}");
        std::process::exit(1);
    }
}

fn run(cli: Cli) -> Result<()> {
    match cli.command {
        Command::Dataplane(cmd) => dataplane_cmd(cmd),
        Command::Check { config } => match baton_config::load(&config) {
            Ok(cfg) => {
                println!("{}: ok", config.display());
                print!("{}", baton::check::summary(&cfg));
                Ok(())
            }
            Err(errors) => {
                eprint!("{errors}");
                eprintln!(
                    "baton: {} error(s) in {}; nothing was applied",
                    errors.0.len(),
                    config.display()
                );
                std::process::exit(1);
            }
        },
    }
}

fn dataplane_cmd(cmd: DataplaneCmd) -> Result<()> {
    match cmd {
        DataplaneCmd::Attach {
            ports,
            mode,
            pins,
            json,
        } => {
            let attached = dataplane::attach(&PinDir::new(pins.pin_dir), &ports, mode)?;
            if json {
                println!("{}", serde_json::to_string_pretty(&attached)?);
            } else {
                for a in attached {
                    println!(
                        "{}: {} {} ({} verified instructions)",
                        a.port,
                        if a.mode == "already" {
                            "already attached:"
                        } else {
                            "attached"
                        },
                        if a.mode == "already" {
                            names::XDP_PROGRAM.to_string()
                        } else {
                            format!("{} mode {}", names::XDP_PROGRAM, a.mode)
                        },
                        a.verified_instructions
                    );
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
            print_stats(&rows, json)?;
        }
        DataplaneCmd::Verify { pins } => {
            let pins = PinDir::new(pins.pin_dir);
            for prog in [names::XDP_PROGRAM, names::XDP_PASS_PROGRAM] {
                let (_ebpf, insns) = dataplane::load_xdp(&pins, prog)?;
                println!("{prog}: verified, {insns} instructions");
            }
        }
    }
    Ok(())
}

fn print_stats(rows: &[dataplane::PortCounters], json: bool) -> Result<()> {
    if json {
        let value: Vec<_> = rows
            .iter()
            .map(|r| {
                let mut classes = serde_json::Map::new();
                for class in Class::ALL {
                    let c = r.stats.get(class);
                    classes.insert(
                        class.name().into(),
                        serde_json::json!({"packets": c.packets, "bytes": c.bytes}),
                    );
                }
                serde_json::json!({"ifindex": r.ifindex, "port": r.port, "classes": classes})
            })
            .collect();
        println!("{}", serde_json::to_string_pretty(&value)?);
        return Ok(());
    }
    let mut table = Table::new();
    table.load_preset(NOTHING);
    let mut header = vec!["port".to_string(), "frames".into(), "bytes".into()];
    header.extend(Class::ALL.iter().map(|c| c.name().to_string()));
    table.set_header(header);
    for r in rows {
        let frames = r.stats.frames();
        let mut row = vec![
            r.port.clone().unwrap_or_else(|| format!("if{}", r.ifindex)),
            frames.packets.to_string(),
            frames.bytes.to_string(),
        ];
        row.extend(
            Class::ALL
                .iter()
                .map(|c| r.stats.get(*c).packets.to_string()),
        );
        table.add_row(row);
    }
    println!("{table}");
    Ok(())
}

//! `baton`: the command-line interface; `baton run` starts the daemon
//! ([`baton::daemon`]).
use anyhow::{Context as _, Result};
use baton::dataplane::DEFAULT_PIN_DIR;
use baton::protocol::Request;
use baton::{client, render};
use clap::{CommandFactory as _, Parser, Subcommand};
use dataplane_cmd::{DataplaneCmd, dataplane_cmd};
use std::path::PathBuf;

mod dataplane_cmd;

#[derive(Parser)]
#[command(
    name = "baton",
    version = baton::VERSION,
    about = "Keeps service addresses reachable when a port fails"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Write baton(8), baton.toml(5) and shell completions into a directory (packaging).
    #[command(hide = true)]
    Manual {
        #[arg(long)]
        out: PathBuf,
    },
    /// Run the daemon: watch the ports, move instances, serve status.
    Run {
        #[arg(short, long, default_value = "/etc/baton/baton.toml")]
        config: PathBuf,
        #[command(flatten)]
        pins: PinArgs,
        #[command(flatten)]
        socket: SocketArgs,
    },
    /// Ports and instances as the daemon sees them.
    Status {
        #[arg(long)]
        json: bool,
        #[command(flatten)]
        socket: SocketArgs,
    },
    /// Planned move of an instance to another of its ports (make-before-break),
    /// or with --member to another cluster member (released, then taken).
    Move {
        instance: baton_config::InstanceName,
        #[arg(required_unless_present = "member", conflicts_with = "member")]
        port: Option<baton_config::PortName>,
        /// Hand the instance over to this cluster member.
        #[arg(long)]
        member: Option<baton_config::MemberId>,
        #[command(flatten)]
        socket: SocketArgs,
    },
    /// Follow moves, port changes and refusals as they happen.
    Events {
        #[arg(long)]
        json: bool,
        #[command(flatten)]
        socket: SocketArgs,
    },
    /// Validate and load the configuration file again (all or nothing).
    Reload {
        #[command(flatten)]
        socket: SocketArgs,
    },
    /// Validate a configuration file; print a summary, or every error.
    Check {
        #[arg(short, long, default_value = "/etc/baton/baton.toml")]
        config: PathBuf,
        /// Check the file alone, not against this host's interfaces (a file
        /// for another host).
        #[arg(long)]
        offline: bool,
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

#[derive(clap::Args)]
struct SocketArgs {
    /// The daemon's control socket.
    #[arg(long, default_value = baton::protocol::DEFAULT_SOCKET)]
    socket: PathBuf,
}

fn main() {
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| default_log_level().into());
    let ansi = std::io::IsTerminal::is_terminal(&std::io::stderr());
    // The daemon hands its lines to a writer thread: a slow or stuck reader
    // of stderr (journald, a full pipe) must never hold up a failover.
    let guard = if is_daemon() {
        let (writer, guard) = tracing_appender::non_blocking::NonBlockingBuilder::default()
            .lossy(true)
            .buffered_lines_limit(baton::logging::BUFFERED_LINES)
            .thread_name("baton-log")
            .finish(std::io::stderr());
        baton::logging::watch_drops(writer.error_counter());
        tracing_subscriber::fmt()
            .with_env_filter(filter)
            .with_writer(writer)
            .with_ansi(ansi)
            .init();
        Some(guard)
    } else {
        tracing_subscriber::fmt()
            .with_env_filter(filter)
            .with_writer(std::io::stderr)
            .with_ansi(ansi)
            .init();
        None
    };
    if let Err(err) = run(Cli::parse()) {
        // What is queued goes out first.
        drop(guard);
        eprintln!("baton: error: {err:#}");
        std::process::exit(1);
    }
}

fn is_daemon() -> bool {
    std::env::args().nth(1).as_deref() == Some("run")
}

/// The daemon logs its decisions and moves; CLI commands only their errors.
fn default_log_level() -> &'static str {
    if is_daemon() { "info" } else { "warn" }
}

fn run(cli: Cli) -> Result<()> {
    match cli.command {
        Command::Manual { out } => baton::manual::write_all(Cli::command(), &out),
        Command::Dataplane(cmd) => dataplane_cmd(cmd),
        Command::Run {
            config,
            pins,
            socket,
        } => baton::daemon::run(baton::daemon::Options {
            config,
            pin_dir: pins.pin_dir,
            socket: socket.socket,
        }),
        Command::Status { json, socket } => {
            let status = client::status(&socket.socket)?;
            if json {
                println!("{}", serde_json::to_string_pretty(&status)?);
            } else {
                print!("{}", render::render_status(&status));
            }
            Ok(())
        }
        Command::Move {
            instance,
            port,
            member,
            socket,
        } => {
            let request = match (port, member) {
                (_, Some(member)) => Request::Handover { instance, member },
                (Some(port), None) => Request::Move { instance, port },
                (None, None) => anyhow::bail!("give a PORT or --member ID"),
            };
            println!("{}", client::done(client::call(&socket.socket, request)?)?);
            Ok(())
        }
        Command::Reload { socket } => {
            println!(
                "{}",
                client::done(client::call(&socket.socket, Request::Reload)?)?
            );
            Ok(())
        }
        Command::Events { json, socket } => client::follow_events(&socket.socket, |e| {
            let line = if json {
                serde_json::to_string(&e).unwrap_or_default()
            } else {
                render::render_event(&e)
            };
            println!("{line}");
            std::io::Write::flush(&mut std::io::stdout()).is_ok()
        }),
        Command::Check { config, offline } => {
            let host = if offline {
                baton_config::Host::this_machine()
            } else {
                baton_config::Host::this_machine_and_interfaces()
                    .context("reading this host's interfaces (/sys/class/net)")?
            };
            check(&config, &host)
        }
    }
}

/// `baton check`: the summary, or every error and exit status 1.
fn check(config: &std::path::Path, host: &baton_config::Host) -> Result<()> {
    match baton_config::load_for(config, host) {
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
    }
}

#[cfg(test)]
mod tests {
    use super::Cli;
    use baton_config::schema::{KEYS, Table};
    use clap::CommandFactory as _;

    fn every_subcommand(cmd: &clap::Command, path: &str, out: &mut Vec<String>) {
        for sub in cmd.get_subcommands().filter(|s| !s.is_hide_set()) {
            let name = format!("{path} {}", sub.get_name());
            out.push(name.clone());
            every_subcommand(sub, &name, out);
        }
    }

    #[test]
    fn the_manual_lists_every_subcommand_and_every_config_key() {
        let page = String::from_utf8(baton::manual::command_page(Cli::command()).unwrap()).unwrap();
        let mut names = Vec::new();
        every_subcommand(&Cli::command(), "baton", &mut names);
        assert!(names.len() >= 15, "{names:?}");
        for name in &names {
            assert!(
                page.contains(&format!(".SS \"{name}\"")),
                "baton(8) lacks {name}"
            );
        }
        let toml = String::from_utf8(baton::manual::config_page()).unwrap();
        for table in Table::ALL {
            let at = toml
                .find(&format!(".SH \"{}\"", table.heading()))
                .unwrap_or_else(|| panic!("baton.toml(5) lacks {}", table.heading()));
            let section = &toml[at..];
            let end = section[4..].find(".SH ").map_or(section.len(), |e| e + 4);
            for key in KEYS.iter().filter(|k| k.table == table) {
                assert!(
                    section[..end].contains(&format!(".B {}\n", key.name)),
                    "baton.toml(5) lacks {} in {}",
                    key.name,
                    table.heading()
                );
            }
        }
    }
}

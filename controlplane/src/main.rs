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
        /// The directory to write into.
        #[arg(long)]
        out: PathBuf,
    },
    /// Run the daemon: watch the ports, move instances, serve status.
    Run {
        /// The configuration file.
        #[arg(short, long, default_value = "/etc/baton/baton.toml")]
        config: PathBuf,
        #[command(flatten)]
        pins: PinArgs,
        #[command(flatten)]
        socket: SocketArgs,
    },
    /// Ports and instances as the daemon sees them.
    Status {
        /// Only these instances (default: every one).
        instances: Vec<baton_config::InstanceName>,
        #[command(flatten)]
        out: OutputArgs,
        #[command(flatten)]
        socket: SocketArgs,
    },
    /// Planned move of an instance to another of its ports (make-before-break),
    /// or with --member to another cluster member (released, then taken).
    #[command(override_usage = "baton move INSTANCE PORT\n       baton move INSTANCE --member ID")]
    Move {
        /// The instance to move.
        instance: baton_config::InstanceName,
        /// The port of this host to move it to (one of its `ports`).
        #[arg(required_unless_present = "member", conflicts_with = "member")]
        port: Option<baton_config::PortName>,
        /// Hand the instance over to this cluster member.
        #[arg(long)]
        member: Option<baton_config::MemberId>,
        #[command(flatten)]
        out: OutputArgs,
        #[command(flatten)]
        socket: SocketArgs,
    },
    /// Follow moves, port changes and refusals as they happen.
    Events {
        #[command(flatten)]
        out: OutputArgs,
        #[command(flatten)]
        socket: SocketArgs,
    },
    /// Validate and load the configuration file again (all or nothing).
    Reload {
        #[command(flatten)]
        out: OutputArgs,
        #[command(flatten)]
        socket: SocketArgs,
    },
    /// Validate a configuration file; print a summary, or every error.
    Check {
        /// The file (default: /etc/baton/baton.toml).
        #[arg(conflicts_with = "config")]
        file: Option<PathBuf>,
        /// The file, as `baton run -c` takes it.
        #[arg(short, long)]
        config: Option<PathBuf>,
        /// Check the file alone, not against this host's interfaces (a file
        /// for another host).
        #[arg(long)]
        offline: bool,
        #[command(flatten)]
        out: OutputArgs,
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
struct OutputArgs {
    /// JSON on stdout (errors too, as {"error": ...}, with a non-zero exit).
    #[arg(short, long)]
    json: bool,
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
    let cli = Cli::parse();
    let json = cli.command.json();
    if let Err(err) = run(cli) {
        // What is queued goes out first.
        drop(guard);
        if json {
            println!("{}", serde_json::json!({ "error": format!("{err:#}") }));
        } else {
            eprintln!("baton: error: {err:#}");
        }
        std::process::exit(1);
    }
}

impl Command {
    /// Whether it answers in JSON (its errors too).
    fn json(&self) -> bool {
        match self {
            Command::Status { out, .. }
            | Command::Move { out, .. }
            | Command::Events { out, .. }
            | Command::Reload { out, .. }
            | Command::Check { out, .. } => out.json,
            _ => false,
        }
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
        Command::Status {
            instances,
            out,
            socket,
        } => {
            let mut status = client::status(&socket.socket)?;
            if !instances.is_empty() {
                status.only(&instances)?;
            }
            if out.json {
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
            out,
            socket,
        } => {
            let request = match (port, member) {
                (_, Some(member)) => Request::Handover { instance, member },
                (Some(port), None) => Request::Move { instance, port },
                (None, None) => anyhow::bail!("give a PORT or --member ID"),
            };
            done(out.json, client::call(&socket.socket, request)?)
        }
        Command::Reload { out, socket } => {
            done(out.json, client::call(&socket.socket, Request::Reload)?)
        }
        Command::Events { out, socket } => client::follow_events(&socket.socket, |e| {
            let line = if out.json {
                serde_json::to_string(&e).unwrap_or_default()
            } else {
                render::render_event(&e)
            };
            println!("{line}");
            std::io::Write::flush(&mut std::io::stdout()).is_ok()
        }),
        Command::Check {
            file,
            config,
            offline,
            out,
        } => {
            let path = file
                .or(config)
                .unwrap_or_else(|| PathBuf::from("/etc/baton/baton.toml"));
            let host = if offline {
                baton_config::Host::this_machine()
            } else {
                baton_config::Host::this_machine_and_interfaces()
                    .context("reading this host's interfaces (/sys/class/net)")?
            };
            check(&path, &host, out.json)
        }
    }
}

/// A `Done` answer printed (JSON: `{"ok": true, "message": ...}`); an
/// `Error` is the command's error.
fn done(json: bool, response: baton::protocol::Response) -> Result<()> {
    let message = client::done(response)?;
    if json {
        println!("{}", serde_json::json!({ "ok": true, "message": message }));
    } else {
        println!("{message}");
    }
    Ok(())
}

/// `baton check`: the summary, or every error and exit status 1.
fn check(config: &std::path::Path, host: &baton_config::Host, json: bool) -> Result<()> {
    let loaded = baton_config::load_for(config, host);
    if json {
        let answer = match &loaded {
            Ok(cfg) => serde_json::json!({
                "ok": true,
                "file": config.display().to_string(),
                "placement": baton::check::placement_json(cfg),
            }),
            Err(errors) => serde_json::json!({
                "ok": false,
                "file": config.display().to_string(),
                "errors": errors.0.iter().map(|d| serde_json::json!({
                    "line": d.position.map(|p| p.0),
                    "column": d.position.map(|p| p.1),
                    "path": d.path,
                    "message": d.message,
                })).collect::<Vec<_>>(),
            }),
        };
        println!("{answer}");
        if loaded.is_err() {
            std::process::exit(1);
        }
        return Ok(());
    }
    match loaded {
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
    fn every_option_and_argument_says_what_it_is() {
        fn walk(cmd: &clap::Command, path: &str, missing: &mut Vec<String>) {
            for arg in cmd.get_arguments() {
                let id = arg.get_id().as_str();
                if id != "help" && id != "version" && arg.get_help().is_none() {
                    missing.push(format!("{path} {id}"));
                }
            }
            for sub in cmd.get_subcommands() {
                walk(sub, &format!("{path} {}", sub.get_name()), missing);
            }
        }
        let mut missing = Vec::new();
        walk(&Cli::command(), "baton", &mut missing);
        assert!(missing.is_empty(), "no help text: {missing:?}");
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

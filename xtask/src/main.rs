//! `cargo xtask ...`: set-up, build, load, demo and test for baton.
mod bench;
mod bench_cluster;
mod bench_dataplane;
mod bench_pulls;
mod bench_revert;
mod cluster_keepalived;
mod cluster_partition;
mod cluster_site;
mod demo;
mod demo_cluster;
mod ktrace;
mod package;
mod pcap;
mod pull_lab;
mod pull_side;
mod pull_trace;
mod pulls_summary;
mod report;
mod report_svg;
mod setup;
mod stall_meter;
mod stats;

use anyhow::{Context as _, Result, bail};
use clap::{Parser, Subcommand};
use std::path::{Path, PathBuf};
use std::process::Command;

#[derive(Parser)]
#[command(name = "cargo xtask")]
struct Cli {
    #[command(subcommand)]
    command: Cmd,
}

#[derive(Subcommand)]
enum Cmd {
    /// Install what is missing (apt packages, rust-src, bpf-linker) and mount bpffs.
    Setup,
    /// Release build of `baton` with its BPF object; prints the binary's path.
    Build,
    /// Attach the dataplane to this host's ports (through the `baton` binary).
    Load {
        #[arg(long = "port", required = true)]
        ports: Vec<String>,
        /// Extra arguments for `baton dataplane attach` (e.g. --mode skb).
        #[arg(last = true)]
        rest: Vec<String>,
    },
    /// Detach the dataplane from this host's ports.
    Unload {
        #[arg(long = "port", required = true)]
        ports: Vec<String>,
        #[arg(last = true)]
        rest: Vec<String>,
    },
    /// The lab demo: builds a lab, attaches the dataplane, sends traffic, prints counters.
    Demo {
        /// `cluster`: two gateways on etcd, one failing whole, tickles on and off.
        #[arg(value_enum)]
        which: Option<DemoKind>,
    },
    /// Benchmarks with same-run baselines; results in target/bench/NAME.json.
    Bench {
        #[arg(value_enum)]
        which: BenchKind,
        /// Rounds of pulls for `failover` and `pulls`: one pull per side each
        /// (at least 50 for a p99).
        #[arg(long, default_value_t = bench::PULLS)]
        pulls: usize,
    },
    /// The Debian package (target/debian/baton_VERSION_amd64.deb); --check proves it.
    Package {
        #[arg(long)]
        check: bool,
    },
    /// The fault soak for longer than CI's minute (seconds; default 600).
    Soak {
        #[arg(default_value_t = 600)]
        seconds: u64,
    },
    /// The failover bench's cold meter (a process of its own; not for users).
    #[command(hide = true)]
    ColdMeter,
    /// Everything CI checks: fmt, clippy, unit, BPF and lab tests.
    Test {
        /// Passed to `cargo test` (e.g. a test name filter).
        #[arg(last = true)]
        rest: Vec<String>,
    },
}

#[derive(Clone, Copy, clap::ValueEnum)]
enum DemoKind {
    /// Two gateways sharing instances through etcd; a whole unit fails.
    Cluster,
}

#[derive(Clone, Copy, clap::ValueEnum)]
enum BenchKind {
    /// Pulled cables against a scripted move, floods, scale, the backoff revert.
    Failover,
    Dataplane,
    /// The backoff revert under iSCSI, on and off (also part of `failover`).
    Revert,
    /// Pulled cables alone, baton and the script taking turns, every pull
    /// traced (also part of `failover`).
    Pulls,
    /// Unit failures, handovers and a partition: baton on etcd against keepalived.
    Cluster,
}

fn main() {
    if let Err(err) = run(Cli::parse()) {
        eprintln!("xtask: error: {err:#}");
        std::process::exit(1);
    }
}

fn run(cli: Cli) -> Result<()> {
    match cli.command {
        Cmd::Setup => setup::setup(),
        Cmd::Build => {
            let bin = build_release()?;
            println!("{}", bin.display());
            Ok(())
        }
        Cmd::Load { ports, rest } => baton_ports("attach", &ports, &rest),
        Cmd::Unload { ports, rest } => baton_ports("detach", &ports, &rest),
        Cmd::Demo { which } => {
            setup::setup()?;
            let bin = build_release()?;
            match which {
                None => demo::run(&bin),
                Some(DemoKind::Cluster) => demo_cluster::run(&bin),
            }
        }
        Cmd::Test { rest } => test(&rest),
        Cmd::ColdMeter => stall_meter::serve(),
        Cmd::Package { check } => package::package(check),
        Cmd::Soak { seconds } => {
            setup::setup()?;
            sh("cargo", &["build", "--quiet", "-p", "baton"])?;
            let status = Command::new("cargo")
                .args([
                    "test",
                    "-p",
                    "baton-lab",
                    "--test",
                    "soak",
                    "--",
                    "--nocapture",
                ])
                .env("BATON_BIN", workspace_root().join("target/debug/baton"))
                .env("BATON_SOAK_SECS", seconds.to_string())
                .current_dir(workspace_root())
                .status()
                .context("starting the soak")?;
            if !status.success() {
                bail!("soak failed");
            }
            Ok(())
        }
        Cmd::Bench { which, pulls } => {
            let bin = build_release()?;
            baton_lab::use_baton_bin(bin);
            let dir = workspace_root().join("target/bench");
            std::fs::create_dir_all(&dir)?;
            let (name, result) = match which {
                BenchKind::Failover => ("failover", bench::failover(pulls)?),
                BenchKind::Dataplane => ("dataplane", bench_dataplane::dataplane()?),
                BenchKind::Revert => ("revert", bench_revert::revert()?),
                BenchKind::Pulls => ("pulls", pulls_summary::run(pulls)?.json),
                BenchKind::Cluster => ("cluster", bench_cluster::cluster()?),
            };
            let path = dir.join(format!("{name}.json"));
            std::fs::write(&path, serde_json::to_string_pretty(&result)?)?;
            println!("wrote {}", path.display());
            Ok(())
        }
    }
}

pub fn workspace_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .map(Path::to_path_buf)
        .unwrap_or_default()
}

/// Runs a command from the workspace root, failing with its name on non-zero exit.
pub fn sh(program: &str, args: &[&str]) -> Result<()> {
    let status = Command::new(program)
        .args(args)
        .current_dir(workspace_root())
        .status()
        .with_context(|| format!("starting {program}"))?;
    if !status.success() {
        bail!("`{program} {}` failed ({status})", args.join(" "));
    }
    Ok(())
}

pub fn build_release() -> Result<PathBuf> {
    setup::setup()?;
    sh("cargo", &["build", "--release", "--quiet", "-p", "baton"])?;
    Ok(workspace_root().join("target/release/baton"))
}

fn baton_ports(verb: &str, ports: &[String], rest: &[String]) -> Result<()> {
    let bin = build_release()?;
    let mut args = vec!["dataplane".to_string(), verb.to_string()];
    for p in ports {
        args.extend(["--port".to_string(), p.clone()]);
    }
    args.extend(rest.iter().cloned());
    let status = Command::new(&bin)
        .args(&args)
        .status()
        .context("running baton")?;
    if !status.success() {
        bail!("baton dataplane {verb} failed");
    }
    Ok(())
}

fn test(rest: &[String]) -> Result<()> {
    let started = std::time::Instant::now();
    setup::setup()?;
    sh("cargo", &["fmt", "--all", "--check"])?;
    sh(
        "cargo",
        &["clippy", "--quiet", "--all-targets", "--", "-D", "warnings"],
    )?;
    sh("cargo", &["build", "--quiet", "-p", "baton"])?;
    let stale = baton_lab::sweep_stale()?;
    if !stale.is_empty() {
        println!(
            "xtask: removed {} lab leftovers of killed runs",
            stale.len()
        );
    }
    let bin = workspace_root().join("target/debug/baton");
    let mut args = vec!["test", "--workspace", "--exclude", "baton-ebpf"];
    args.extend(rest.iter().map(String::as_str));
    let status = Command::new("cargo")
        .args(&args)
        .env("BATON_BIN", &bin)
        .current_dir(workspace_root())
        .status()
        .context("starting cargo test")?;
    // Whatever the outcome, no test may leave a namespace or pin behind.
    let leaked = baton_lab::sweep_stale()?;
    if !status.success() {
        bail!("tests failed");
    }
    if !leaked.is_empty() {
        bail!(
            "tests left lab objects behind (now removed): {}",
            leaked.join(", ")
        );
    }
    println!(
        "xtask: all checks passed in {:.0} s",
        started.elapsed().as_secs_f64()
    );
    Ok(())
}

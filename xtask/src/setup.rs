//! Installs what baton's build and lab need, and only what is missing.
//! Idempotent; a few hundred milliseconds when everything is there.
use crate::sh;
use anyhow::{Context as _, Result, bail};
use std::process::Command;

/// LLVM for bpf-linker (TOOLCHAIN.md), then the lab's real peers and tools.
const APT_PACKAGES: &[&str] = &[
    "llvm-22-dev",
    "libpolly-22-dev",
    "libzstd-dev",
    "zlib1g-dev",
    "tgt",
    "libiscsi-bin",
    "iperf3",
    "netsniff-ng",
    "iputils-arping",
    "iputils-ping",
    "tcpdump",
    "ethtool",
    "iproute2",
    "util-linux",
    "procps",
    // Packaging checks and the dashboard's queries.
    "lintian",
    "prometheus",
    "man-db",
    // The cluster: etcd members in the lab; protoc for etcd-client's build,
    // with the well-known types it imports (google/protobuf/*.proto: a
    // recommends of protobuf-compiler, so not there without this).
    "etcd-server",
    "protobuf-compiler",
    "libprotobuf-dev",
    // The cluster bench's baseline (VRRP).
    "keepalived",
];
const BPF_LINKER_VERSION: &str = "0.13.0";

pub fn setup() -> Result<()> {
    apt()?;
    rust_src()?;
    bpf_linker()?;
    baton_lab::ensure_bpffs()
}

fn apt() -> Result<()> {
    let out = Command::new("dpkg-query")
        .args(["-W", "-f=${Package} ${db:Status-Abbrev}\n"])
        .args(APT_PACKAGES)
        .output()
        .context("running dpkg-query")?;
    let installed = String::from_utf8_lossy(&out.stdout);
    let missing: Vec<&str> = APT_PACKAGES
        .iter()
        .copied()
        .filter(|p| !installed.lines().any(|l| l.starts_with(&format!("{p} ii"))))
        .collect();
    if missing.is_empty() {
        return Ok(());
    }
    println!("xtask setup: installing {}", missing.join(" "));
    sh("apt-get", &["update", "-q"])?;
    let mut args = vec!["install", "-y", "-q", "--no-install-recommends"];
    args.extend(missing);
    let status = Command::new("apt-get")
        .args(&args)
        .env("DEBIAN_FRONTEND", "noninteractive")
        .status()
        .context("running apt-get install")?;
    if !status.success() {
        bail!("apt-get install failed");
    }
    Ok(())
}

fn rust_src() -> Result<()> {
    let out = Command::new("rustup")
        .args(["component", "list", "--installed", "--toolchain", "nightly"])
        .output()
        .context("running rustup (the BPF crate needs a nightly toolchain)")?;
    if !out.status.success() {
        bail!(
            "no nightly toolchain: `rustup toolchain install nightly` (BPF builds need -Z build-std)"
        );
    }
    if String::from_utf8_lossy(&out.stdout)
        .lines()
        .any(|l| l.starts_with("rust-src"))
    {
        return Ok(());
    }
    println!("xtask setup: adding rust-src to nightly");
    sh(
        "rustup",
        &["component", "add", "rust-src", "--toolchain", "nightly"],
    )
}

fn bpf_linker() -> Result<()> {
    let have = Command::new("bpf-linker")
        .arg("--version")
        .output()
        .map(|o| String::from_utf8_lossy(&o.stdout).contains(BPF_LINKER_VERSION))
        .unwrap_or(false);
    if have {
        return Ok(());
    }
    println!(
        "xtask setup: building bpf-linker {BPF_LINKER_VERSION} against LLVM 22 (about a minute)"
    );
    let status = Command::new("cargo")
        .args(["install", "bpf-linker", "--version", BPF_LINKER_VERSION])
        .args(["--no-default-features", "--features", "llvm-22"])
        .env("LLVM_PREFIX", "/usr/lib/llvm-22")
        .status()
        .context("running cargo install bpf-linker")?;
    if !status.success() {
        bail!("cargo install bpf-linker failed");
    }
    Ok(())
}

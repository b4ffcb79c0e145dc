//! `cargo xtask package [--check]`: the Debian package, built by cargo-deb
//! (installed when missing) from the release binary, the unit, the
//! commented config, the examples, the generated manual and completions,
//! and the Grafana dashboard. `--check` then proves it: the file list and
//! control fields, lintian without errors, `systemd-analyze verify` of the
//! unit as installed, and its exposure score held under a bound beside
//! keepalived's own unit, measured the same way.
use crate::{sh, workspace_root};
use anyhow::{Context as _, Result, bail};
use std::path::{Path, PathBuf};
use std::process::Command;

const CARGO_DEB_VERSION: &str = "3.8.0";
/// The goal for `systemd-analyze security --offline=yes` (lower is safer).
const EXPOSURE_BOUND: f64 = 3.0;

/// Files the package must hold (beside the systemd unit).
const FILES: &[&str] = &[
    "./usr/sbin/baton",
    "./etc/baton/baton.toml",
    "./usr/lib/systemd/system/baton.service",
    "./usr/share/man/man8/baton.8.gz",
    "./usr/share/man/man5/baton.toml.5.gz",
    "./usr/share/bash-completion/completions/baton",
    "./usr/share/zsh/vendor-completions/_baton",
    "./usr/share/fish/vendor_completions.d/baton.fish",
    "./usr/share/doc/baton/examples/lab.toml",
    "./usr/share/doc/baton/examples/cluster.toml",
    "./usr/share/doc/baton/grafana/baton.json",
    "./usr/share/doc/baton/copyright",
    "./usr/share/doc/baton/changelog.Debian.gz",
];

pub fn package(check: bool) -> Result<()> {
    let bin = crate::build_release()?;
    cargo_deb()?;
    // The manual and completions, from the binary itself.
    let manual = workspace_root().join("target/release/manual");
    let status = Command::new(&bin)
        .arg("manual")
        .arg("--out")
        .arg(&manual)
        .status()
        .context("running baton manual")?;
    if !status.success() {
        bail!("baton manual failed");
    }
    // Debian ships manual pages compressed (-n: no name or time: reproducible).
    for page in ["baton.8", "baton.toml.5"] {
        let path = manual.join(page);
        sh("gzip", &["-9nf", path.to_str().context("path")?])?;
    }
    // The commented config must be one that `baton check` accepts.
    sh(
        bin.to_str().context("path")?,
        &["check", "--offline", "-c", "contrib/baton.toml"],
    )?;
    sh("cargo", &["deb", "--quiet", "-p", "baton", "--no-build"])?;
    let deb = deb_path()?;
    println!("{}", deb.display());
    if check {
        check_package(&deb)?;
    }
    Ok(())
}

fn deb_path() -> Result<PathBuf> {
    let version = env!("CARGO_PKG_VERSION");
    let deb = workspace_root().join(format!("target/debian/baton_{version}_amd64.deb"));
    if !deb.exists() {
        bail!("cargo-deb made no {}", deb.display());
    }
    Ok(deb)
}

fn cargo_deb() -> Result<()> {
    let have = Command::new("cargo")
        .args(["deb", "--version"])
        .output()
        .is_ok_and(|o| o.status.success());
    if have {
        return Ok(());
    }
    println!("xtask package: installing cargo-deb {CARGO_DEB_VERSION}");
    sh(
        "cargo",
        &[
            "install",
            "--quiet",
            "--locked",
            "cargo-deb",
            "--version",
            CARGO_DEB_VERSION,
        ],
    )
}

fn output(program: &str, args: &[&str]) -> Result<String> {
    let out = Command::new(program)
        .args(args)
        .current_dir(workspace_root())
        .output()
        .with_context(|| format!("starting {program}"))?;
    // lintian and systemd-analyze report through their exit codes and both streams.
    Ok(String::from_utf8_lossy(&out.stdout).into_owned() + &String::from_utf8_lossy(&out.stderr))
}

fn check_package(deb: &Path) -> Result<()> {
    let deb_s = deb.to_str().context("path")?;
    let contents = output("dpkg-deb", &["--contents", deb_s])?;
    let listed: Vec<&str> = contents
        .lines()
        .filter_map(|l| l.split_whitespace().last())
        .collect();
    println!("package files:");
    for f in &listed {
        println!("  {f}");
    }
    let missing: Vec<&&str> = FILES.iter().filter(|f| !listed.contains(f)).collect();
    if !missing.is_empty() {
        bail!("the package lacks {missing:?}");
    }
    let control = output("dpkg-deb", &["--field", deb_s])?;
    println!("{control}");
    for field in ["Package: baton", "Section: net", "Depends:", "Maintainer:"] {
        if !control.contains(field) {
            bail!("control has no {field:?}");
        }
    }
    if control.contains("iproute2") {
        bail!("the package depends on iproute2, which baton does not use");
    }
    let conffiles = output("dpkg-deb", &["--info", deb_s, "conffiles"])?;
    if !conffiles.contains("/etc/baton/baton.toml") {
        bail!("/etc/baton/baton.toml is not a conffile: {conffiles}");
    }
    // Nothing is enabled without the admin.
    let postinst = output("dpkg-deb", &["--info", deb_s, "postinst"])?;
    if postinst.contains("systemctl enable") || postinst.contains("deb-systemd-invoke start") {
        bail!("postinst enables or starts something:\n{postinst}");
    }

    let lintian = output("lintian", &["--tag-display-limit", "0", deb_s])?;
    println!("lintian:\n{lintian}");
    let errors: Vec<&str> = lintian.lines().filter(|l| l.starts_with("E:")).collect();
    if !errors.is_empty() {
        bail!("lintian errors: {errors:#?}");
    }

    // The unit as installed: unpack the package into a scratch root.
    let root = std::env::temp_dir().join(format!("baton-package-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&root);
    std::fs::create_dir_all(&root)?;
    let result = check_unit(deb_s, &root);
    let _ = std::fs::remove_dir_all(&root);
    result
}

fn check_unit(deb: &str, root: &Path) -> Result<()> {
    let root_s = root.to_str().context("path")?;
    sh("dpkg-deb", &["-x", deb, root_s])?;
    // The host's own units beside ours: verify follows dependencies
    // (sysinit.target, ...) inside the root it is given.
    let units = root.join("usr/lib/systemd/system");
    for entry in std::fs::read_dir("/usr/lib/systemd/system").context("the host's units")? {
        let entry = entry?;
        let to = units.join(entry.file_name());
        if entry.file_type()?.is_file() && !to.exists() {
            std::fs::copy(entry.path(), to)?;
        }
    }
    let unit = units.join("baton.service");
    let unit_s = unit.to_str().context("path")?;
    let verify = Command::new("systemd-analyze")
        .args(["verify", "--man=no", &format!("--root={root_s}"), unit_s])
        .output()
        .context("systemd-analyze verify")?;
    let said = String::from_utf8_lossy(&verify.stderr).into_owned();
    if !verify.status.success() || said.lines().any(|l| !l.trim().is_empty()) {
        bail!("systemd-analyze verify: {said}");
    }
    let ours = exposure(unit_s)?;
    let keepalived = Path::new("/lib/systemd/system/keepalived.service");
    let theirs = if keepalived.exists() {
        Some(exposure(keepalived.to_str().context("path")?)?)
    } else {
        None
    };
    println!(
        "systemd-analyze security --offline=yes: baton.service {ours:.1}; keepalived.service {}",
        theirs.map_or("(keepalived not installed)".to_string(), |e| format!(
            "{e:.1}"
        ))
    );
    if ours > EXPOSURE_BOUND {
        bail!("baton.service exposure {ours:.1} is over {EXPOSURE_BOUND}");
    }
    println!("xtask package --check: ok");
    Ok(())
}

/// "→ Overall exposure level for baton.service: 2.8 OK".
fn exposure(unit: &str) -> Result<f64> {
    let text = output(
        "systemd-analyze",
        &["security", "--offline=yes", "--no-pager", unit],
    )?;
    text.lines()
        .find_map(|l| {
            let (_, rest) = l.split_once("Overall exposure level for")?;
            rest.split(':')
                .nth(1)?
                .split_whitespace()
                .next()?
                .parse()
                .ok()
        })
        .with_context(|| format!("no exposure score in: {text}"))
}

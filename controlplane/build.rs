//! Builds the BPF object (`dataplane-ebpf`, bin `baton-dataplane`) with
//! nightly + build-std through aya-build; `src/dataplane` embeds it.
use anyhow::Context as _;

fn main() -> anyhow::Result<()> {
    let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .context("controlplane has no parent directory")?
        .join("dataplane-ebpf");
    let root = root.to_str().context("non-UTF-8 path to dataplane-ebpf")?;
    aya_build::build_ebpf(
        [aya_build::Package {
            name: "baton-ebpf",
            root_dir: root,
            ..Default::default()
        }],
        aya_build::Toolchain::Nightly,
    )?;
    version_facts()
}

/// For `baton --version`: the git commit built, and the SHA-256 of the BPF
/// object embedded (which programs a binary will load, whatever its version).
fn version_facts() -> anyhow::Result<()> {
    use sha2::Digest as _;
    let out = std::path::PathBuf::from(std::env::var("OUT_DIR")?);
    let object = std::fs::read(out.join("baton-dataplane")).context("reading the BPF object")?;
    let digest = sha2::Sha256::digest(&object);
    let hex: String = digest.iter().map(|b| format!("{b:02x}")).collect();
    println!("cargo:rustc-env=BATON_BPF_SHA256={hex}");
    let git = |args: &[&str]| {
        std::process::Command::new("git")
            .args(args)
            .output()
            .ok()
            .filter(|o| o.status.success())
            .map(|o| String::from_utf8_lossy(&o.stdout).trim().to_string())
    };
    let commit = git(&["rev-parse", "--short=12", "HEAD"]).unwrap_or_else(|| "unknown".into());
    let dirty =
        git(&["status", "--porcelain", "--untracked-files=no"]).is_some_and(|s| !s.is_empty());
    let suffix = if dirty { "-dirty" } else { "" };
    println!("cargo:rustc-env=BATON_GIT_COMMIT={commit}{suffix}");
    if let Some(dir) = git(&["rev-parse", "--git-dir"]) {
        let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("..")
            .join(dir);
        for f in ["HEAD", "index"] {
            println!("cargo:rerun-if-changed={}", dir.join(f).display());
        }
    }
    Ok(())
}

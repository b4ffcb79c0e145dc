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
    )
}

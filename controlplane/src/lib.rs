//! baton's control plane: the daemon, the CLI and the dataplane loader.
//!
//! Flow (see ARCHITECTURE.md): link events -> decision -> actions -> status.
//! `daemon` holds the stages (monitor, actuator, announce, control); the pure
//! decision engine is `crate::decide`; `client` is the CLI side of the
//! control socket whose messages `protocol` defines.
/// `baton --version`: the version, the git commit built and the SHA-256 of
/// the embedded BPF object.
pub const VERSION: &str = concat!(
    env!("CARGO_PKG_VERSION"),
    " (commit ",
    env!("BATON_GIT_COMMIT"),
    ", bpf sha256 ",
    env!("BATON_BPF_SHA256"),
    ")"
);

pub mod check;
pub mod client;
pub mod cluster;
pub mod daemon;
pub mod dataplane;
pub mod decide;
pub mod logging;
pub mod manual;
pub mod netdev;
pub mod protocol;
pub mod render;

//! baton's control plane: the daemon, the CLI and the dataplane loader.
//!
//! Flow (see ARCHITECTURE.md): link events -> decision -> actions -> status.
//! `daemon` holds the stages (monitor, actuator, announce, control); the pure
//! decision engine is `crate::decide`; `client` is the CLI side of the
//! control socket whose messages `protocol` defines.
pub mod check;
pub mod client;
pub mod daemon;
pub mod dataplane;
pub mod decide;
pub mod netdev;
pub mod protocol;
pub mod render;

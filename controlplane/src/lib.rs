//! baton's control plane: the daemon, the CLI and the dataplane loader.
//!
//! Flow (see ARCHITECTURE.md): link events -> decision -> actions -> status.
//! Today this crate holds the dataplane loader; the daemon stages land beside
//! it as `monitor`, `decide` (in `baton-config`'s engine), `actuator`, `status`.
pub mod check;
pub mod dataplane;
pub mod netdev;

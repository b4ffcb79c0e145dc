//! The control protocol between `baton` CLI commands and the daemon: one
//! JSON object per line over a root-only Unix socket. Version 1.
use serde::{Deserialize, Serialize};

pub const VERSION: u32 = 1;
pub const DEFAULT_SOCKET: &str = "/run/baton/baton.sock";

#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(tag = "cmd", rename_all = "lowercase")]
pub enum Request {
    Status,
    Move { instance: String, port: String },
    Reload,
    Events,
}

#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct Envelope<T> {
    pub v: u32,
    #[serde(flatten)]
    pub body: T,
}

#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(tag = "result", rename_all = "lowercase")]
pub enum Response {
    Status(Status),
    Done { message: String },
    Error { message: String },
}

#[derive(Clone, Debug, Default, Serialize, Deserialize)]
pub struct Status {
    pub config: String,
    pub uptime_ms: u64,
    pub ports: Vec<PortStatus>,
    pub instances: Vec<InstanceStatus>,
}

#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct PortStatus {
    pub name: String,
    pub ifindex: Option<u32>,
    /// What the engine makes of it: up, settling, held-down, failed, missing.
    pub state: String,
    /// What the kernel says: up, no-carrier, admin-down, missing.
    pub link: String,
    /// Milliseconds since the link last changed.
    pub since_ms: u64,
    /// Frames seen by the dataplane at ingress.
    pub rx_frames: u64,
}

#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct InstanceStatus {
    pub name: String,
    pub address: String,
    pub ports: Vec<String>,
    pub owner: Option<String>,
    /// Why it is not where the engine would like it (no eligible port), per port.
    pub refused: Vec<(String, String)>,
    pub last_move: Option<MoveRecord>,
    /// Per port: frames addressed to it and ms since the last one.
    pub traffic: Vec<PortTraffic>,
}

#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct PortTraffic {
    pub port: String,
    pub rx_packets: u64,
    pub last_seen_ms: Option<u64>,
}

#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct MoveRecord {
    pub from: Option<String>,
    pub to: String,
    pub kind: String,
    /// Milliseconds since the daemon started.
    pub at_ms: u64,
    /// How long the move itself took, in microseconds.
    pub took_us: u64,
}

/// What `baton events` follows.
#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(tag = "event", rename_all = "kebab-case")]
pub enum Event {
    Port {
        at_ms: u64,
        port: String,
        link: String,
        state: String,
    },
    Move {
        at_ms: u64,
        instance: String,
        from: Option<String>,
        to: String,
        kind: String,
        took_us: u64,
    },
    Refused {
        at_ms: u64,
        instance: String,
        port: String,
        reason: String,
    },
    MoveFailed {
        at_ms: u64,
        instance: String,
        to: String,
        error: String,
    },
    Reload {
        at_ms: u64,
        ok: bool,
        message: String,
    },
}

//! The control socket and the metrics endpoint run on a thread of their
//! own, at normal priority: a flood of clients or scrapes competes with
//! other processes, never with a move on the real-time main thread. The
//! main loop only sees requests through a bounded channel.
use super::{control, metrics};
use crate::protocol::Event;
use anyhow::{Context as _, Result};
use std::sync::Arc;
use tokio::net::UnixListener;
use tokio::sync::{broadcast, mpsc};
use tracing::error;

pub fn spawn(
    control: UnixListener,
    calls: mpsc::Sender<control::Call>,
    events: broadcast::Sender<Event>,
    metrics_at: Option<std::net::SocketAddr>,
    metrics: Arc<metrics::Metrics>,
) -> Result<()> {
    // The listener was made on the main runtime: hand its socket over.
    let control = control.into_std().context("control socket")?;
    std::thread::Builder::new()
        .name("baton-io".into())
        .spawn(move || {
            // Threads inherit SCHED_FIFO; this one must not have it.
            let param = libc::sched_param { sched_priority: 0 };
            // SAFETY: sched_setscheduler on the calling thread.
            unsafe { libc::sched_setscheduler(0, libc::SCHED_OTHER, &param) };
            let rt = match tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
            {
                Ok(rt) => rt,
                Err(e) => {
                    error!(error = %e, "io thread runtime");
                    return;
                }
            };
            rt.block_on(async move {
                let control = match UnixListener::from_std(control) {
                    Ok(l) => l,
                    Err(e) => {
                        error!(error = %e, "control socket");
                        return;
                    }
                };
                if let Some(addr) = metrics_at {
                    tokio::spawn(async move {
                        if let Err(e) = metrics::serve(addr, metrics).await {
                            error!(error = %format!("{e:#}"), "metrics endpoint");
                        }
                    });
                }
                control::serve(control, calls, events).await;
            });
        })
        .context("starting the io thread")?;
    Ok(())
}

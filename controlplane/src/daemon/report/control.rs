//! The control socket: root-only (SO_PEERCRED), one request per line.
use crate::protocol::{Envelope, Event, Request, Response, VERSION};
use anyhow::{Context as _, Result};
use std::os::unix::fs::PermissionsExt as _;
use std::path::Path;
use tokio::io::{AsyncBufReadExt as _, AsyncWriteExt as _, BufReader};
use tokio::net::{UnixListener, UnixStream};
use tokio::sync::{broadcast, mpsc, oneshot};
use tracing::warn;

/// A request for the main loop, with where to send its answer.
pub type Call = (Request, oneshot::Sender<Response>);

pub fn listen(path: &Path) -> Result<UnixListener> {
    if let Some(dir) = path.parent() {
        std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
    }
    // A socket file left by a daemon that died; a live daemon would still answer.
    if path.exists() {
        if std::os::unix::net::UnixStream::connect(path).is_ok() {
            anyhow::bail!("another baton daemon is running on {}", path.display());
        }
        std::fs::remove_file(path).with_context(|| format!("removing stale {}", path.display()))?;
    }
    let listener =
        UnixListener::bind(path).with_context(|| format!("binding {}", path.display()))?;
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o600))?;
    Ok(listener)
}

/// The longest request line; a longer one is an error and the end of the connection.
pub const MAX_LINE: usize = 64 * 1024;
/// Connections at once (`baton events` followers included).
const MAX_CLIENTS: usize = 64;
/// A connection that sends nothing for this long is closed (followers of
/// `baton events` are not idle: they wait for the daemon).
const IDLE: std::time::Duration = std::time::Duration::from_secs(30);
/// The first request must come sooner: a flood of silent connections frees
/// its slots within this (the CLI retries while told "busy").
const FIRST_LINE: std::time::Duration = std::time::Duration::from_secs(2);
/// The longest a reply may take to be written to a slow reader.
const WRITE_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(5);

/// Waits after an accept error (EMFILE, ENFILE, ENOMEM: retrying at once
/// would spin), doubling up to a second.
#[derive(Default)]
pub struct AcceptBackoff(std::time::Duration);

impl AcceptBackoff {
    pub fn reset(&mut self) {
        self.0 = std::time::Duration::ZERO;
    }

    pub async fn wait(&mut self, what: &str, e: &std::io::Error) {
        self.0 = (self.0 * 2).clamp(
            std::time::Duration::from_millis(10),
            std::time::Duration::from_secs(1),
        );
        warn!(socket = what, error = %e, wait_ms = self.0.as_millis() as u64, "accept failed");
        tokio::time::sleep(self.0).await;
    }
}

pub async fn serve(
    listener: UnixListener,
    calls: mpsc::Sender<Call>,
    events: broadcast::Sender<Event>,
) {
    let slots = std::sync::Arc::new(tokio::sync::Semaphore::new(MAX_CLIENTS));
    let mut backoff = AcceptBackoff::default();
    loop {
        let mut stream = match listener.accept().await {
            Ok((s, _)) => {
                backoff.reset();
                s
            }
            Err(e) => {
                backoff.wait("control", &e).await;
                continue;
            }
        };
        let Ok(slot) = slots.clone().try_acquire_owned() else {
            // Told, then closed: never queued behind the others.
            tokio::spawn(async move {
                let msg = format!("busy: {MAX_CLIENTS} control connections are open; try again");
                if let Ok(line) = reply(Response::Error { message: msg }) {
                    let _ = tokio::time::timeout(WRITE_TIMEOUT, stream.write_all(line.as_bytes()))
                        .await;
                }
            });
            continue;
        };
        let (calls, events) = (calls.clone(), events.subscribe());
        tokio::spawn(async move {
            let _slot = slot;
            if let Err(e) = client(stream, calls, events).await {
                warn!(error = %format!("{e:#}"), "control client");
            }
        });
    }
}

fn reply(r: Response) -> Result<String> {
    Ok(serde_json::to_string(&Envelope {
        v: VERSION,
        body: r,
    })? + "\n")
}

/// Reads one line of at most [`MAX_LINE`] bytes within `idle`; None at the
/// end of input.
async fn read_line<R: tokio::io::AsyncBufRead + Unpin>(
    r: &mut R,
    idle: std::time::Duration,
) -> Result<Option<String>> {
    use tokio::io::AsyncReadExt as _;
    let mut buf = Vec::new();
    let n = tokio::time::timeout(
        idle,
        r.take(MAX_LINE as u64 + 1).read_until(b'\n', &mut buf),
    )
    .await
    .map_err(|_| anyhow::anyhow!("idle for {}s: closed", idle.as_secs()))??;
    if n == 0 {
        return Ok(None);
    }
    if buf.last() != Some(&b'\n') && buf.len() > MAX_LINE {
        anyhow::bail!("request longer than {MAX_LINE} bytes");
    }
    Ok(Some(String::from_utf8_lossy(&buf).trim_end().to_string()))
}

async fn send<W: tokio::io::AsyncWrite + Unpin>(w: &mut W, text: &str) -> Result<()> {
    tokio::time::timeout(WRITE_TIMEOUT, w.write_all(text.as_bytes()))
        .await
        .map_err(|_| anyhow::anyhow!("client does not read its replies"))??;
    Ok(())
}

/// `baton events`: every event as a JSON line until the daemon stops. A
/// follower that fell behind is told how many it missed (a gap must not
/// read as quiet); the others are not held up for it.
async fn follow<W: tokio::io::AsyncWrite + Unpin>(
    events: &mut broadcast::Receiver<Event>,
    write: &mut W,
) -> Result<()> {
    loop {
        let ev = match events.recv().await {
            Ok(ev) => ev,
            Err(broadcast::error::RecvError::Lagged(missed)) => {
                warn!(missed, "events client too slow");
                Event::Missed { missed }
            }
            Err(broadcast::error::RecvError::Closed) => return Ok(()),
        };
        send(write, &(serde_json::to_string(&ev)? + "\n")).await?;
    }
}

async fn client(
    stream: UnixStream,
    calls: mpsc::Sender<Call>,
    mut events: broadcast::Receiver<Event>,
) -> Result<()> {
    let uid = stream.peer_cred().context("SO_PEERCRED")?.uid();
    let (read, mut write) = stream.into_split();
    let mut read = BufReader::new(read);
    let mut idle = FIRST_LINE;
    loop {
        let line = match read_line(&mut read, idle).await {
            Ok(Some(l)) => {
                idle = IDLE;
                l
            }
            Ok(None) => return Ok(()),
            Err(e) => {
                let msg = format!("{e:#}");
                send(&mut write, &reply(Response::Error { message: msg })?).await?;
                return Err(e);
            }
        };
        if uid != 0 {
            // Read the request first, so the refusal reaches the client.
            let msg = format!("refused: the control socket is for root only (peer uid {uid})");
            send(&mut write, &reply(Response::Error { message: msg })?).await?;
            return Ok(());
        }
        let request: Envelope<Request> = match serde_json::from_str(&line) {
            Ok(r) => r,
            Err(e) => {
                let message = format!("bad request: {e}");
                send(&mut write, &reply(Response::Error { message })?).await?;
                continue;
            }
        };
        if request.v != VERSION {
            let msg = format!(
                "protocol version {} is not spoken here (this daemon speaks {VERSION})",
                request.v
            );
            send(&mut write, &reply(Response::Error { message: msg })?).await?;
            continue;
        }
        if let Request::Events = request.body {
            return follow(&mut events, &mut write).await;
        }
        let (tx, rx) = oneshot::channel();
        calls
            .send((request.body, tx))
            .await
            .context("daemon stopped")?;
        let response = rx.await.context("daemon dropped the request")?;
        send(&mut write, &reply(response)?).await?;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn a_follower_that_fell_behind_is_told_how_many_events_it_missed() -> Result<()> {
        let (tx, mut rx) = broadcast::channel(2);
        for at_ms in 0..5 {
            let reason = "test".to_string();
            tx.send(Event::Resync { at_ms, reason })
                .map_err(|_| anyhow::anyhow!("no receiver"))?;
        }
        drop(tx);
        let mut out = Vec::new();
        follow(&mut rx, &mut out).await?;
        let lines: Vec<serde_json::Value> = String::from_utf8(out)?
            .lines()
            .map(serde_json::from_str)
            .collect::<Result<_, _>>()?;
        // Three fell out of the 2-event buffer: said first, then the two kept.
        assert_eq!(lines.len(), 3, "{lines:?}");
        assert_eq!(lines[0]["event"], "missed");
        assert_eq!(lines[0]["missed"], 3);
        assert_eq!(lines[1]["at_ms"], 3);
        assert_eq!(lines[2]["at_ms"], 4);
        Ok(())
    }
}

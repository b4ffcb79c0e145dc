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

pub async fn serve(
    listener: UnixListener,
    calls: mpsc::Sender<Call>,
    events: broadcast::Sender<Event>,
) {
    loop {
        let Ok((stream, _)) = listener.accept().await else {
            continue;
        };
        let (calls, events) = (calls.clone(), events.subscribe());
        tokio::spawn(async move {
            if let Err(e) = client(stream, calls, events).await {
                warn!(error = %format!("{e:#}"), "control client");
            }
        });
    }
}

async fn client(
    stream: UnixStream,
    calls: mpsc::Sender<Call>,
    mut events: broadcast::Receiver<Event>,
) -> Result<()> {
    let uid = stream.peer_cred().context("SO_PEERCRED")?.uid();
    let (read, mut write) = stream.into_split();
    let mut lines = BufReader::new(read).lines();
    let reply = |r: Response| -> Result<String> {
        Ok(serde_json::to_string(&Envelope {
            v: VERSION,
            body: r,
        })? + "\n")
    };
    while let Some(line) = lines.next_line().await? {
        if uid != 0 {
            // Read the request first, so the refusal reaches the client.
            let msg = format!("refused: the control socket is for root only (peer uid {uid})");
            write
                .write_all(reply(Response::Error { message: msg })?.as_bytes())
                .await?;
            return Ok(());
        }
        let request: Envelope<Request> = match serde_json::from_str(&line) {
            Ok(r) => r,
            Err(e) => {
                write
                    .write_all(
                        reply(Response::Error {
                            message: format!("bad request: {e}"),
                        })?
                        .as_bytes(),
                    )
                    .await?;
                continue;
            }
        };
        if request.v != VERSION {
            let msg = format!(
                "protocol version {} is not spoken here (this daemon speaks {VERSION})",
                request.v
            );
            write
                .write_all(reply(Response::Error { message: msg })?.as_bytes())
                .await?;
            continue;
        }
        if let Request::Events = request.body {
            loop {
                match events.recv().await {
                    Ok(ev) => {
                        write
                            .write_all((serde_json::to_string(&ev)? + "\n").as_bytes())
                            .await?
                    }
                    Err(broadcast::error::RecvError::Lagged(n)) => {
                        warn!(missed = n, "events client too slow")
                    }
                    Err(broadcast::error::RecvError::Closed) => return Ok(()),
                }
            }
        }
        let (tx, rx) = oneshot::channel();
        calls
            .send((request.body, tx))
            .await
            .context("daemon stopped")?;
        let response = rx.await.context("daemon dropped the request")?;
        write.write_all(reply(response)?.as_bytes()).await?;
    }
    Ok(())
}

//! The CLI side of the control socket: `baton status|move|events|reload`.
use crate::protocol::{Envelope, Event, Request, Response, Status, VERSION};
use anyhow::{Context as _, Result, bail};
use std::io::{BufRead as _, BufReader, Write as _};
use std::os::unix::net::UnixStream;
use std::path::Path;

fn connect(socket: &Path) -> Result<UnixStream> {
    UnixStream::connect(socket).with_context(|| {
        format!(
            "connecting to the baton daemon at {} (is `baton run` running, and are you root?)",
            socket.display()
        )
    })
}

/// How long the CLI keeps trying while the daemon says its connection
/// slots are all taken (it closes silent connections within 2 s).
const BUSY_PATIENCE: std::time::Duration = std::time::Duration::from_secs(10);

/// Sends one request and returns the daemon's answer.
pub fn call(socket: &Path, request: Request) -> Result<Response> {
    let started = std::time::Instant::now();
    loop {
        match call_once(socket, &request)? {
            Some(r) => return Ok(r),
            None if started.elapsed() < BUSY_PATIENCE => {
                std::thread::sleep(std::time::Duration::from_millis(100))
            }
            None => bail!(
                "the daemon at {} has no free connection (busy for {}s)",
                socket.display(),
                BUSY_PATIENCE.as_secs()
            ),
        }
    }
}

/// One try; None when the daemon was busy (it says so, or closed at once).
fn call_once(socket: &Path, request: &Request) -> Result<Option<Response>> {
    let mut stream = connect(socket)?;
    let line = serde_json::to_string(&Envelope {
        v: VERSION,
        body: request,
    })? + "\n";
    // A busy daemon may close before our write: read its answer anyway.
    let sent = stream.write_all(line.as_bytes());
    let mut reply = String::new();
    let read = BufReader::new(stream).read_line(&mut reply);
    if reply.is_empty() {
        sent.context("sending the request")?;
        read.context("reading the daemon's answer")?;
        bail!("the daemon closed the connection without an answer");
    }
    let env: Envelope<Response> =
        serde_json::from_str(&reply).with_context(|| format!("unexpected answer: {reply:?}"))?;
    match env.body {
        Response::Error { message } if message.starts_with("busy:") => Ok(None),
        body => Ok(Some(body)),
    }
}

pub fn status(socket: &Path) -> Result<Status> {
    match call(socket, Request::Status)? {
        Response::Status(s) => Ok(s),
        Response::Error { message } => bail!(message),
        other => bail!("unexpected answer {other:?}"),
    }
}

/// `Done` -> its message; `Error` -> an error.
pub fn done(response: Response) -> Result<String> {
    match response {
        Response::Done { message } => Ok(message),
        Response::Error { message } => bail!(message),
        other => bail!("unexpected answer {other:?}"),
    }
}

/// Follows events, calling `each` for every one until it returns false.
pub fn follow_events(socket: &Path, mut each: impl FnMut(Event) -> bool) -> Result<()> {
    let mut stream = connect(socket)?;
    let line = serde_json::to_string(&Envelope {
        v: VERSION,
        body: Request::Events,
    })? + "\n";
    stream.write_all(line.as_bytes())?;
    for line in BufReader::new(stream).lines() {
        let line = line?;
        if let Ok(env) = serde_json::from_str::<Envelope<Response>>(&line)
            && let Response::Error { message } = env.body
        {
            bail!(message);
        }
        let ev: Event =
            serde_json::from_str(&line).with_context(|| format!("unexpected event {line:?}"))?;
        if !each(ev) {
            break;
        }
    }
    Ok(())
}

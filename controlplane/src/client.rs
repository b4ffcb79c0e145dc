//! The CLI side of the control socket: `baton status|move|events|reload`.
use crate::protocol::{Envelope, Event, InstanceStatus, Request, Response, Status, VERSION};
use anyhow::{Context as _, Result, bail};
use comfy_table::{Table, presets::NOTHING};
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

/// Sends one request and returns the daemon's answer.
pub fn call(socket: &Path, request: Request) -> Result<Response> {
    let mut stream = connect(socket)?;
    let line = serde_json::to_string(&Envelope {
        v: VERSION,
        body: request,
    })? + "\n";
    stream
        .write_all(line.as_bytes())
        .context("sending the request")?;
    let mut reply = String::new();
    BufReader::new(stream)
        .read_line(&mut reply)
        .context("reading the daemon's answer")?;
    let env: Envelope<Response> =
        serde_json::from_str(&reply).with_context(|| format!("unexpected answer: {reply:?}"))?;
    Ok(env.body)
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

fn ago(ms: u64) -> String {
    match ms {
        0..1_000 => format!("{ms}ms"),
        1_000..120_000 => format!("{:.1}s", ms as f64 / 1000.0),
        _ => format!("{}m", ms / 60_000),
    }
}

/// The status as tables, iproute2 style: one line per object, key fields first.
pub fn render_status(s: &Status) -> String {
    let mut ports = Table::new();
    ports.load_preset(NOTHING);
    ports.set_header(["port", "state", "link", "since", "rx frames"]);
    for p in &s.ports {
        ports.add_row([
            p.name.clone(),
            p.state.to_string(),
            p.link.to_string(),
            format!("{} ago", ago(p.since_ms)),
            p.rx_frames.to_string(),
        ]);
    }
    let mut insts = Table::new();
    insts.load_preset(NOTHING);
    insts.set_header([
        "instance",
        "address",
        "owner",
        "ports",
        "last move",
        "traffic",
        "reason",
    ]);
    let mut notes = Vec::new();
    for i in &s.instances {
        insts.add_row([
            i.name.clone(),
            i.address.clone(),
            i.owner.clone().unwrap_or_else(|| "-".into()),
            i.ports.join(","),
            last_move(i),
            traffic(i),
            i.refused
                .iter()
                .map(|(p, r)| format!("{p}: {r}"))
                .collect::<Vec<_>>()
                .join("; "),
        ]);
        if let Some(r) = &i.last_repair {
            notes.push(format!(
                "{}: repaired {} at {}: {}",
                i.name,
                r.what,
                ago(r.at_ms),
                r.detail
            ));
        }
        if let Some(c) = &i.conflict {
            notes.push(format!(
                "{}: address conflict: {} claimed it on {} at {} ({} claims{})",
                i.name,
                c.by,
                c.port,
                ago(c.at_ms),
                c.count,
                if c.defended { ", defended" } else { "" }
            ));
        }
        if let Some(e) = &i.error {
            notes.push(format!("{}: error: {e}", i.name));
        }
    }
    let notes: String = notes.iter().map(|n| format!("{n}\n")).collect();
    format!(
        "config {} up {}\n{ports}\n{insts}\n{notes}",
        s.config,
        ago(s.uptime_ms)
    )
}

fn last_move(i: &InstanceStatus) -> String {
    match &i.last_move {
        None => "-".into(),
        Some(m) => format!(
            "{} {}->{} at {} ({}us)",
            m.kind,
            m.from.as_deref().unwrap_or("none"),
            m.to,
            ago(m.at_ms),
            m.took_us
        ),
    }
}

fn traffic(i: &InstanceStatus) -> String {
    i.traffic
        .iter()
        .map(|t| {
            format!(
                "{}:{}{}",
                t.port,
                t.rx_packets,
                t.last_seen_ms
                    .map(|ms| format!(" ({} ago)", ago(ms)))
                    .unwrap_or_default()
            )
        })
        .collect::<Vec<_>>()
        .join(" ")
}

/// One line per event, for `baton events`.
pub fn render_event(e: &Event) -> String {
    match e {
        Event::Port {
            at_ms,
            port,
            link,
            state,
        } => format!("{at_ms:>9}ms port {port} link {link} state {state}"),
        Event::Move {
            at_ms,
            instance,
            from,
            to,
            kind,
            took_us,
        } => {
            format!(
                "{at_ms:>9}ms move {instance} {} -> {to} ({kind}, {took_us}us)",
                from.as_deref().unwrap_or("none")
            )
        }
        Event::Refused {
            at_ms,
            instance,
            port,
            reason,
        } => format!("{at_ms:>9}ms refused {instance} on {port}: {reason}"),
        Event::MoveFailed {
            at_ms,
            instance,
            to,
            error,
        } => format!("{at_ms:>9}ms move-failed {instance} -> {to}: {error}"),
        Event::Repaired {
            at_ms,
            instance,
            what,
            detail,
        } => format!("{at_ms:>9}ms repaired {instance} {what}: {detail}"),
        Event::RepairFailed {
            at_ms,
            instance,
            error,
            retry_ms,
        } => format!("{at_ms:>9}ms repair-failed {instance}: {error} (retry in {retry_ms}ms)"),
        Event::Conflict {
            at_ms,
            instance,
            port,
            by,
            defended,
        } => format!(
            "{at_ms:>9}ms conflict {instance}: {by} claims its address on {port}{}",
            if *defended { " (defended)" } else { "" }
        ),
        Event::Resync { at_ms, reason } => format!("{at_ms:>9}ms resync: {reason}"),
        Event::Reload { at_ms, ok, message } => format!(
            "{at_ms:>9}ms reload {}: {message}",
            if *ok { "ok" } else { "refused" }
        ),
    }
}

//! The replica side: connect to the master, ask to resume from the local
//! log end (with the newest local epoch), obey a truncation or install a
//! full resync, then append streamed bytes and acknowledge them. On any
//! error the link is dropped and re-established with a bounded backoff;
//! nothing is applied that did not verify.

use std::sync::atomic::Ordering::Relaxed;
use std::sync::Arc;
use std::time::Duration;

use bytes::{Bytes, BytesMut};
use tokio::io::AsyncWriteExt;
use tokio::net::TcpStream;
use tokio::sync::watch;

use super::link::{FrameReader, FrameWriter};
use super::{ReplError, Replication};
use crate::engine::{self, snapshot::is_snapshot_file, Engine};
use crate::protocol::replication::{SyncRequest, ToMaster, ToReplica};
use crate::protocol::{Auth, Hello, Limits, Request, Response, PROTOCOL_VERSION};
use crate::security::ClientStream;

const CONNECT_TIMEOUT: Duration = Duration::from_secs(5);
/// No frame from the master for this long (heartbeats come every second)
/// means the link is dead.
const MASTER_SILENCE: Duration = Duration::from_secs(10);
const MIN_BACKOFF: Duration = Duration::from_millis(50);
const MAX_BACKOFF: Duration = Duration::from_secs(2);
/// Staging directory for a full resync, inside the data directory so the
/// final rename stays on one filesystem.
const STAGING_DIR: &str = ".resync";

/// Follows `master` until `stop` turns true.
pub async fn follow(repl: Arc<Replication>, master: String, mut stop: watch::Receiver<bool>) {
    let mut backoff = MIN_BACKOFF;
    let mut force_full = false;
    loop {
        if *stop.borrow() {
            return;
        }
        let result = tokio::select! {
            r = session(&repl, &master, &mut force_full) => r,
            _ = stop.changed() => return,
        };
        let streamed = match result {
            Ok(streamed) => {
                repl.set_link(false, Some("the master closed the stream".into()));
                streamed
            }
            Err(e) => {
                tracing::warn!(%master, error = %e, "replication link down; reconnecting");
                let streamed = matches!(e, ReplError::Timeout(_));
                repl.set_link(false, Some(e.to_string()));
                if let ReplError::StaleMaster { .. } = e {
                    // Never follow it; retry slowly in case it is promoted
                    // past us or we are repointed.
                    backoff = MAX_BACKOFF;
                }
                streamed
            }
        };
        if streamed {
            backoff = MIN_BACKOFF;
        }
        tokio::select! {
            _ = tokio::time::sleep(backoff) => {}
            _ = stop.changed() => return,
        }
        backoff = (backoff * 2).min(MAX_BACKOFF);
    }
}

/// One connection to the master. Returns whether it got to streaming.
async fn session(
    repl: &Arc<Replication>,
    master: &str,
    force_full: &mut bool,
) -> Result<bool, ReplError> {
    let engine = repl.engine.clone();
    let security = &repl.settings.security;
    let connect = async {
        let tcp = TcpStream::connect(master).await?;
        tcp.set_nodelay(true)?;
        match security.connector() {
            None => Ok::<_, std::io::Error>(ClientStream::Plain(tcp)),
            Some(tls) => tls.connect(tcp, master).await,
        }
    };
    let stream = tokio::time::timeout(CONNECT_TIMEOUT, connect)
        .await
        .map_err(|_| ReplError::Timeout(CONNECT_TIMEOUT))??;
    let (rd, wr) = tokio::io::split(stream);
    let limits = Limits::default();
    let mut reader = FrameReader::new(rd, BytesMut::new(), limits.max_frame_bytes);
    let mut writer = FrameWriter::new(wr);
    let hello = Request::Hello(Hello {
        version: PROTOCOL_VERSION,
        auth: match security.outbound_token() {
            Some(token) => Auth::Token(Bytes::copy_from_slice(&token)),
            None => Auth::None,
        },
        client_name: format!("replica {}", repl.settings.replica_id),
    });
    writer.send(|b| hello.encode(b)).await?;
    match next_response(&mut reader, &limits).await? {
        Response::HelloOk(_) => {}
        other => return Err(refused(other)),
    }

    // Negotiate where to resume.
    loop {
        let sync = SyncRequest {
            replica_id: repl.settings.replica_id.clone(),
            advertise: repl.settings.advertise.clone(),
            epoch: engine.current_epoch(),
            end: engine.end(),
            full: *force_full,
        };
        writer.send(|b| Request::ReplSync(sync).encode(b)).await?;
        let frame = reader
            .next(MASTER_SILENCE)
            .await?
            .ok_or(ReplError::Closed)?;
        let msg = match ToReplica::decode(frame.clone())? {
            Some(msg) => msg,
            None => return Err(refused(Response::decode(frame, &limits)?)),
        };
        match msg {
            ToReplica::Truncate { epoch, to } => {
                check_epoch(&engine, epoch)?;
                tracing::warn!(%master, from = engine.end(), to, "log diverged from the master's; truncating");
                let e = engine.clone();
                match blocking(&repl.applying, move || e.truncate_log(to)).await {
                    Ok(()) => {}
                    Err(ReplError::Engine(engine::Error::Compacted { .. })) => *force_full = true,
                    Err(e) => return Err(e),
                }
            }
            ToReplica::FullResync {
                epoch, end, files, ..
            } => {
                check_epoch(&engine, epoch)?;
                tracing::info!(%master, files, end, "full resync from the master");
                receive_snapshot(repl, &mut reader, files).await?;
                *force_full = false;
                repl.full_resyncs.fetch_add(1, Relaxed);
                match next_message(&mut reader, &limits).await? {
                    ToReplica::Stream { from, .. } if from == engine.end() => break,
                    other => {
                        return Err(ReplError::Unexpected(format!(
                            "{other:?} after a full resync"
                        )))
                    }
                }
            }
            ToReplica::Stream { epoch, from } => {
                check_epoch(&engine, epoch)?;
                if from != engine.end() {
                    return Err(ReplError::Unexpected(format!(
                        "stream from {from} but the local log ends at {}",
                        engine.end()
                    )));
                }
                repl.partial_resyncs.fetch_add(1, Relaxed);
                tracing::info!(%master, from, "resuming replication from the local log end");
                break;
            }
            other => {
                return Err(ReplError::Unexpected(format!(
                    "{other:?} while negotiating"
                )))
            }
        }
    }

    // Stream.
    repl.set_link(true, None);
    let mut carry = BytesMut::new();
    let mut carry_base = 0u64;
    loop {
        let msg = next_message(&mut reader, &limits).await?;
        let master_end = match msg {
            ToReplica::Chunk {
                segment_base,
                offset,
                master_end,
                bytes,
            } => {
                let expected = engine.end() + carry.len() as u64;
                if offset != expected {
                    return Err(ReplError::Unexpected(format!(
                        "chunk at {offset}, expected {expected}"
                    )));
                }
                if carry.is_empty() {
                    carry_base = segment_base;
                } else if segment_base != carry_base {
                    return Err(ReplError::Unexpected("a record spans two segments".into()));
                }
                carry.extend_from_slice(&bytes);
                let (e, base, data) = (engine.clone(), carry_base, carry.split().freeze());
                let (taken, data) = blocking(&repl.applying, move || {
                    e.append_log(base, &data).map(|n| (n, data))
                })
                .await?;
                carry.extend_from_slice(&data[taken..]);
                repl.bytes_shipped.fetch_add(taken as u64, Relaxed);
                master_end
            }
            ToReplica::Heartbeat { master_end, .. } => master_end,
            other => return Err(ReplError::Unexpected(format!("{other:?} while streaming"))),
        };
        let durable_end = engine.log_end();
        writer
            .send(|b| ToMaster::Ack { durable_end }.encode(b))
            .await?;
        repl.observe_master(master_end, engine.end());
    }
}

fn check_epoch(engine: &Engine, master: u32) -> Result<(), ReplError> {
    let ours = engine.current_epoch();
    if master < ours {
        return Err(ReplError::StaleMaster { master, ours });
    }
    Ok(())
}

fn refused(response: Response) -> ReplError {
    match response {
        Response::Error { code, message } => ReplError::Refused { code, message },
        other => ReplError::Unexpected(format!("{other:?}")),
    }
}

async fn next_response<R: tokio::io::AsyncRead + Unpin>(
    reader: &mut FrameReader<R>,
    limits: &Limits,
) -> Result<Response, ReplError> {
    let frame = reader
        .next(MASTER_SILENCE)
        .await?
        .ok_or(ReplError::Closed)?;
    Ok(Response::decode(frame, limits)?)
}

async fn next_message<R: tokio::io::AsyncRead + Unpin>(
    reader: &mut FrameReader<R>,
    limits: &Limits,
) -> Result<ToReplica, ReplError> {
    let frame = reader
        .next(MASTER_SILENCE)
        .await?
        .ok_or(ReplError::Closed)?;
    match ToReplica::decode(frame.clone())? {
        Some(msg) => Ok(msg),
        None => Err(refused(Response::decode(frame, limits)?)),
    }
}

/// Runs a change to the local log on the blocking pool, holding
/// `applying` until it is done: a follower stopped mid-change (its future
/// dropped) cannot finish that change behind a promotion's back, because
/// [`Replication::promote`] and [`Replication::replicate`] take the same
/// lock before acting.
async fn blocking<T: Send + 'static>(
    applying: &Arc<tokio::sync::Mutex<()>>,
    f: impl FnOnce() -> Result<T, engine::Error> + Send + 'static,
) -> Result<T, ReplError> {
    let guard = Arc::clone(applying).lock_owned().await;
    tokio::task::spawn_blocking(move || {
        let result = f();
        drop(guard);
        result
    })
    .await
    .map_err(|e| ReplError::Unexpected(e.to_string()))?
    .map_err(ReplError::Engine)
}

/// Receives `files` snapshot files into the staging directory, then
/// installs them in place of the local log.
async fn receive_snapshot<R: tokio::io::AsyncRead + Unpin>(
    repl: &Replication,
    reader: &mut FrameReader<R>,
    files: u32,
) -> Result<(), ReplError> {
    let engine = &repl.engine;
    let limits = Limits::default();
    let staging = engine.dir().join(STAGING_DIR);
    let _ = tokio::fs::remove_dir_all(&staging).await;
    tokio::fs::create_dir_all(&staging).await?;
    for _ in 0..files {
        let (name, len) = match next_message(reader, &limits).await? {
            ToReplica::File { name, len } => (name, len),
            other => {
                return Err(ReplError::Unexpected(format!(
                    "{other:?} instead of a file"
                )))
            }
        };
        // The name comes from the network: only plain snapshot file names.
        if !is_snapshot_file(&name) || name.contains('/') {
            return Err(ReplError::Unexpected(format!(
                "refusing snapshot file name {name:?}"
            )));
        }
        let path = staging.join(&name);
        let mut file = tokio::fs::File::create(&path).await?;
        let mut received = 0u64;
        while received < len {
            let bytes = match next_message(reader, &limits).await? {
                ToReplica::FileData { bytes } => bytes,
                other => {
                    return Err(ReplError::Unexpected(format!(
                        "{other:?} inside file {name}"
                    )))
                }
            };
            received += bytes.len() as u64;
            if received > len || bytes.is_empty() {
                return Err(ReplError::Unexpected(format!(
                    "file {name} overruns its length {len}"
                )));
            }
            file.write_all(&bytes).await?;
        }
        file.sync_all().await?;
    }
    let e = engine.clone();
    let dir = staging.clone();
    blocking(&repl.applying, move || {
        crate::durable::sync_dir(&dir)?;
        e.install_snapshot(&dir)
    })
    .await?;
    let _ = tokio::fs::remove_dir_all(&staging).await;
    Ok(())
}

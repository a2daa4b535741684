//! The master side of a replication link: decide how a replica resumes
//! (stream from its offset, cut its diverged tail, or reseed it with a full
//! resync), then stream raw log bytes and take its acknowledgements.

use std::sync::atomic::Ordering::Relaxed;
use std::sync::Arc;
use std::time::Duration;

use bytes::BytesMut;

use super::{unix_ms, ReplError, Replication, RoleView};
use crate::coordinator::Member;
use crate::engine::{self, TailCut};
use crate::lifecycle::Shutdown;
use crate::protocol::replication::{SyncRequest, ToMaster, ToReplica, MAX_CHUNK_BYTES};
use crate::protocol::stream::{FrameReader, FrameWriter};
use crate::protocol::{ErrorCode, Response};
use crate::security::{Credential, Permission, Revoked, Security, ServerStream};

/// Log bytes per chunk frame.
const CHUNK_BYTES: usize = 1024 * 1024;
/// Snapshot file bytes per data frame.
const FILE_CHUNK_BYTES: u64 = 1024 * 1024;
/// A replica that sends nothing (no ack) for this long is dropped.
const REPLICA_SILENCE: Duration = Duration::from_secs(30);

/// How a replica asking with `SyncRequest` continues.
#[derive(Debug, PartialEq, Eq)]
enum Plan {
    Stream { from: u64 },
    Truncate { to: u64 },
    Full,
    Refuse { code: ErrorCode, message: String },
}

fn plan(repl: &Replication, req: &SyncRequest) -> Plan {
    let engine = &repl.engine;
    if let RoleView::Replica { master } = repl.role() {
        return Plan::Refuse {
            code: ErrorCode::NOT_MASTER,
            message: format!("this node is a replica of {master}"),
        };
    }
    if req.format < engine::segment::FORMAT_VERSION {
        // The rolling-upgrade rule (docs/REPLICATION.md § 6a): an older
        // replica could not read what this master writes.
        return Plan::Refuse {
            code: ErrorCode::UNSUPPORTED_VERSION,
            message: format!(
                "this master writes record format {} (keys with expiry) but the replica reads only format {}: upgrade the replicas before the master",
                engine::segment::FORMAT_VERSION,
                req.format
            ),
        };
    }
    let ours = engine.current_epoch();
    if req.epoch > ours {
        return Plan::Refuse {
            code: ErrorCode::STALE_MASTER,
            message: format!(
                "this master is at epoch {ours} but the replica has seen epoch {}: it must not follow a stale master",
                req.epoch
            ),
        };
    }
    let (start, end) = (engine.log_start(), engine.log_end());
    if req.full || (req.end == 0 && end > 0) || req.end < start {
        return Plan::Full;
    }
    if req.epoch < ours {
        // Where did the replica's epoch end here? Past that, its log is
        // not ours (KIP-101/279).
        match engine.epoch_end(req.epoch) {
            None => return Plan::Full,
            Some((_, epoch_end)) if req.end > epoch_end => {
                if epoch_end < start {
                    return Plan::Full;
                }
                return truncate(&engine.tail_cuts(), req, epoch_end);
            }
            Some(_) => {}
        }
    }
    if req.end > end {
        return truncate(&engine.tail_cuts(), req, end);
    }
    Plan::Stream { from: req.end }
}

/// Tells the replica to cut its log back to `to`, unless the bytes it
/// would cut may be ones this master cut off its own log ([`crossed_cut`]):
/// those may hold acknowledged writes that only the replica still has, so
/// the replica is refused instead, keeps them, and raises an alert.
fn truncate(cuts: &[TailCut], req: &SyncRequest, to: u64) -> Plan {
    let Some(cut) = crossed_cut(cuts, req.epoch, req.end) else {
        return Plan::Truncate { to };
    };
    Plan::Refuse {
        code: ErrorCode::TAIL_CUT,
        message: format!(
            "the replica's log (epoch {}, end {}) runs past offset {}, where this master cut {} bytes ({} records, {}) off its log in that epoch; \
             the replica may hold writes this master lost, so it is not told to truncate to {to}",
            req.epoch,
            req.end,
            cut.offset,
            cut.bytes,
            cut.records,
            cut.cause.name(),
        ),
    }
}

/// The master's cut that a replica whose log is at `epoch`, ending at
/// `end`, may hold bytes of: made in that same epoch, below that end. Only
/// asked when the replica's log runs past the master's in that epoch (a
/// replica that fetched after the cut never does, since the master ships
/// nothing it has not got).
fn crossed_cut(cuts: &[TailCut], epoch: u32, end: u64) -> Option<TailCut> {
    cuts.iter()
        .find(|c| !c.pending && c.epoch == epoch && c.offset < end)
        .copied()
}

/// What the master side of a replication stream uses of the node that
/// hands it the connection: the role handle, the security settings (a
/// reload may take the stream's permission away), the frame limit and the
/// shutdown signal. The node builds it; replication knows nothing else of
/// the node.
#[derive(Clone)]
pub struct Serving {
    pub replication: Arc<Replication>,
    pub security: Arc<Security>,
    pub max_frame_bytes: u32,
    pub shutdown: Shutdown,
}

/// Serves one replica on a connection that sent REPL_SYNC. `leftover` is
/// what the connection had read past that frame.
/// `credential` is what the connection authenticated with; a reload that
/// takes its admin permission away ends the stream.
pub async fn serve_replica(
    stream: ServerStream,
    leftover: BytesMut,
    ctx: Serving,
    first: SyncRequest,
    credential: Credential,
) {
    let peer = stream
        .tcp()
        .peer_addr()
        .map(|a| a.to_string())
        .unwrap_or_default();
    let id = if first.replica_id.is_empty() {
        peer.clone()
    } else {
        first.replica_id.clone()
    };
    match serve(stream, leftover, &ctx, first, &id, credential).await {
        Ok(()) => tracing::info!(replica = %id, %peer, "replica stream ended"),
        Err(e) => tracing::warn!(replica = %id, %peer, error = %e, "replica stream ended"),
    }
}

async fn serve(
    stream: ServerStream,
    leftover: BytesMut,
    ctx: &Serving,
    first: SyncRequest,
    id: &str,
    credential: Credential,
) -> Result<(), ReplError> {
    let repl = Arc::clone(&ctx.replication);
    let engine = repl.engine.clone();
    let _ = stream.tcp().set_nodelay(true);
    let (rd, wr) = tokio::io::split(stream);
    let mut reader = FrameReader::new(rd, leftover, ctx.max_frame_bytes);
    let mut writer = FrameWriter::new(wr);
    let mut req = first;
    let from = loop {
        let epoch = engine.current_epoch();
        match plan(&repl, &req) {
            Plan::Refuse { code, message } => {
                tracing::warn!(replica = %id, %code, %message, "refusing replica");
                writer
                    .send(|b| Response::error(code, message).encode(b))
                    .await?;
                writer.shutdown().await;
                return Ok(());
            }
            Plan::Truncate { to } => {
                tracing::info!(replica = %id, from = req.end, to, "replica log diverged; telling it to truncate");
                writer
                    .send(|b| ToReplica::Truncate { epoch, to }.encode(b))
                    .await?;
                match reader.next_within(REPLICA_SILENCE).await? {
                    Some(frame) => match ToMaster::decode(frame)? {
                        ToMaster::Sync(next) => req = next,
                        other => {
                            return Err(ReplError::Unexpected(format!(
                                "{other:?} instead of REPL_SYNC"
                            )))
                        }
                    },
                    None => return Ok(()),
                }
            }
            Plan::Full => {
                let end = send_snapshot(&engine, &mut writer, epoch, id).await?;
                repl.full_resyncs.fetch_add(1, Relaxed);
                break end;
            }
            Plan::Stream { from } => {
                writer
                    .send(|b| ToReplica::Stream { epoch, from }.encode(b))
                    .await?;
                repl.partial_resyncs.fetch_add(1, Relaxed);
                tracing::info!(replica = %id, from, "replica resumes from its offset");
                break from;
            }
        }
    };
    // The directory named by the request that set up the stream: the
    // replica's process holds that directory (its lock) for as long as it
    // holds this connection, so every acknowledgement on it is from there.
    let replica = Member::new(id, (!req.dir_id.is_empty()).then(|| req.dir_id.clone()));
    let session = repl.register(&replica, &req.advertise, from);
    let stream = Stream {
        reader,
        from,
        replica: &replica,
        credential,
    };
    let result = stream_log(&repl, ctx, stream, &mut writer).await;
    repl.unregister(id, session);
    writer.shutdown().await;
    result
}

/// Whether the stream's credential still has the admin permission, after
/// any reload of the token files since it was checked.
fn still_admin(credential: &mut Credential, security: &Security) -> bool {
    match credential.permission(security) {
        Ok(Some(permission)) => permission >= Permission::Admin,
        Ok(None) | Err(Revoked) => false,
    }
}

/// Sends every file of a snapshot, then REPL_STREAM; returns where the
/// stream continues.
pub(crate) async fn send_snapshot<W: tokio::io::AsyncWrite + Unpin>(
    engine: &engine::Engine,
    writer: &mut FrameWriter<W>,
    epoch: u32,
    id: &str,
) -> Result<u64, ReplError> {
    let e = engine.clone();
    let snap = tokio::task::spawn_blocking(move || e.snapshot())
        .await
        .map_err(|e| ReplError::Unexpected(e.to_string()))??;
    tracing::info!(replica = %id, files = snap.files.len(), end = snap.end, "full resync: shipping snapshot");
    let files = u32::try_from(snap.files.len()).unwrap_or(u32::MAX);
    writer
        .send(|b| {
            ToReplica::FullResync {
                epoch,
                start: snap.start,
                end: snap.end,
                files,
            }
            .encode(b)
        })
        .await?;
    for f in &snap.files {
        writer
            .send(|b| {
                ToReplica::File {
                    name: f.name.clone(),
                    len: f.len,
                }
                .encode(b)
            })
            .await?;
        let mut offset = 0;
        while offset < f.len {
            let bytes = f.read(offset, FILE_CHUNK_BYTES as usize)?;
            if bytes.is_empty() {
                return Err(ReplError::Unexpected(format!(
                    "{} ended early at {offset}",
                    f.name
                )));
            }
            offset += bytes.len() as u64;
            writer
                .send_parts(|b| ToReplica::FileData { bytes }.encode_head(b))
                .await?;
        }
    }
    writer
        .send(|b| {
            ToReplica::Stream {
                epoch,
                from: snap.end,
            }
            .encode(b)
        })
        .await?;
    Ok(snap.end)
}

/// One replica's stream, once it is past the resync.
struct Stream<'a> {
    reader: FrameReader<tokio::io::ReadHalf<ServerStream>>,
    /// Where streaming starts.
    from: u64,
    replica: &'a Member,
    credential: Credential,
}

/// Streams the log from `from` until the replica leaves, this node stops
/// being master, its token loses the admin permission in a reload, or the
/// server shuts down. Acks are read concurrently.
async fn stream_log<W: tokio::io::AsyncWrite + Unpin>(
    repl: &Arc<Replication>,
    ctx: &Serving,
    stream: Stream<'_>,
    writer: &mut FrameWriter<W>,
) -> Result<(), ReplError> {
    let Stream {
        mut reader,
        from,
        replica,
        mut credential,
    } = stream;
    let id = replica.node_id.as_str();
    let engine = repl.engine.clone();
    let acks = {
        let repl = Arc::clone(repl);
        let replica = replica.clone();
        tokio::spawn(async move {
            loop {
                match reader.next_within(REPLICA_SILENCE).await? {
                    None => return Ok(()),
                    Some(frame) => match ToMaster::decode(frame)? {
                        ToMaster::Ack {
                            written_end,
                            durable_end,
                        } => repl.record_ack(&replica, written_end, durable_end),
                        ToMaster::Sync(_) => {
                            return Err(ReplError::Unexpected("REPL_SYNC mid-stream".into()))
                        }
                    },
                }
            }
        })
    };
    let mut acks = acks;
    let result = async {
        let mut progress = engine.subscribe();
        let mut role = repl.watch_role();
        let mut heartbeat = tokio::time::interval(repl.settings.heartbeat);
        let mut pos = from;
        loop {
            if !still_admin(&mut credential, &ctx.security) {
                let message = "the token of this replication stream is no longer accepted \
                               with the admin permission (removed by a reload)";
                tracing::warn!(replica = %id, "{message}; closing the replica stream");
                writer
                    .send(|b| Response::error(ErrorCode::AUTH_FAILED, message).encode(b))
                    .await?;
                return Ok(());
            }
            let end = engine.log_end();
            if pos < end {
                let chunk = match engine.read_log(pos, CHUNK_BYTES.min(MAX_CHUNK_BYTES as usize)) {
                    Ok(c) => c,
                    Err(engine::Error::Compacted { .. }) => {
                        tracing::info!(replica = %id, pos, "replica fell behind the compacted log; it will resync");
                        return Ok(());
                    }
                    Err(e) => return Err(e.into()),
                };
                let len = chunk.bytes.len() as u64;
                if len > 0 {
                    let msg = ToReplica::Chunk {
                        segment_base: chunk.segment_base,
                        offset: pos,
                        master_end: end,
                        bytes: chunk.bytes,
                    };
                    writer.send_parts(|b| msg.encode_head(b)).await?;
                    pos += len;
                    repl.bytes_shipped.fetch_add(len, Relaxed);
                    repl.chunks.fetch_add(1, Relaxed);
                    continue;
                }
            }
            tokio::select! {
                changed = progress.changed() => if changed.is_err() { return Ok(()) },
                _ = heartbeat.tick() => {
                    writer.send(|b| ToReplica::Heartbeat { master_end: end, unix_ms: unix_ms() }.encode(b)).await?;
                }
                _ = role.changed() => if !matches!(*role.borrow(), RoleView::Master) {
                    tracing::info!(replica = %id, "no longer master; closing the replica stream");
                    return Ok(());
                },
                done = &mut acks => {
                    return match done {
                        Ok(r) => r,
                        Err(e) => Err(ReplError::Unexpected(e.to_string())),
                    };
                }
                _ = ctx.shutdown.wait() => return Ok(()),
            }
        }
    };
    let result = result.await;
    acks.abort();
    result
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::engine::CutCause;

    fn request(epoch: u32, end: u64) -> SyncRequest {
        SyncRequest {
            replica_id: "r".into(),
            advertise: String::new(),
            epoch,
            end,
            full: false,
            format: 2,
            dir_id: String::new(),
        }
    }

    #[test]
    fn a_replica_past_a_cut_of_its_epoch_is_refused_not_truncated() {
        let cut = TailCut::new(100, 40, 1, 3, CutCause::TornTail);
        let cuts = [cut];
        // Past the cut, in the cut's epoch: it may hold what was cut.
        match truncate(&cuts, &request(3, 140), 100) {
            Plan::Refuse { code, message } => {
                assert_eq!(code, ErrorCode::TAIL_CUT);
                assert!(message.contains("offset 100"), "{message}");
            }
            other => panic!("{other:?}"),
        }
        // Another epoch's log past the same offset is ordinary divergence.
        assert_eq!(
            truncate(&cuts, &request(2, 140), 100),
            Plan::Truncate { to: 100 }
        );
        // A log that ends at the cut holds nothing of it.
        assert_eq!(
            truncate(&cuts, &request(3, 100), 90),
            Plan::Truncate { to: 90 }
        );
        // No cut: truncate as before.
        assert_eq!(
            truncate(&[], &request(3, 140), 100),
            Plan::Truncate { to: 100 }
        );
        // A pending cut is not finished yet (open finishes it first).
        let pending = TailCut {
            pending: true,
            ..cut
        };
        assert_eq!(
            truncate(&[pending], &request(3, 140), 100),
            Plan::Truncate { to: 100 }
        );
    }
}

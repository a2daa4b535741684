//! The node side of BACKUP: ship a snapshot on the connection that asked,
//! in the replication full-resync encoding, wait for the client to confirm
//! it committed the backup, record that, then close.
//!
//! The snapshot holds the memory maps of every file it names, so a
//! compaction that deletes a merged file or segment meanwhile does not
//! disturb the copy; the files are released when the stream ends, when the
//! client goes away, when the lease runs out, or at shutdown.
//!
//! The confirmation is a REPL_ACK whose offset is the snapshot's `end`,
//! sent by the client once its manifest is durable. Only then is the
//! backup recorded as this node's last successful one ([`LastBackup`],
//! and the `kvstore_backup_last_success_timestamp_seconds` gauge).

use std::sync::Arc;
use std::time::Duration;

use bytes::BytesMut;

use crate::security::ServerStream;

use super::last::LastBackup;
use super::time;
use crate::engine::Engine;
use crate::lifecycle::Shutdown;
use crate::metrics::Metrics;
use crate::protocol::replication::ToMaster;
use crate::protocol::stream::{FrameReader, FrameWriter, StreamError};
use crate::protocol::{ErrorCode, Response};
use crate::replication::master::send_snapshot;

/// The longest a backup may pin its snapshot's files.
pub const LEASE: Duration = Duration::from_secs(6 * 3600);
/// How long the node waits, after the last frame, for the client to write
/// its manifest and confirm. Nothing is pinned meanwhile.
pub const CONFIRM_TIMEOUT: Duration = Duration::from_secs(300);
/// The confirmation is one small frame.
const MAX_CONFIRM_FRAME: u32 = 1024;

/// What the node side of a backup uses of the node that hands it the
/// connection: the engine to snapshot, the metrics that show the last
/// backup, the shutdown signal.
#[derive(Clone)]
pub struct Serving {
    pub engine: Engine,
    pub metrics: Arc<Metrics>,
    pub shutdown: Shutdown,
}

/// Serves one BACKUP request; errors end up in the log only (the client
/// sees the stream stop early and fails loudly). `leftover`: what the
/// connection read past BACKUP. A client sends nothing more until its
/// confirmation, so a request found where the confirmation belongs was
/// sent after BACKUP: it is refused with MALFORMED_REQUEST, not run, and
/// the connection closed.
pub async fn serve_backup(stream: ServerStream, leftover: BytesMut, ctx: Serving) {
    let peer = stream
        .tcp()
        .peer_addr()
        .map(|a| a.to_string())
        .unwrap_or_default();
    let _ = stream.tcp().set_nodelay(true);
    // The read half waits for the confirmation, after what was already
    // read.
    let (rd, wr) = tokio::io::split(stream);
    let mut writer = FrameWriter::new(wr);
    let engine = ctx.engine.clone();
    let epoch = engine.current_epoch();
    let id = format!("backup client {peer}");
    tracing::info!(%peer, "backup requested: shipping a snapshot");
    let result = tokio::select! {
        r = tokio::time::timeout(LEASE, send_snapshot(&engine, &mut writer, epoch, &id)) => r,
        _ = ctx.shutdown.wait() => {
            tracing::warn!(%peer, "backup interrupted by shutdown");
            return;
        }
    };
    let end = match result {
        Ok(Ok(end)) => end,
        Ok(Err(e)) => {
            tracing::warn!(%peer, error = %e, "backup stream failed");
            writer.shutdown().await;
            return;
        }
        Err(_) => {
            tracing::warn!(%peer, lease = ?LEASE, "backup lease ran out; snapshot released");
            writer.shutdown().await;
            return;
        }
    };
    tracing::info!(%peer, end, "backup snapshot sent; waiting for the client to commit it");
    let mut reader = FrameReader::new(rd, leftover, MAX_CONFIRM_FRAME);
    let confirmed = tokio::select! {
        r = reader.next_within(CONFIRM_TIMEOUT) => r,
        _ = ctx.shutdown.wait() => {
            tracing::warn!(%peer, "shutdown before the backup client confirmed");
            return;
        }
    };
    match confirmed.map(|f| f.map(ToMaster::decode)) {
        Ok(Some(Ok(ToMaster::Ack { durable_end, .. }))) if durable_end == end => {
            record(&ctx, &peer, end).await;
        }
        Ok(None) => tracing::warn!(
            %peer,
            "the backup client closed without confirming; not recorded as a successful backup"
        ),
        // A confirmation of another end, or none at all.
        answer @ (Ok(Some(Ok(ToMaster::Ack { .. })))
        | Err(StreamError::Io(_) | StreamError::Closed | StreamError::Timeout(_))) => {
            tracing::warn!(
                %peer,
                end,
                ?answer,
                "the backup client did not confirm the snapshot's end; not recorded as a successful backup"
            )
        }
        // Anything else is a request sent after BACKUP.
        answer => {
            tracing::warn!(%peer, ?answer, "a request after BACKUP; refused, and the backup not recorded");
            let message = "BACKUP must be the last request on its connection: \
                           a request sent after it is not run";
            let _ = writer
                .send(|b| Response::error(ErrorCode::MALFORMED_REQUEST, message).encode(b))
                .await;
        }
    }
    writer.shutdown().await;
}

/// Persists the confirmed backup in the data directory, then shows it in
/// `/metrics`. A failure to persist is logged: the backup itself is fine,
/// only its time may not survive a restart.
async fn record(ctx: &Serving, peer: &str, end: u64) {
    let last = LastBackup {
        unix_ms: time::unix_ms(),
        end,
        client: peer.to_string(),
    };
    let dir = ctx.engine.dir().to_path_buf();
    let stored = {
        let last = last.clone();
        tokio::task::spawn_blocking(move || last.store(&dir)).await
    };
    match stored {
        Ok(Ok(())) => {}
        Ok(Err(e)) => tracing::error!(error = %e, "cannot record the backup's time"),
        Err(e) => tracing::error!(error = %e, "cannot record the backup's time"),
    }
    ctx.metrics.backup_succeeded(last.unix_ms);
    tracing::info!(%peer, end, "backup committed by its client");
}

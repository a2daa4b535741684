//! The node side of BACKUP: ship a snapshot on the connection that asked,
//! in the replication full-resync encoding, then close.
//!
//! The snapshot holds the memory maps of every file it names, so a
//! compaction that deletes a merged file or segment meanwhile does not
//! disturb the copy; the files are released when the stream ends, when the
//! client goes away, when the lease runs out, or at shutdown.

use std::sync::Arc;
use std::time::Duration;

use crate::security::ServerStream;

use crate::replication::link::FrameWriter;
use crate::replication::master::send_snapshot;
use crate::server::ServerContext;

/// The longest a backup may pin its snapshot's files.
pub const LEASE: Duration = Duration::from_secs(6 * 3600);

/// Serves one BACKUP request; errors end up in the log only (the client
/// sees the stream stop early and fails loudly).
pub async fn serve_backup(stream: ServerStream, ctx: Arc<ServerContext>) {
    let peer = stream
        .tcp()
        .peer_addr()
        .map(|a| a.to_string())
        .unwrap_or_default();
    let _ = stream.tcp().set_nodelay(true);
    // The client sends nothing after BACKUP; keep the read half so the
    // socket stays open until we are done.
    let (_rd, wr) = tokio::io::split(stream);
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
    match result {
        Ok(Ok(end)) => tracing::info!(%peer, end, "backup snapshot sent"),
        Ok(Err(e)) => tracing::warn!(%peer, error = %e, "backup stream failed"),
        Err(_) => tracing::warn!(%peer, lease = ?LEASE, "backup lease ran out; snapshot released"),
    }
    writer.shutdown().await;
}

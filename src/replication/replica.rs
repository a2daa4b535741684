//! The replica side: connect to the master, ask to resume from the local
//! log end (with the newest local epoch), obey a truncation or install a
//! full resync, then append streamed bytes and acknowledge them. On any
//! error the link is dropped and re-established with a bounded backoff;
//! nothing is applied that did not verify.

use std::sync::atomic::Ordering::Relaxed;
use std::sync::Arc;
use std::time::Duration;

use bytes::{Buf, Bytes, BytesMut};
use tokio::sync::watch;

use super::{ReplError, Replication};
use crate::engine::error::IoContext;
use crate::engine::recovery::ScanStream;
use crate::engine::segment::FileKind;
use crate::engine::{self, fault, hint, record, snapshot::is_snapshot_file};
use crate::protocol::replication::{SyncRequest, ToMaster, ToReplica};
use crate::protocol::stream::{self, FrameReader, FrameWriter, HelloError, OpenError};
use crate::protocol::ErrorCode;
use crate::protocol::{Frame, Limits, Request, Response};

/// Bound on connecting to the master: TCP, TLS and HELLO.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(5);
/// No frame from the master for this long (heartbeats come every second)
/// means the link is dead.
const MASTER_SILENCE: Duration = Duration::from_secs(10);
const MIN_BACKOFF: Duration = Duration::from_millis(50);
const MAX_BACKOFF: Duration = Duration::from_secs(2);
/// Staging directory for a full resync, inside the data directory so the
/// final rename stays on one filesystem.
const STAGING_DIR: &str = ".resync";
/// The master's stream is read into blocks of this size, each reused once
/// the chunks split from it are dropped (applied, or written to a staged
/// file): seven 1 MiB chunks fit in one.
const RECEIVE_BLOCK: usize = 8 << 20;
/// Receive blocks kept: enough for what the log stream holds at once (the
/// engine's buffer and the round it is writing hold the chunks they take,
/// up to twice `RAW_BUFFER_MAX`, and the append under way up to
/// `MAX_APPEND_BATCH`: each may span a block more than its size) plus the
/// block being read into; a full resync holds less (a file write of up to
/// `FILE_WRITE_BATCH` in progress and as much gathered for the next).
const RECEIVE_BLOCKS: usize = 8;

/// Follows `master` until `stop` turns true.
pub async fn follow(repl: Arc<Replication>, master: String, mut stop: watch::Receiver<bool>) {
    let mut backoff = MIN_BACKOFF;
    let mut force_full = false;
    // A master from before data-directory ids refuses a REPL_SYNC that
    // names one as malformed (trailing bytes): the next attempt leaves it
    // out, and the one after tries again (the master may be upgraded).
    let mut send_dir_id = true;
    loop {
        if *stop.borrow() {
            return;
        }
        let sent_dir_id = std::mem::replace(&mut send_dir_id, true);
        let result = tokio::select! {
            r = session(&repl, &master, &mut force_full, sent_dir_id) => r,
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
                if let ReplError::Refused { code, message } = &e {
                    if *code == ErrorCode::MALFORMED_FRAME && sent_dir_id {
                        tracing::info!(
                            %master,
                            "the master refused the data-directory id in REPL_SYNC (a version before directory ids); asking again without it"
                        );
                        send_dir_id = false;
                        backoff = MIN_BACKOFF;
                    }
                    if *code == ErrorCode::TAIL_CUT {
                        tracing::error!(
                            %master,
                            %message,
                            "ALERT: this replica holds log bytes past a tail the master cut; keeping them and not following until an operator decides (see RELIABILITY.md, \"Cut tails\")"
                        );
                        repl.set_cut_conflict(message.clone());
                        backoff = MAX_BACKOFF;
                    }
                }
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

/// One connection to the master, naming this node's data directory when
/// `send_dir_id`. Returns whether it got to streaming.
async fn session(
    repl: &Arc<Replication>,
    master: &str,
    force_full: &mut bool,
    send_dir_id: bool,
) -> Result<bool, ReplError> {
    let engine = repl.engine.clone();
    let security = &repl.settings.security;
    let limits = Limits::default();
    let hello = stream::hello(
        security.outbound_token().as_deref().map(Vec::as_slice),
        &format!("replica {}", repl.settings.replica_id),
    );
    let connector = security.connector();
    let open = stream::open(
        master,
        connector.as_deref(),
        &hello,
        CONNECT_TIMEOUT,
        &limits,
    );
    let (framed, _) = match tokio::time::timeout(CONNECT_TIMEOUT, open).await {
        Err(_) => return Err(ReplError::Timeout(CONNECT_TIMEOUT)),
        Ok(Ok(opened)) => opened,
        Ok(Err(OpenError::Connect(e))) => return Err(ReplError::Io(e)),
        Ok(Err(OpenError::Hello(HelloError::Stream(e)))) => return Err(e.into()),
        Ok(Err(OpenError::Hello(HelloError::Refused { code, message }))) => {
            return Err(ReplError::Refused { code, message })
        }
        Ok(Err(OpenError::Hello(HelloError::Unexpected(response)))) => {
            return Err(ReplError::Unexpected(format!("{response} to HELLO")))
        }
    };
    let (mut reader, mut writer) = framed.into_split();
    reader.reuse_buffers(RECEIVE_BLOCK, RECEIVE_BLOCKS);

    // Negotiate where to resume.
    loop {
        let sync = SyncRequest {
            replica_id: repl.settings.replica_id.clone(),
            advertise: repl.settings.advertise.clone(),
            epoch: engine.current_epoch(),
            end: engine.end(),
            full: *force_full,
            format: engine::segment::FORMAT_VERSION,
            dir_id: if send_dir_id {
                engine.dir_id().to_string()
            } else {
                String::new()
            },
        };
        writer.send(|b| Request::ReplSync(sync).encode(b)).await?;
        let frame = reader.frame_within(MASTER_SILENCE).await?;
        let msg = match ToReplica::decode(frame.clone())? {
            Some(msg) => msg,
            None => return Err(refused(Response::decode(frame, &limits)?)),
        };
        match msg {
            ToReplica::Truncate { epoch, to } => {
                check_epoch(repl, epoch)?;
                let from = engine.end();
                let bytes = from.saturating_sub(to);
                // In async mode these may be writes an old master
                // acknowledged before it lost its term: never silent.
                tracing::warn!(
                    %master,
                    from,
                    to,
                    bytes,
                    "log diverged from the master's; truncating {bytes} bytes the master does not have"
                );
                let e = engine.clone();
                match blocking(&repl.applying, move || e.truncate_log(to)).await {
                    Ok(()) => {
                        repl.truncations.fetch_add(1, Relaxed);
                        repl.truncated_bytes.fetch_add(bytes, Relaxed);
                    }
                    Err(ReplError::Engine(engine::Error::Compacted { .. })) => *force_full = true,
                    Err(e) => return Err(e),
                }
            }
            ToReplica::FullResync {
                epoch, end, files, ..
            } => {
                check_epoch(repl, epoch)?;
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
                check_epoch(repl, epoch)?;
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

    repl.set_link(true, None);
    stream_log(repl, &mut reader, &mut writer)
        .await
        .map(|()| true)
}

/// Applied log the replica lets run ahead of what it has handed to the OS
/// before it stops reading from the master: bounds the writer's buffer
/// when the master sends faster than this disk writes.
const MAX_UNWRITTEN_BYTES: u64 = 64 << 20;
/// Log bytes gathered from frames already received before one append.
const MAX_APPEND_BATCH: usize = 16 << 20;
/// Appends up to this size run on the streaming task itself: they copy and
/// checksum the bytes (the flusher does the I/O), and a trip through the
/// blocking pool would add a thread hop to every acknowledgement. The rare
/// append that starts a segment also fsyncs the previous one, as a
/// client write that rolls a master's segment does.
const INLINE_APPEND_BYTES: usize = 256 << 10;

/// Chunks gathered from the frames already received, for one append.
struct Batch {
    /// The start of a record cut by a chunk boundary, left by the last
    /// append: the only log bytes copied before the engine takes them.
    carry: BytesMut,
    /// Chunks of the segment `base` received since, in order: views of
    /// the frames they arrived in, appended from there.
    parts: Vec<Bytes>,
    /// Bytes in `carry` and `parts`.
    held: usize,
    base: u64,
    /// The local log's end (everything appended, durable or not).
    end: u64,
    master_end: u64,
    chunks: u64,
    /// A heartbeat arrived: acknowledge even if nothing changed, so the
    /// master hears from an idle replica.
    heartbeat: bool,
}

impl Batch {
    /// Takes one message into the batch.
    fn take(&mut self, msg: ToReplica) -> Result<(), ReplError> {
        match msg {
            ToReplica::Chunk {
                segment_base,
                offset,
                master_end,
                bytes,
            } => {
                let expected = self.end + self.held as u64;
                if offset != expected {
                    return Err(ReplError::Unexpected(format!(
                        "chunk at {offset}, expected {expected}"
                    )));
                }
                if self.held == 0 {
                    self.base = segment_base;
                } else if segment_base != self.base {
                    return Err(ReplError::Unexpected("a record spans two segments".into()));
                }
                self.held += bytes.len();
                self.parts.push(bytes);
                self.master_end = master_end;
                self.chunks += 1;
            }
            ToReplica::Heartbeat { master_end, .. } => {
                self.master_end = master_end;
                self.heartbeat = true;
            }
            other => return Err(ReplError::Unexpected(format!("{other:?} while streaming"))),
        }
        Ok(())
    }

    /// Whether `msg` is a chunk of another segment than the bytes held,
    /// which must be appended first.
    fn other_segment(&self, msg: &ToReplica) -> bool {
        matches!(msg, ToReplica::Chunk { segment_base, .. }
            if self.held > 0 && *segment_base != self.base)
    }

    /// Whether more chunks may join before the append.
    fn has_room(&self) -> bool {
        self.held < MAX_APPEND_BATCH
    }
}

/// What [`append_parts`] did.
struct Appended {
    /// Bytes taken into the log.
    taken: u64,
    /// The local log's end after the last append, if any was made.
    end: Option<u64>,
    /// The start of a record still incomplete, for the next chunk.
    carry: BytesMut,
}

/// Appends `carry` then `parts` (log bytes of the segment `base`, in
/// order) to the local log, each chunk from the buffer it arrived in,
/// which the engine's buffer holds until the chunk is written (no copy). A
/// record cut by a chunk boundary is made whole in `carry` by copying its
/// missing bytes only; whatever is left incomplete at the end is returned
/// for the next chunk. The engine verifies every record's checksum.
fn append_parts(
    engine: &engine::Engine,
    base: u64,
    mut carry: BytesMut,
    parts: Vec<Bytes>,
) -> Result<Appended, engine::Error> {
    let mut taken = 0u64;
    let mut end = None;
    let mut note = |appended: engine::LogAppend| {
        taken += appended.taken as u64;
        end = Some(appended.end);
        appended.taken
    };
    for mut part in parts {
        if !carry.is_empty() {
            let missing = missing_bytes(&carry, &part).unwrap_or(part.len());
            let missing = missing.min(part.len());
            carry.extend_from_slice(&part[..missing]);
            part.advance(missing);
            let n = note(engine.append_log_deferred(base, &carry)?);
            carry.advance(n);
            if !carry.is_empty() {
                // Still no whole record (a short chunk): keep gathering.
                carry.extend_from_slice(&part);
                continue;
            }
        }
        if part.is_empty() {
            continue;
        }
        let n = note(engine.append_log_held(base, &part)?);
        carry.extend_from_slice(&part[n..]);
    }
    Ok(Appended { taken, end, carry })
}

/// Bytes of `next` that complete the record `carry` starts, if its header
/// can be read from `carry` and `next`; `None` leaves the decision (and
/// any error) to the append.
fn missing_bytes(carry: &[u8], next: &[u8]) -> Option<usize> {
    const LONGEST_HEADER: usize = record::HEADER_LEN + record::EXPIRY_LEN;
    let mut head = [0u8; LONGEST_HEADER];
    let from_carry = carry.len().min(LONGEST_HEADER);
    head[..from_carry].copy_from_slice(&carry[..from_carry]);
    let from_next = next.len().min(LONGEST_HEADER - from_carry);
    head[from_carry..from_carry + from_next].copy_from_slice(&next[..from_next]);
    let header = record::decode_header(&head[..from_carry + from_next]).ok()??;
    header.record_len().checked_sub(carry.len())
}

/// Streams after REPL_STREAM until the link fails. This is the replica's
/// group commit: every chunk already received is appended in one call
/// without waiting for durability, reading goes on while the engine's
/// flusher fsyncs, and each time the engine publishes new progress (one
/// fsync for everything appended before it) one REPL_ACK names the new
/// written and durable ends. No timer is involved.
async fn stream_log<R, W>(
    repl: &Arc<Replication>,
    reader: &mut FrameReader<R>,
    writer: &mut FrameWriter<W>,
) -> Result<(), ReplError>
where
    R: tokio::io::AsyncRead + Unpin,
    W: tokio::io::AsyncWrite + Unpin,
{
    let engine = repl.engine.clone();
    let limits = Limits::default();
    let mut progress = engine.subscribe();
    let mut batch = Batch {
        carry: BytesMut::new(),
        parts: Vec::new(),
        held: 0,
        base: 0,
        end: engine.end(),
        master_end: 0,
        chunks: 0,
        heartbeat: false,
    };
    let mut acked: Option<(u64, u64)> = None;
    let mut force_ack = true;
    loop {
        let now = *progress.borrow_and_update();
        if now.poisoned {
            let reason = engine.stats().poisoned.unwrap_or_default();
            return Err(ReplError::Engine(engine::Error::Poisoned { reason }));
        }
        let ends = (now.written, now.durable);
        if force_ack || acked != Some(ends) {
            let (written_end, durable_end) = ends;
            writer
                .send(|b| {
                    ToMaster::Ack {
                        written_end,
                        durable_end,
                    }
                    .encode(b)
                })
                .await?;
            repl.acks.fetch_add(1, Relaxed);
            acked = Some(ends);
            force_ack = false;
        }
        // Stop reading while too much is appended but not yet written.
        let may_read = batch.end.saturating_sub(now.written) <= MAX_UNWRITTEN_BYTES;
        tokio::select! {
            frame = reader.frame_within(MASTER_SILENCE), if may_read => {
                let mut frame = frame?;
                // Everything else already received joins this append.
                loop {
                    let msg = message(frame, &limits)?;
                    if batch.other_segment(&msg) {
                        apply(repl, &mut batch).await?;
                    }
                    batch.take(msg)?;
                    match reader.buffered()? {
                        Some(next) if batch.has_room() => frame = next,
                        Some(next) => {
                            apply(repl, &mut batch).await?;
                            frame = next;
                        }
                        None => break,
                    }
                }
                apply(repl, &mut batch).await?;
                force_ack |= std::mem::take(&mut batch.heartbeat);
            }
            changed = progress.changed() => {
                if changed.is_err() {
                    return Err(ReplError::Engine(engine::Error::Closed));
                }
            }
        }
    }
}

/// Appends what `batch` holds (whole records; a partial one stays for
/// the next chunk) without waiting for durability.
async fn apply(repl: &Arc<Replication>, batch: &mut Batch) -> Result<(), ReplError> {
    if batch.held > 0 {
        let (engine, base) = (repl.engine.clone(), batch.base);
        let (carry, parts) = (batch.carry.split(), std::mem::take(&mut batch.parts));
        let appended = if batch.held > INLINE_APPEND_BYTES {
            blocking(&repl.applying, move || {
                append_parts(&engine, base, carry, parts)
            })
            .await?
        } else {
            // Synchronous, so a stopped follower cannot leave it half done;
            // `applying` keeps a role change out meanwhile (see `blocking`).
            let _quiet = repl.applying.lock().await;
            append_parts(&engine, base, carry, parts)?
        };
        batch.carry = appended.carry;
        batch.held = batch.carry.len();
        if let Some(end) = appended.end {
            batch.end = end;
        }
        repl.bytes_shipped.fetch_add(appended.taken, Relaxed);
    }
    repl.chunks
        .fetch_add(std::mem::take(&mut batch.chunks), Relaxed);
    repl.observe_master(batch.master_end, batch.end);
    Ok(())
}

/// Refuses a master below this node's epoch, or below the epoch the
/// coordinator last showed a master in.
fn check_epoch(repl: &Replication, master: u32) -> Result<(), ReplError> {
    let ours = repl.engine.current_epoch().max(repl.epoch_floor());
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

async fn next_message<R: tokio::io::AsyncRead + Unpin>(
    reader: &mut FrameReader<R>,
    limits: &Limits,
) -> Result<ToReplica, ReplError> {
    let frame = reader.frame_within(MASTER_SILENCE).await?;
    message(frame, limits)
}

/// A master frame as a replication message; an ERROR frame (or any other
/// response) ends the link.
fn message(frame: Frame, limits: &Limits) -> Result<ToReplica, ReplError> {
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
    // The segment with the highest base: the active one once installed.
    let mut last_segment = None;
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
        let file = Arc::new(tokio::fs::File::create(&path).await?.into_std().await);
        let kind = FileKind::parse(&name);
        let mut out = FileWriter::new(file, kind.is_some());
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
            // Hand the bytes to the disk when the last write is done (or
            // enough waits), and receive on meanwhile.
            out.push(bytes, received == len).await?;
        }
        let entries = out.finish(len).await?;
        if let Some(FileKind::Segment { base }) = kind {
            last_segment = last_segment.max(Some(base));
        }
        if let (Some(kind), Some(entries)) = (kind, entries) {
            match entries {
                Ok(entries) => {
                    let (dir, hint) = (staging.clone(), kind.hint_name());
                    tokio::task::spawn_blocking(move || hint::write(&dir, &hint, len, &entries))
                        .await
                        .map_err(|e| ReplError::Unexpected(e.to_string()))??;
                }
                Err(why) => {
                    tracing::info!(file = %name, %why, "no hint for a received file; opening it scans it")
                }
            }
        }
    }
    let e = engine.clone();
    let dir = staging.clone();
    blocking(&repl.applying, move || {
        // The last segment turns active, which a hint of a sealed file
        // must not describe: it is appended to from here on.
        if let Some(base) = last_segment {
            let hint = dir.join(FileKind::Segment { base }.hint_name());
            match std::fs::remove_file(&hint) {
                Err(e) if e.kind() != std::io::ErrorKind::NotFound => {
                    return Err(e).at("remove", &hint)
                }
                _ => {}
            }
        }
        crate::durable::sync_dir(&dir)?;
        e.install_snapshot(&dir)
    })
    .await?;
    let _ = tokio::fs::remove_dir_all(&staging).await;
    Ok(())
}

/// Snapshot bytes gathered before one write to the staged file. The disk
/// stays busy whatever the size (the next write starts when the last one
/// ends); what is gathered meanwhile stays in receive blocks, so a small
/// batch keeps few of them touched.
const FILE_WRITE_BATCH: usize = 4 << 20;

/// Writes one staged snapshot file from the frames' own buffers on the
/// blocking pool, one batch at a time, while the stream is read on: the
/// network and the disk work at once, and no byte is copied on its way
/// from the read buffer to the file. The writes go in pieces of at most
/// 256 KiB, each handed to the disk at once ([`fault::write_at`]), so the
/// fsync at the end waits for the last piece, not the whole file. A data
/// file's records are checked on the way, in the buffer they arrived in,
/// for the hint that spares opening the installed file a scan of it.
struct FileWriter {
    file: Arc<std::fs::File>,
    /// Where the next batch goes.
    at: u64,
    batch: Vec<Bytes>,
    held: usize,
    /// The scan of a data file's records; away while a write holds it.
    scan: Option<ScanStream>,
    writing: Option<tokio::task::JoinHandle<std::io::Result<Option<ScanStream>>>>,
}

impl FileWriter {
    fn new(file: Arc<std::fs::File>, data: bool) -> Self {
        FileWriter {
            file,
            at: 0,
            batch: Vec::new(),
            held: 0,
            scan: data.then(ScanStream::default),
            writing: None,
        }
    }

    /// Takes `bytes`; starts a write of everything gathered when the last
    /// one is done, when the batch is full or when `last`.
    async fn push(&mut self, bytes: Bytes, last: bool) -> Result<(), ReplError> {
        self.held += bytes.len();
        self.batch.push(bytes);
        let idle = self.writing.as_ref().is_none_or(|w| w.is_finished());
        if idle || last || self.held >= FILE_WRITE_BATCH {
            self.wait().await?;
            let (file, at) = (Arc::clone(&self.file), self.at);
            let batch = std::mem::take(&mut self.batch);
            let mut scan = self.scan.take();
            self.at += std::mem::take(&mut self.held) as u64;
            self.writing = Some(tokio::task::spawn_blocking(move || {
                let mut at = at;
                for b in batch {
                    if let Some(scan) = &mut scan {
                        scan.feed(&b);
                    }
                    fault::write_at(None, &file, &b, at, true)?;
                    at += b.len() as u64;
                }
                Ok(scan)
            }));
        }
        Ok(())
    }

    /// Waits for the write in progress.
    async fn wait(&mut self) -> Result<(), ReplError> {
        if let Some(w) = self.writing.take() {
            self.scan = w
                .await
                .map_err(|e| ReplError::Unexpected(e.to_string()))??;
        }
        Ok(())
    }

    /// Writes what is left and fsyncs the file of `len` bytes; returns a
    /// data file's hint entries, or why it gets none.
    async fn finish(
        mut self,
        len: u64,
    ) -> Result<Option<Result<Vec<engine::hint::HintEntry>, String>>, ReplError> {
        if !self.batch.is_empty() {
            self.push(Bytes::new(), true).await?;
        }
        self.wait().await?;
        let file = self.file;
        tokio::task::spawn_blocking(move || file.sync_all())
            .await
            .map_err(|e| ReplError::Unexpected(e.to_string()))??;
        Ok(self.scan.map(|scan| scan.finish(len)))
    }
}

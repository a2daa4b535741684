//! `kvstore backup`: choose a node (a replica by preference), ask it for a
//! snapshot with BACKUP, store the files with their checksums, hard-link
//! the files the previous backup already has, write the manifest last,
//! confirm it to the node, and apply retention.
//!
//! A `--from` name that resolves to several addresses (a headless Service:
//! one A record per pod) stands for each of them: every address is a
//! candidate, reached by IP and verified (TLS) under that name, so the
//! list of nodes follows the Service as the StatefulSet scales.

use std::collections::HashMap;
use std::fs;
use std::io::Write;
use std::net::ToSocketAddrs;
use std::path::{Path, PathBuf};
use std::time::Duration;

use super::manifest::{BackupManifest, ManifestEpoch, ManifestFile, FORMAT, MANIFEST_FILE};
use super::{time, Error, Result};
use crate::client::{BlockingClient, ClientOptions};
use crate::durable::sync_dir;
use crate::engine::epochs::{self, EpochHistory};
use crate::engine::segment::FileKind;
use crate::engine::snapshot::is_snapshot_file;
use crate::protocol::replication::{ToMaster, ToReplica};
use crate::protocol::stream::{self, Framed, HelloError, OpenError, StreamError};
use crate::protocol::{Limits, Request, Response};
use crate::security::ClientStream;

/// What `kvstore backup` is asked to do.
#[derive(Debug, Clone)]
pub struct BackupOptions {
    /// Candidate nodes (`host:port`); the first replica that answers is
    /// used, else the first node that answers.
    pub sources: Vec<String>,
    /// The backup root: each backup is a subdirectory.
    pub to: PathBuf,
    /// Keep this many complete backups (the new one included); `None`
    /// keeps all.
    pub keep: Option<usize>,
    /// Bound on connecting and on each read from the node.
    pub timeout: Duration,
    /// Credential and TLS for the node; BACKUP needs an admin token when
    /// the node requires authentication.
    pub client: ClientOptions,
}

/// What a backup did.
#[derive(Debug, Clone)]
pub struct BackupReport {
    pub dir: PathBuf,
    pub source: String,
    pub source_role: String,
    pub files: usize,
    /// Files stored as hard links to the previous backup.
    pub linked: usize,
    /// Bytes written as new copies.
    pub copied_bytes: u64,
    pub end: u64,
    /// Old or incomplete backups removed by retention.
    pub removed: Vec<PathBuf>,
}

/// Takes one backup. On failure the partial backup directory is removed
/// (best effort); it never has a manifest in any case.
pub fn take_backup(opts: &BackupOptions) -> Result<BackupReport> {
    let (node, role) = choose_source(&opts.sources, opts.timeout, &opts.client)?;
    fs::create_dir_all(&opts.to)
        .map_err(|e| Error::io(format!("create backup root {}", opts.to.display()), e))?;
    let previous = latest_complete(&opts.to)?;
    let started = time::unix_ms();
    let dir = new_backup_dir(&opts.to, started)?;
    match receive(&node, &role, &dir, previous.as_ref(), opts.timeout, started) {
        Ok((manifest, copied_bytes)) => {
            let removed = apply_retention(&opts.to, &dir, opts.keep)?;
            Ok(BackupReport {
                files: manifest.files.len(),
                linked: manifest.files.iter().filter(|f| f.linked).count(),
                copied_bytes,
                end: manifest.end,
                dir,
                source: manifest.source,
                source_role: role,
                removed,
            })
        }
        Err(e) => {
            let _ = fs::remove_dir_all(&dir);
            Err(e)
        }
    }
}

/// One node to back up from.
#[derive(Debug, Clone)]
struct Node {
    /// Where to connect: the `--from` address, or one address it resolved to.
    connect: String,
    /// How the node is named in messages and in the manifest: its own
    /// advertised address once STATS told it, else `--from`'s.
    name: String,
    /// Credential, and TLS verifying the name the address came from.
    client: ClientOptions,
}

/// The candidates `--from` names, in order: an address whose host
/// resolves to several IP addresses becomes one candidate per address.
/// A name that does not resolve stays as it is (connecting reports why).
fn candidates(sources: &[String], client: &ClientOptions) -> Vec<Node> {
    let mut out = Vec::new();
    for addr in sources {
        let mut resolved: Vec<std::net::SocketAddr> = Vec::new();
        for a in addr.to_socket_addrs().into_iter().flatten() {
            if !resolved.contains(&a) {
                resolved.push(a);
            }
        }
        if resolved.len() <= 1 {
            out.push(Node {
                connect: addr.clone(),
                name: addr.clone(),
                client: client.clone(),
            });
            continue;
        }
        let host = crate::security::tls::host_of(addr);
        for a in resolved {
            out.push(Node {
                connect: a.to_string(),
                name: format!("{addr} ({a})"),
                client: ClientOptions {
                    tls: client.tls.as_ref().map(|c| c.for_name(host)),
                    ..client.clone()
                },
            });
        }
    }
    out
}

/// Asks each candidate for its role; prefers a replica.
fn choose_source(
    sources: &[String],
    timeout: Duration,
    client: &ClientOptions,
) -> Result<(Node, String)> {
    if sources.is_empty() {
        return Err(Error::NoSource("no --from address given".into()));
    }
    let nodes = candidates(sources, client);
    let several = nodes.len() > 1;
    let mut first_reachable: Option<(Node, String)> = None;
    let mut failures = Vec::new();
    for mut node in nodes {
        let options = ClientOptions {
            connect_timeout: timeout.min(Duration::from_secs(5)),
            follow_redirects: false,
            ..node.client.clone()
        };
        let stats =
            BlockingClient::connect(node.connect.as_str(), options).and_then(|mut c| c.stats());
        match stats {
            Ok(stats) => {
                let field = |name: &str| {
                    stats
                        .get("replication")
                        .and_then(|r| r.get(name))
                        .and_then(|r| r.as_str())
                        .filter(|s| !s.is_empty())
                        .map(str::to_string)
                };
                let role = field("role").unwrap_or_else(|| "unknown".into());
                if let Some(advertise) = field("advertise") {
                    node.name = advertise;
                }
                if role == "replica" {
                    return Ok((node, role));
                }
                first_reachable.get_or_insert((node, role));
            }
            Err(e) => failures.push(format!("{}: {e}", node.name)),
        }
    }
    match first_reachable {
        Some((node, role)) => {
            if several {
                eprintln!(
                    "warning: no replica answered; backing up from {} ({role})",
                    node.name
                );
            }
            Ok((node, role))
        }
        None => Err(Error::NoSource(failures.join("; "))),
    }
}

/// Names of complete backups (with a manifest) under `root`, oldest first.
pub fn complete_backups(root: &Path) -> Result<Vec<PathBuf>> {
    let mut out = Vec::new();
    let entries =
        fs::read_dir(root).map_err(|e| Error::io(format!("list {}", root.display()), e))?;
    for entry in entries {
        let entry = entry.map_err(|e| Error::io(format!("list {}", root.display()), e))?;
        let path = entry.path();
        if path.is_dir() && path.join(MANIFEST_FILE).is_file() {
            out.push(path);
        }
    }
    out.sort();
    Ok(out)
}

fn latest_complete(root: &Path) -> Result<Option<(PathBuf, BackupManifest)>> {
    for dir in complete_backups(root)?.into_iter().rev() {
        // A manifest that does not parse is not a base to link against.
        if let Ok(m) = BackupManifest::load(&dir) {
            return Ok(Some((dir, m)));
        }
    }
    Ok(None)
}

/// A new directory for a backup started at `now_ms`, named so that it
/// sorts after every directory already in `root`: retention and restore
/// take the order of the names as the order of the backups. Its UTC
/// timestamp, or when a directory already sorts at or after that (a
/// backup in the same second, a clock set back), the next name after the
/// last one (`20261125T031700Z-001`, `-002`, ...).
fn new_backup_dir(root: &Path, now_ms: u64) -> Result<PathBuf> {
    let stamp = time::compact_utc(now_ms);
    for _ in 0..1000 {
        let last = last_dir_name(root)?;
        let name = match last {
            Some(last) if last.as_str() >= stamp.as_str() => name_after(&last),
            _ => stamp.clone(),
        };
        let dir = root.join(name);
        match fs::create_dir(&dir) {
            Ok(()) => {
                sync_dir(root)?;
                return Ok(dir);
            }
            // Another backup took the name meanwhile: look again.
            Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => continue,
            Err(e) => return Err(Error::io(format!("create {}", dir.display()), e)),
        }
    }
    Err(Error::io(
        format!("create a backup directory under {}", root.display()),
        std::io::Error::other("every name tried was taken by another backup"),
    ))
}

/// The name of the directory in `root` that sorts last, if any.
fn last_dir_name(root: &Path) -> Result<Option<String>> {
    let entries =
        fs::read_dir(root).map_err(|e| Error::io(format!("list {}", root.display()), e))?;
    let mut last: Option<String> = None;
    for entry in entries {
        let entry = entry.map_err(|e| Error::io(format!("list {}", root.display()), e))?;
        let is_dir = entry.file_type().is_ok_and(|t| t.is_dir());
        if let (true, Ok(name)) = (is_dir, entry.file_name().into_string()) {
            if last.as_ref().is_none_or(|l| name > *l) {
                last = Some(name);
            }
        }
    }
    Ok(last)
}

/// A name that sorts right after `last`: its counter plus one
/// (`STAMP-007` after `STAMP-006`), or `-001` appended.
fn name_after(last: &str) -> String {
    if let Some((stem, counter)) = last.rsplit_once('-') {
        if counter.len() == 3 && counter.bytes().all(|b| b.is_ascii_digit()) {
            let n: u32 = counter.parse().unwrap_or(999);
            if n < 999 {
                return format!("{stem}-{:03}", n + 1);
            }
        }
    }
    format!("{last}-001")
}

/// The backup connection: the protocol's framed stream, driven from this
/// synchronous code by a runtime of its own.
struct Stream {
    runtime: tokio::runtime::Runtime,
    framed: Framed<ClientStream>,
    addr: String,
    /// Bound on each frame read and on each write.
    timeout: Duration,
}

impl Stream {
    /// Connects (with TLS when `client.tls` is set) and says HELLO with
    /// the credential of `client`.
    fn open(addr: &str, timeout: Duration, client: &ClientOptions) -> Result<Stream> {
        let connect_err = |source| Error::Connect {
            addr: addr.to_string(),
            source,
        };
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .map_err(connect_err)?;
        let hello = stream::hello(client.credential.as_deref(), &client.client_name);
        let limits = Limits::for_client();
        let open = stream::open(addr, client.tls.as_ref(), &hello, timeout, &limits);
        let opened = runtime.block_on(async { tokio::time::timeout(timeout, open).await });
        let framed = match opened {
            Ok(Ok((framed, _))) => framed,
            Err(_) => return Err(connect_err(std::io::ErrorKind::TimedOut.into())),
            Ok(Err(OpenError::Connect(e))) => return Err(connect_err(e)),
            Ok(Err(OpenError::Hello(e))) => {
                let bad = |why: String| Error::Stream {
                    addr: addr.to_string(),
                    why,
                };
                return Err(match e {
                    HelloError::Refused { code, message } => Error::Refused {
                        addr: addr.to_string(),
                        code,
                        message,
                    },
                    HelloError::Unexpected(response) => {
                        bad(format!("unexpected answer {response}"))
                    }
                    HelloError::Stream(e) => bad(e.to_string()),
                });
            }
        };
        Ok(Stream {
            runtime,
            framed,
            addr: addr.to_string(),
            timeout,
        })
    }

    fn bad(&self, why: impl Into<String>) -> Error {
        Error::Stream {
            addr: self.addr.clone(),
            why: why.into(),
        }
    }

    fn refused(&self, response: Response) -> Error {
        match response {
            Response::Error { code, message } => Error::Refused {
                addr: self.addr.clone(),
                code,
                message,
            },
            other => self.bad(format!("unexpected answer {other:?}")),
        }
    }

    /// Tells the node the backup is committed (REPL_ACK of the snapshot's
    /// `end`), then waits for it to close the connection, which it does
    /// once it has recorded the backup.
    fn confirm(&mut self, end: u64) -> Result<()> {
        let ack = ToMaster::Ack {
            written_end: end,
            durable_end: end,
        };
        self.framed
            .queue_with(|b| ack.encode(b))
            .map_err(|e| self.bad(e.to_string()))?;
        let what = format!("confirm the backup to {}", self.addr);
        self.write(&what)?;
        let (framed, timeout) = (&mut self.framed, self.timeout);
        match self.runtime.block_on(framed.reader().next_within(timeout)) {
            Ok(None) => Ok(()),
            // TLS without close_notify: the node closed all the same.
            Err(StreamError::Io(e)) if e.kind() == std::io::ErrorKind::UnexpectedEof => Ok(()),
            Ok(Some(_)) | Err(StreamError::Closed | StreamError::Protocol(_)) => {
                Err(self.bad("data after the end of the snapshot"))
            }
            Err(StreamError::Io(e)) => Err(Error::io(what, e)),
            Err(e @ StreamError::Timeout(_)) => Err(Error::io(what, std::io::Error::other(e))),
        }
    }

    fn send(&mut self, request: &Request) -> Result<()> {
        self.framed
            .queue(request)
            .map_err(|e| self.bad(e.to_string()))?;
        self.write(&format!(
            "send {} to {}",
            request.name().to_uppercase(),
            self.addr
        ))
    }

    /// Writes out what is queued, within the timeout.
    fn write(&mut self, what: &str) -> Result<()> {
        let (framed, timeout) = (&mut self.framed, self.timeout);
        let written = self
            .runtime
            .block_on(async { tokio::time::timeout(timeout, framed.flush()).await });
        match written {
            Ok(result) => result,
            Err(_) => Err(std::io::ErrorKind::TimedOut.into()),
        }
        .map_err(|e| Error::io(what.to_string(), e))
    }

    /// The next stream message; an ERROR frame becomes [`Error::Refused`].
    fn next(&mut self) -> Result<ToReplica> {
        let (framed, timeout) = (&mut self.framed, self.timeout);
        let frame = match self.runtime.block_on(framed.reader().next_within(timeout)) {
            Ok(Some(frame)) => frame,
            Ok(None) | Err(StreamError::Closed) => {
                return Err(self.bad("the node closed the stream before it was complete"))
            }
            Err(StreamError::Io(e)) => {
                return Err(Error::io(format!("read from {}", self.addr), e))
            }
            Err(e @ StreamError::Timeout(_)) => {
                return Err(Error::io(
                    format!("read from {}", self.addr),
                    std::io::Error::new(std::io::ErrorKind::TimedOut, e),
                ))
            }
            Err(StreamError::Protocol(e)) => return Err(self.bad(e.to_string())),
        };
        match ToReplica::decode(frame.clone()).map_err(|e| self.bad(e.to_string()))? {
            Some(msg) => Ok(msg),
            None => match Response::decode(frame, &Limits::for_client()) {
                Ok(response) => Err(self.refused(response)),
                Err(e) => Err(self.bad(e.to_string())),
            },
        }
    }
}

/// Receives the snapshot into `dir`, writes the manifest, then confirms
/// the backup to the node. Returns the manifest and the bytes written as
/// new copies.
fn receive(
    node: &Node,
    role: &str,
    dir: &Path,
    previous: Option<&(PathBuf, BackupManifest)>,
    timeout: Duration,
    started: u64,
) -> Result<(BackupManifest, u64)> {
    let mut stream = Stream::open(&node.connect, timeout, &node.client)?;
    stream.send(&Request::Backup)?;
    let (epoch, start, end, count) = match stream.next()? {
        ToReplica::FullResync {
            epoch,
            start,
            end,
            files,
        } => (epoch, start, end, files),
        other => return Err(stream.bad(format!("{other:?} instead of REPL_FULL"))),
    };
    let mut files = Vec::new();
    let mut copied = 0u64;
    let mut seen: HashMap<String, ()> = HashMap::new();
    for _ in 0..count {
        let (name, len) = match stream.next()? {
            ToReplica::File { name, len } => (name, len),
            other => return Err(stream.bad(format!("{other:?} instead of REPL_FILE"))),
        };
        // The name comes from the network: plain snapshot file names only.
        if !is_snapshot_file(&name) || name.contains('/') || seen.insert(name.clone(), ()).is_some()
        {
            return Err(stream.bad(format!("refusing file name {name:?}")));
        }
        let entry = receive_file(&mut stream, dir, &name, len, previous)?;
        if !entry.linked {
            copied += len;
        }
        files.push(entry);
    }
    match stream.next()? {
        ToReplica::Stream { from, .. } if from == end => {}
        other => return Err(stream.bad(format!("{other:?} instead of the end of the snapshot"))),
    }
    let history = match fs::read(dir.join(epochs::FILE_NAME)) {
        Ok(bytes) => EpochHistory::decode(&bytes).map_err(|why| Error::Corrupt {
            file: dir.join(epochs::FILE_NAME),
            why: why.to_string(),
        })?,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => EpochHistory::default(),
        Err(e) => return Err(Error::io("read the received EPOCHS", e)),
    };
    let manifest = BackupManifest {
        format: FORMAT,
        kvstore_version: env!("CARGO_PKG_VERSION").to_string(),
        created: time::rfc3339(started),
        created_unix_ms: started,
        source: node.name.clone(),
        source_role: role.to_string(),
        epoch,
        start,
        end,
        epochs: history.entries().iter().map(ManifestEpoch::from).collect(),
        files,
    };
    // Every file is durable (fsynced, directory fsynced) before the
    // manifest that makes the backup complete.
    sync_dir(dir)?;
    manifest.store(dir)?;
    if let Some(root) = dir.parent() {
        sync_dir(root)?;
    }
    // The backup is complete whatever happens now; only the node's record
    // of it (its last-backup metric) depends on the confirmation.
    if let Err(e) = stream.confirm(end) {
        eprintln!(
            "warning: the backup is complete, but {} did not take the confirmation ({e}); \
             its kvstore_backup_last_success_timestamp_seconds is not updated",
            node.name
        );
    }
    Ok((manifest, copied))
}

/// Receives one file, computing its crc32 as the bytes arrive; links it
/// to the previous backup's copy when that one is identical.
fn receive_file(
    stream: &mut Stream,
    dir: &Path,
    name: &str,
    len: u64,
    previous: Option<&(PathBuf, BackupManifest)>,
) -> Result<ManifestFile> {
    let path = dir.join(name);
    let mut file = fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .open(&path)
        .map_err(|e| Error::io(format!("create {}", path.display()), e))?;
    let mut crc = crc32fast::Hasher::new();
    let mut xxh = xxhash_rust::xxh3::Xxh3::new();
    let mut received = 0u64;
    while received < len {
        let bytes = match stream.next()? {
            ToReplica::FileData { bytes } => bytes,
            other => return Err(stream.bad(format!("{other:?} inside file {name}"))),
        };
        received = received.saturating_add(bytes.len() as u64);
        if bytes.is_empty() || received > len {
            return Err(stream.bad(format!("file {name} overruns its length {len}")));
        }
        crc.update(&bytes);
        xxh.update(&bytes);
        file.write_all(&bytes)
            .map_err(|e| Error::io(format!("write {}", path.display()), e))?;
    }
    file.sync_all()
        .map_err(|e| Error::io(format!("fsync {}", path.display()), e))?;
    drop(file);
    let crc32 = crc.finalize();
    let xxh3 = xxh.digest();
    // Only data files are worth linking (and only they never change).
    let data_file = FileKind::parse(name).is_some();
    if let Some((prev_dir, prev)) = previous.filter(|_| data_file) {
        let same = prev
            .file(name)
            .is_some_and(|f| f.len == len && f.crc32 == crc32 && f.xxh3 == xxh3);
        let prev_path = prev_dir.join(name);
        let prev_len = fs::metadata(&prev_path).map(|m| m.len()).ok();
        if same && prev_len == Some(len) {
            // Swap the copy for a link; if linking fails, keep the copy.
            let tmp = dir.join(format!("{name}.link"));
            if fs::hard_link(&prev_path, &tmp).is_ok() {
                fs::rename(&tmp, &path)
                    .map_err(|e| Error::io(format!("link {}", path.display()), e))?;
                return Ok(ManifestFile {
                    name: name.to_string(),
                    len,
                    crc32,
                    xxh3,
                    linked: true,
                });
            }
        }
    }
    Ok(ManifestFile {
        name: name.to_string(),
        len,
        crc32,
        xxh3,
        linked: false,
    })
}

/// Keeps the newest `keep` complete backups, and removes incomplete
/// directories older than `current` (left by failed runs).
fn apply_retention(root: &Path, current: &Path, keep: Option<usize>) -> Result<Vec<PathBuf>> {
    let mut removed = Vec::new();
    let entries =
        fs::read_dir(root).map_err(|e| Error::io(format!("list {}", root.display()), e))?;
    for entry in entries.flatten() {
        let path = entry.path();
        if path.is_dir() && path.as_path() < current && !path.join(MANIFEST_FILE).exists() {
            fs::remove_dir_all(&path)
                .map_err(|e| Error::io(format!("remove incomplete {}", path.display()), e))?;
            removed.push(path);
        }
    }
    if let Some(keep) = keep {
        let complete = complete_backups(root)?;
        let excess = complete.len().saturating_sub(keep.max(1));
        for path in complete.into_iter().take(excess) {
            // The manifest goes first, so a crash midway leaves an
            // incomplete backup, never a complete one with missing files.
            let _ = fs::remove_file(path.join(MANIFEST_FILE));
            fs::remove_dir_all(&path)
                .map_err(|e| Error::io(format!("remove old backup {}", path.display()), e))?;
            removed.push(path);
        }
    }
    if !removed.is_empty() {
        sync_dir(root)?;
    }
    Ok(removed)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_name_after_another_sorts_after_it() {
        for (last, next) in [
            ("20261125T031700Z", "20261125T031700Z-001"),
            ("20261125T031700Z-001", "20261125T031700Z-002"),
            ("20261125T031700Z-999", "20261125T031700Z-999-001"),
            ("20261125T031700Z-9", "20261125T031700Z-9-001"),
            ("restored", "restored-001"),
        ] {
            assert_eq!(name_after(last), next);
            assert!(next > last, "{next} sorts before {last}");
        }
    }

    #[test]
    fn new_backup_directories_sort_in_the_order_they_were_made() {
        let root = tempfile::tempdir().unwrap();
        let now = 1_764_040_620_000; // 2025-11-25T03:17:00Z
        let made: Vec<PathBuf> = (0..12)
            .map(|_| new_backup_dir(root.path(), now).unwrap())
            .collect();
        let mut sorted = made.clone();
        sorted.sort();
        assert_eq!(sorted, made);
        assert!(made[0].ends_with("20251125T031700Z"), "{:?}", made[0]);
        assert!(made[11].ends_with("20251125T031700Z-011"), "{:?}", made[11]);
        // Retention removed the oldest: its free name is not taken again,
        // it would sort before the backups it follows.
        fs::remove_dir(&made[0]).unwrap();
        let next = new_backup_dir(root.path(), now).unwrap();
        assert!(next.ends_with("20251125T031700Z-012"), "{next:?}");
        // A clock set back a minute: still after the last.
        let earlier = new_backup_dir(root.path(), now - 60_000).unwrap();
        assert!(earlier > next, "{earlier:?} sorts before {next:?}");
        // A later second starts from its own timestamp again.
        let later = new_backup_dir(root.path(), now + 1_000).unwrap();
        assert!(later.ends_with("20251125T031701Z"), "{later:?}");
    }
}

//! Replication stream messages, exchanged on a connection that began as an
//! ordinary client connection (HELLO, then REPL_SYNC).
//!
//! A replica sends REPL_SYNC with its newest epoch and log end. The master
//! answers with exactly one of:
//! - REPL_TRUNCATE: the replica's log diverged; it cuts its log at `to`
//!   and sends REPL_SYNC again;
//! - REPL_FULL, then for each file REPL_FILE and its REPL_FILE_DATA chunks,
//!   then REPL_STREAM: the replica installs the files instead of its log;
//! - REPL_STREAM: the log continues from `from`;
//! - ERROR (e.g. STALE_MASTER, NOT_MASTER): the connection closes.
//!
//! After REPL_STREAM the master sends REPL_CHUNK (raw log bytes by
//! offset) and REPL_HEARTBEAT frames; the replica answers with REPL_ACK
//! frames naming how far its log is written and how far it is durable
//! (fsynced). Both directions flow at once.
//!
//! Field layouts are in `docs/PROTOCOL.md`; every length is bounded.

use bytes::{BufMut, Bytes, BytesMut};

use super::error::Error;
use super::frame::Frame;
use super::opcode;
use super::wire::{finish_frame, finish_frame_before, put_sized, start_frame, Reader};

/// Longest replica id, address or file name accepted.
pub const MAX_NAME_BYTES: u32 = 1024;
/// Largest chunk of log or file bytes in one frame.
pub const MAX_CHUNK_BYTES: u32 = 4 * 1024 * 1024;

/// What a replica asks for when it (re)connects.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SyncRequest {
    /// Stable name of the replica (its advertised address by default).
    pub replica_id: String,
    /// Where clients can reach the replica; may be empty.
    pub advertise: String,
    /// The newest epoch in the replica's log.
    pub epoch: u32,
    /// The replica's log end: where it wants the stream to start.
    pub end: u64,
    /// Ask for a full resync whatever the offsets say.
    pub full: bool,
    /// The newest on-disk record format the replica reads. Sent since
    /// format 2; a replica that does not send it reads format 1 only.
    pub format: u32,
    /// The replica's data-directory id (32 hex digits); empty: not sent
    /// (a replica from before directory ids), unknown. Sent only when
    /// known, so a request without it keeps its older layout.
    pub dir_id: String,
}

/// Replica → master, after REPL_SYNC.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ToMaster {
    Sync(SyncRequest),
    /// How far the replica has the log. `written_end`: appended, verified
    /// and handed to the OS (survives a crash of the replica's process,
    /// not of its machine). `durable_end`: fsynced (survives a machine
    /// crash), whatever the replica's durability policy; never above
    /// `written_end`.
    Ack {
        written_end: u64,
        durable_end: u64,
    },
}

/// Master → replica.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ToReplica {
    Truncate {
        epoch: u32,
        to: u64,
    },
    FullResync {
        epoch: u32,
        /// The snapshot's first raw-log offset (merged horizon).
        start: u64,
        /// Where the stream continues after the files.
        end: u64,
        files: u32,
    },
    File {
        name: String,
        len: u64,
    },
    FileData {
        bytes: Bytes,
    },
    Stream {
        epoch: u32,
        from: u64,
    },
    Chunk {
        segment_base: u64,
        offset: u64,
        master_end: u64,
        bytes: Bytes,
    },
    Heartbeat {
        master_end: u64,
        unix_ms: u64,
    },
}

fn name_too_large(len: u64, _max: u32) -> Error {
    Error::InvalidField {
        opcode: "REPL",
        field: "name length",
        value: len,
    }
}

fn chunk_too_large(len: u64, max: u32) -> Error {
    Error::ValueTooLarge { len, max }
}

fn utf8(opcode: &'static str, field: &'static str, bytes: Bytes) -> Result<String, Error> {
    String::from_utf8(bytes.to_vec()).map_err(|_| Error::InvalidUtf8 { opcode, field })
}

impl SyncRequest {
    pub(crate) fn encode_body(&self, dst: &mut BytesMut) {
        put_sized(dst, self.replica_id.as_bytes());
        put_sized(dst, self.advertise.as_bytes());
        dst.put_u32_le(self.epoch);
        dst.put_u64_le(self.end);
        dst.put_u8(u8::from(self.full));
        dst.put_u32_le(self.format);
        if !self.dir_id.is_empty() {
            put_sized(dst, self.dir_id.as_bytes());
        }
    }

    pub(crate) fn decode_body(r: &mut Reader) -> Result<SyncRequest, Error> {
        let op = r.opcode();
        let replica_id = utf8(
            op,
            "replica id",
            r.sized("replica id", MAX_NAME_BYTES, name_too_large)?,
        )?;
        let advertise = utf8(
            op,
            "advertise",
            r.sized("advertise", MAX_NAME_BYTES, name_too_large)?,
        )?;
        let epoch = r.u32("epoch")?;
        let end = r.u64("end")?;
        let full = r.bool("full")?;
        // Absent from replicas built before format 2.
        let format = if r.remaining() == 0 {
            1
        } else {
            r.u32("format")?
        };
        // Absent from replicas built before data-directory ids.
        let dir_id = if r.remaining() == 0 {
            String::new()
        } else {
            utf8(
                op,
                "dir id",
                r.sized("dir id", MAX_NAME_BYTES, name_too_large)?,
            )?
        };
        Ok(SyncRequest {
            replica_id,
            advertise,
            epoch,
            end,
            full,
            format,
            dir_id,
        })
    }
}

impl ToMaster {
    pub fn encode(&self, dst: &mut BytesMut) -> Result<(), Error> {
        match self {
            ToMaster::Sync(s) => {
                let at = start_frame(dst, opcode::REPL_SYNC);
                s.encode_body(dst);
                finish_frame(dst, at)
            }
            ToMaster::Ack {
                written_end,
                durable_end,
            } => {
                let at = start_frame(dst, opcode::REPL_ACK);
                dst.put_u64_le(*written_end);
                dst.put_u64_le(*durable_end);
                finish_frame(dst, at)
            }
        }
    }

    pub fn decode(frame: Frame) -> Result<ToMaster, Error> {
        let mut r = Reader::new(frame.payload, opcode::name(frame.opcode));
        let msg = match frame.opcode {
            opcode::REPL_SYNC => ToMaster::Sync(SyncRequest::decode_body(&mut r)?),
            opcode::REPL_ACK => {
                let (written_end, durable_end) = (r.u64("written end")?, r.u64("durable end")?);
                if durable_end > written_end {
                    return Err(Error::InvalidField {
                        opcode: "REPL_ACK",
                        field: "durable end above written end",
                        value: durable_end,
                    });
                }
                ToMaster::Ack {
                    written_end,
                    durable_end,
                }
            }
            other => return Err(Error::UnknownOpcode { opcode: other }),
        };
        r.finish()?;
        Ok(msg)
    }
}

impl ToReplica {
    pub fn encode(&self, dst: &mut BytesMut) -> Result<(), Error> {
        self.encode_parts(dst, true).map(|_| ())
    }

    /// Encodes the frame without the bulk bytes of a REPL_CHUNK or
    /// REPL_FILE_DATA, which are returned instead: written right after
    /// `dst`, they complete the frame (the bytes [`ToReplica::encode`]
    /// writes), without copying them into the frame buffer. Other
    /// messages are encoded whole and return `None`.
    pub fn encode_head(&self, dst: &mut BytesMut) -> Result<Option<Bytes>, Error> {
        self.encode_parts(dst, false)
    }

    fn encode_parts(&self, dst: &mut BytesMut, inline: bool) -> Result<Option<Bytes>, Error> {
        // The bulk bytes, when they are left out of `dst`.
        let mut out: Option<Bytes> = None;
        let mut bulk = |dst: &mut BytesMut, bytes: &Bytes| {
            if inline {
                put_sized(dst, bytes);
            } else {
                dst.put_u32_le(u32::try_from(bytes.len()).unwrap_or(u32::MAX));
                out = Some(bytes.clone());
            }
        };
        let at = match self {
            ToReplica::Truncate { epoch, to } => {
                let at = start_frame(dst, opcode::REPL_TRUNCATE);
                dst.put_u32_le(*epoch);
                dst.put_u64_le(*to);
                at
            }
            ToReplica::FullResync {
                epoch,
                start,
                end,
                files,
            } => {
                let at = start_frame(dst, opcode::REPL_FULL);
                dst.put_u32_le(*epoch);
                dst.put_u64_le(*start);
                dst.put_u64_le(*end);
                dst.put_u32_le(*files);
                at
            }
            ToReplica::File { name, len } => {
                let at = start_frame(dst, opcode::REPL_FILE);
                put_sized(dst, name.as_bytes());
                dst.put_u64_le(*len);
                at
            }
            ToReplica::FileData { bytes } => {
                let at = start_frame(dst, opcode::REPL_FILE_DATA);
                bulk(dst, bytes);
                at
            }
            ToReplica::Stream { epoch, from } => {
                let at = start_frame(dst, opcode::REPL_STREAM);
                dst.put_u32_le(*epoch);
                dst.put_u64_le(*from);
                at
            }
            ToReplica::Chunk {
                segment_base,
                offset,
                master_end,
                bytes,
            } => {
                let at = start_frame(dst, opcode::REPL_CHUNK);
                dst.put_u64_le(*segment_base);
                dst.put_u64_le(*offset);
                dst.put_u64_le(*master_end);
                bulk(dst, bytes);
                at
            }
            ToReplica::Heartbeat {
                master_end,
                unix_ms,
            } => {
                let at = start_frame(dst, opcode::REPL_HEARTBEAT);
                dst.put_u64_le(*master_end);
                dst.put_u64_le(*unix_ms);
                at
            }
        };
        finish_frame_before(dst, at, out.as_ref().map_or(0, Bytes::len))?;
        Ok(out)
    }

    /// Decodes a master frame. `Ok(None)` for an opcode that is not a
    /// replication message (the caller decodes it as a [`super::Response`],
    /// e.g. an ERROR).
    pub fn decode(frame: Frame) -> Result<Option<ToReplica>, Error> {
        let op = opcode::name(frame.opcode);
        let mut r = Reader::new(frame.payload.clone(), op);
        let msg = match frame.opcode {
            opcode::REPL_TRUNCATE => ToReplica::Truncate {
                epoch: r.u32("epoch")?,
                to: r.u64("to")?,
            },
            opcode::REPL_FULL => ToReplica::FullResync {
                epoch: r.u32("epoch")?,
                start: r.u64("start")?,
                end: r.u64("end")?,
                files: r.u32("files")?,
            },
            opcode::REPL_FILE => ToReplica::File {
                name: utf8(op, "name", r.sized("name", MAX_NAME_BYTES, name_too_large)?)?,
                len: r.u64("length")?,
            },
            opcode::REPL_FILE_DATA => ToReplica::FileData {
                bytes: r.sized("data", MAX_CHUNK_BYTES, chunk_too_large)?,
            },
            opcode::REPL_STREAM => ToReplica::Stream {
                epoch: r.u32("epoch")?,
                from: r.u64("from")?,
            },
            opcode::REPL_CHUNK => ToReplica::Chunk {
                segment_base: r.u64("segment base")?,
                offset: r.u64("offset")?,
                master_end: r.u64("master end")?,
                bytes: r.sized("bytes", MAX_CHUNK_BYTES, chunk_too_large)?,
            },
            opcode::REPL_HEARTBEAT => ToReplica::Heartbeat {
                master_end: r.u64("master end")?,
                unix_ms: r.u64("time")?,
            },
            _ => return Ok(None),
        };
        r.finish()?;
        Ok(Some(msg))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn frame_of(buf: &mut BytesMut) -> Frame {
        Frame::parse(buf, u32::MAX).unwrap().unwrap()
    }

    #[test]
    fn every_message_round_trips() {
        let to_master = [
            ToMaster::Sync(SyncRequest {
                replica_id: "kvstore-1".into(),
                advertise: "10.0.0.2:5555".into(),
                epoch: 7,
                end: 1 << 40,
                full: true,
                format: 2,
                dir_id: String::new(),
            }),
            ToMaster::Sync(SyncRequest {
                replica_id: "kvstore-2".into(),
                advertise: String::new(),
                epoch: 7,
                end: 5,
                full: false,
                format: 2,
                dir_id: "0123456789abcdef0123456789abcdef".into(),
            }),
            ToMaster::Ack {
                written_end: 120,
                durable_end: 99,
            },
        ];
        for m in to_master {
            let mut buf = BytesMut::new();
            m.encode(&mut buf).unwrap();
            assert_eq!(ToMaster::decode(frame_of(&mut buf)).unwrap(), m);
        }
        let to_replica = [
            ToReplica::Truncate { epoch: 3, to: 12 },
            ToReplica::FullResync {
                epoch: 3,
                start: 4096,
                end: 9000,
                files: 4,
            },
            ToReplica::File {
                name: "00000000000000004096.seg".into(),
                len: 77,
            },
            ToReplica::FileData {
                bytes: Bytes::from_static(b"abc"),
            },
            ToReplica::Stream {
                epoch: 3,
                from: 9000,
            },
            ToReplica::Chunk {
                segment_base: 4096,
                offset: 9000,
                master_end: 9100,
                bytes: Bytes::from_static(&[1, 2, 3]),
            },
            ToReplica::Heartbeat {
                master_end: 5,
                unix_ms: 6,
            },
        ];
        for m in to_replica {
            let mut buf = BytesMut::new();
            m.encode(&mut buf).unwrap();
            // The head and the bulk bytes left out of it are the same
            // frame, byte for byte.
            let mut split = BytesMut::new();
            let bulk = m.encode_head(&mut split).unwrap();
            let carries = matches!(m, ToReplica::Chunk { .. } | ToReplica::FileData { .. });
            assert_eq!(bulk.is_some(), carries, "{m:?}");
            split.extend_from_slice(&bulk.unwrap_or_default());
            assert_eq!(split, buf, "{m:?}");
            assert_eq!(ToReplica::decode(frame_of(&mut buf)).unwrap(), Some(m));
        }
    }

    #[test]
    fn truncated_and_oversized_fields_are_refused() {
        let mut buf = BytesMut::new();
        ToReplica::Chunk {
            segment_base: 0,
            offset: 0,
            master_end: 0,
            bytes: Bytes::from_static(b"xyz"),
        }
        .encode(&mut buf)
        .unwrap();
        let frame = frame_of(&mut buf);
        for cut in 0..frame.payload.len() {
            let f = Frame {
                opcode: frame.opcode,
                payload: frame.payload.slice(..cut),
            };
            assert!(ToReplica::decode(f).is_err(), "cut at {cut}");
        }
        let mut payload = BytesMut::new();
        payload.put_u64_le(0);
        payload.put_u64_le(0);
        payload.put_u64_le(0);
        payload.put_u32_le(u32::MAX);
        let f = Frame {
            opcode: opcode::REPL_CHUNK,
            payload: payload.freeze(),
        };
        assert!(matches!(
            ToReplica::decode(f),
            Err(Error::ValueTooLarge { .. })
        ));
    }
}

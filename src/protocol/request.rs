//! Requests: what a client asks, and their payload layouts.
//!
//! Every variable-length field is a `u32` little-endian length followed by
//! that many bytes. Decoding checks each length against [`Limits`] before
//! taking the bytes, and rejects trailing bytes (except in HELLO, which
//! later versions may extend).

use bytes::{BufMut, Bytes, BytesMut};

use super::error::Error;
use super::expiry::{ExpireCondition, Expiry};
use super::frame::Frame;
use super::limits::Limits;
use super::opcode;
use super::replication::{SyncRequest, MAX_NAME_BYTES};
use super::wire::{finish_frame, put_sized, start_frame, Reader};

/// Longest credential or client name accepted in HELLO.
pub const MAX_HELLO_FIELD: u32 = 4096;

/// The connection handshake: optional today, required once authentication
/// is enabled on the server.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Hello {
    /// Highest protocol version the client speaks.
    pub version: u16,
    pub auth: Auth,
    /// Free-form name for logs (like Redis `CLIENT SETNAME`); may be empty.
    pub client_name: String,
}

/// A credential carried by HELLO.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Auth {
    /// Method 0: no credential.
    None,
    /// Method 1: an opaque bearer token.
    Token(Bytes),
}

/// One operation of an atomic BATCH.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum BatchOp {
    Put {
        key: Bytes,
        value: Bytes,
    },
    Delete {
        key: Bytes,
    },
    /// Protocol version 2.
    PutExpiring {
        key: Bytes,
        value: Bytes,
        expiry: Expiry,
    },
}

/// A request from a client.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Request {
    Hello(Hello),
    Ping,
    Get {
        key: Bytes,
    },
    Put {
        key: Bytes,
        value: Bytes,
    },
    Delete {
        key: Bytes,
    },
    Exists {
        key: Bytes,
    },
    /// All operations are applied atomically, in order.
    Batch(Vec<BatchOp>),
    Compact,
    Stats,
    /// Admin: make this replica the master, in a new epoch.
    Promote,
    /// Admin: follow the master at this address (repoints a replica or
    /// demotes a master).
    Replicate {
        master: String,
    },
    /// Admin, with a coordinator: hand the master's seat to `to` (a node
    /// id), or to the most caught-up eligible replica when `None`.
    Switchover {
        to: Option<String>,
    },
    /// PUT with an expiry (protocol version 2). Like PUT, it replaces the
    /// key's value and expiry.
    PutExpiring {
        key: Bytes,
        value: Bytes,
        expiry: Expiry,
    },
    /// Sets the key's expiry if it has a value and `only_if` holds
    /// (protocol version 2). An expiry already past deletes the key.
    Expire {
        key: Bytes,
        expiry: Expiry,
        only_if: ExpireCondition,
    },
    /// Removes the key's expiry, if it has one (protocol version 2).
    Persist {
        key: Bytes,
    },
    /// Asks whether the key has a value and until when (protocol version 2).
    Ttl {
        key: Bytes,
    },
    /// Asks the node for the coordinator's view of the cluster (holder,
    /// epoch, lease, in-sync set, members); answered with a JSON document.
    ClusterStatus,
    /// Opens a replication stream; the connection becomes one.
    ReplSync(SyncRequest),
    /// Asks for a snapshot stream for a backup; the connection becomes one
    /// and closes after it.
    Backup,
}

const AUTH_NONE: u8 = 0;
const AUTH_TOKEN: u8 = 1;

fn key_too_large(len: u64, max: u32) -> Error {
    Error::KeyTooLarge { len, max }
}

fn value_too_large(len: u64, max: u32) -> Error {
    Error::ValueTooLarge { len, max }
}

fn hello_field_too_large(len: u64, _max: u32) -> Error {
    Error::InvalidField {
        opcode: "HELLO",
        field: "credential length",
        value: len,
    }
}

/// Smallest encoding of one batch operation: kind + key length + value
/// length with empty key and value. Bounds the capacity reserved for a
/// batch by what the frame could actually hold.
const MIN_BATCH_OP_LEN: usize = 1 + 4;

impl Request {
    /// The opcode this request is sent with.
    pub fn opcode(&self) -> u8 {
        match self {
            Request::Hello(_) => opcode::HELLO,
            Request::Ping => opcode::PING,
            Request::Get { .. } => opcode::GET,
            Request::Put { .. } => opcode::PUT,
            Request::Delete { .. } => opcode::DELETE,
            Request::Exists { .. } => opcode::EXISTS,
            Request::Batch(_) => opcode::BATCH,
            Request::Compact => opcode::COMPACT,
            Request::Stats => opcode::STATS,
            Request::Promote => opcode::PROMOTE,
            Request::Replicate { .. } => opcode::REPLICATE,
            Request::Switchover { .. } => opcode::SWITCHOVER,
            Request::PutExpiring { .. } => opcode::PUT_EXPIRING,
            Request::Expire { .. } => opcode::EXPIRE,
            Request::Persist { .. } => opcode::PERSIST,
            Request::Ttl { .. } => opcode::TTL,
            Request::ClusterStatus => opcode::CLUSTER_STATUS,
            Request::ReplSync(_) => opcode::REPL_SYNC,
            Request::Backup => opcode::BACKUP,
        }
    }

    /// The oldest protocol version that has this request: a client must
    /// not send it on a connection whose HELLO_OK says less.
    pub fn min_version(&self) -> u16 {
        let expiring = |op: &BatchOp| matches!(op, BatchOp::PutExpiring { .. });
        match self {
            Request::PutExpiring { .. }
            | Request::Expire { .. }
            | Request::Persist { .. }
            | Request::Ttl { .. } => super::EXPIRY_VERSION,
            Request::Batch(ops) if ops.iter().any(expiring) => super::EXPIRY_VERSION,
            _ => 1,
        }
    }

    /// A short lowercase name, used for metrics labels.
    pub fn name(&self) -> &'static str {
        match self {
            Request::Hello(_) => "hello",
            Request::Ping => "ping",
            Request::Get { .. } => "get",
            Request::Put { .. } => "put",
            Request::Delete { .. } => "delete",
            Request::Exists { .. } => "exists",
            Request::Batch(_) => "batch",
            Request::Compact => "compact",
            Request::Stats => "stats",
            Request::Promote => "promote",
            Request::Replicate { .. } => "replicate",
            Request::Switchover { .. } => "switchover",
            Request::PutExpiring { .. } => "put_expiring",
            Request::Expire { .. } => "expire",
            Request::Persist { .. } => "persist",
            Request::Ttl { .. } => "ttl",
            Request::ClusterStatus => "cluster_status",
            Request::ReplSync(_) => "repl_sync",
            Request::Backup => "backup",
        }
    }

    /// Appends this request as one frame to `dst`.
    pub fn encode(&self, dst: &mut BytesMut) -> Result<(), Error> {
        let at = start_frame(dst, self.opcode());
        match self {
            Request::Hello(hello) => {
                dst.put_u16_le(hello.version);
                match &hello.auth {
                    Auth::None => {
                        dst.put_u8(AUTH_NONE);
                        put_sized(dst, &[]);
                    }
                    Auth::Token(token) => {
                        dst.put_u8(AUTH_TOKEN);
                        put_sized(dst, token);
                    }
                }
                put_sized(dst, hello.client_name.as_bytes());
            }
            Request::Ping
            | Request::Compact
            | Request::Stats
            | Request::Promote
            | Request::Backup => {}
            Request::ClusterStatus => {}
            Request::Replicate { master } => put_sized(dst, master.as_bytes()),
            Request::Switchover { to } => {
                put_sized(dst, to.as_deref().unwrap_or_default().as_bytes())
            }
            Request::ReplSync(sync) => sync.encode_body(dst),
            Request::Get { key }
            | Request::Delete { key }
            | Request::Exists { key }
            | Request::Persist { key }
            | Request::Ttl { key } => {
                put_sized(dst, key);
            }
            Request::Put { key, value } => {
                put_sized(dst, key);
                put_sized(dst, value);
            }
            Request::PutExpiring { key, value, expiry } => {
                put_sized(dst, key);
                put_sized(dst, value);
                expiry.encode(dst);
            }
            Request::Expire {
                key,
                expiry,
                only_if,
            } => {
                put_sized(dst, key);
                expiry.encode(dst);
                only_if.encode(dst);
            }
            Request::Batch(ops) => {
                dst.put_u32_le(u32::try_from(ops.len()).unwrap_or(u32::MAX));
                for op in ops {
                    match op {
                        BatchOp::Put { key, value } => {
                            dst.put_u8(opcode::BATCH_PUT);
                            put_sized(dst, key);
                            put_sized(dst, value);
                        }
                        BatchOp::Delete { key } => {
                            dst.put_u8(opcode::BATCH_DELETE);
                            put_sized(dst, key);
                        }
                        BatchOp::PutExpiring { key, value, expiry } => {
                            dst.put_u8(opcode::BATCH_PUT_EXPIRING);
                            put_sized(dst, key);
                            put_sized(dst, value);
                            expiry.encode(dst);
                        }
                    }
                }
            }
        }
        finish_frame(dst, at)
    }

    /// Decodes a request frame, enforcing `limits` on every length.
    pub fn decode(frame: Frame, limits: &Limits) -> Result<Request, Error> {
        let name = opcode::name(frame.opcode);
        let mut r = Reader::new(frame.payload, name);
        let request = match frame.opcode {
            opcode::HELLO => {
                let version = r.u16("version")?;
                let method = r.u8("auth method")?;
                let credential = r.sized("credential", MAX_HELLO_FIELD, hello_field_too_large)?;
                let auth = match method {
                    AUTH_NONE => Auth::None,
                    AUTH_TOKEN => Auth::Token(credential),
                    other => {
                        return Err(Error::InvalidField {
                            opcode: r.opcode(),
                            field: "auth method",
                            value: u64::from(other),
                        })
                    }
                };
                let client_name = r.string("client name", MAX_HELLO_FIELD)?;
                // Later versions may append fields: ignore them.
                return Ok(Request::Hello(Hello {
                    version,
                    auth,
                    client_name,
                }));
            }
            opcode::PING => Request::Ping,
            opcode::COMPACT => Request::Compact,
            opcode::STATS => Request::Stats,
            opcode::CLUSTER_STATUS => Request::ClusterStatus,
            opcode::PROMOTE => Request::Promote,
            opcode::REPLICATE => Request::Replicate {
                master: r.string("master", MAX_NAME_BYTES)?,
            },
            opcode::SWITCHOVER => {
                let to = r.string("to", MAX_NAME_BYTES)?;
                Request::Switchover {
                    to: (!to.is_empty()).then_some(to),
                }
            }
            opcode::REPL_SYNC => Request::ReplSync(SyncRequest::decode_body(&mut r)?),
            opcode::BACKUP => Request::Backup,
            opcode::GET => Request::Get {
                key: r.sized("key", limits.max_key_bytes, key_too_large)?,
            },
            opcode::DELETE => Request::Delete {
                key: r.sized("key", limits.max_key_bytes, key_too_large)?,
            },
            opcode::EXISTS => Request::Exists {
                key: r.sized("key", limits.max_key_bytes, key_too_large)?,
            },
            opcode::PUT => Request::Put {
                key: r.sized("key", limits.max_key_bytes, key_too_large)?,
                value: r.sized("value", limits.max_value_bytes, value_too_large)?,
            },
            opcode::BATCH => Request::Batch(decode_batch(&mut r, limits)?),
            opcode::PUT_EXPIRING => Request::PutExpiring {
                key: r.sized("key", limits.max_key_bytes, key_too_large)?,
                value: r.sized("value", limits.max_value_bytes, value_too_large)?,
                expiry: Expiry::decode(&mut r)?,
            },
            opcode::EXPIRE => Request::Expire {
                key: r.sized("key", limits.max_key_bytes, key_too_large)?,
                expiry: Expiry::decode(&mut r)?,
                only_if: ExpireCondition::decode(&mut r)?,
            },
            opcode::PERSIST => Request::Persist {
                key: r.sized("key", limits.max_key_bytes, key_too_large)?,
            },
            opcode::TTL => Request::Ttl {
                key: r.sized("key", limits.max_key_bytes, key_too_large)?,
            },
            other => return Err(Error::UnknownOpcode { opcode: other }),
        };
        r.finish()?;
        Ok(request)
    }
}

fn decode_batch(r: &mut Reader, limits: &Limits) -> Result<Vec<BatchOp>, Error> {
    let count = r.u32("operation count")?;
    if count > limits.max_batch_ops {
        return Err(Error::BatchTooLarge {
            ops: u64::from(count),
            max: limits.max_batch_ops,
        });
    }
    let count = usize::try_from(count).map_err(|_| Error::BatchTooLarge {
        ops: u64::from(count),
        max: limits.max_batch_ops,
    })?;
    // Never reserve more than the remaining bytes could encode.
    let mut ops = Vec::with_capacity(count.min(r.remaining() / MIN_BATCH_OP_LEN));
    for _ in 0..count {
        let op = match r.u8("operation kind")? {
            opcode::BATCH_PUT => BatchOp::Put {
                key: r.sized("key", limits.max_key_bytes, key_too_large)?,
                value: r.sized("value", limits.max_value_bytes, value_too_large)?,
            },
            opcode::BATCH_DELETE => BatchOp::Delete {
                key: r.sized("key", limits.max_key_bytes, key_too_large)?,
            },
            opcode::BATCH_PUT_EXPIRING => BatchOp::PutExpiring {
                key: r.sized("key", limits.max_key_bytes, key_too_large)?,
                value: r.sized("value", limits.max_value_bytes, value_too_large)?,
                expiry: Expiry::decode(r)?,
            },
            other => {
                return Err(Error::InvalidField {
                    opcode: r.opcode(),
                    field: "operation kind",
                    value: u64::from(other),
                })
            }
        };
        ops.push(op);
    }
    Ok(ops)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn roundtrip(request: Request) {
        let mut buf = BytesMut::new();
        request.encode(&mut buf).unwrap();
        let frame = Frame::parse(&mut buf, u32::MAX).unwrap().unwrap();
        assert!(buf.is_empty());
        assert_eq!(Request::decode(frame, &Limits::default()).unwrap(), request);
    }

    #[test]
    fn every_request_roundtrips() {
        let key = Bytes::from_static(b"key");
        let value = Bytes::from_static(b"value");
        roundtrip(Request::Hello(Hello {
            version: 1,
            auth: Auth::Token(Bytes::from_static(b"secret")),
            client_name: "cli".into(),
        }));
        roundtrip(Request::Hello(Hello {
            version: 1,
            auth: Auth::None,
            client_name: String::new(),
        }));
        roundtrip(Request::Ping);
        roundtrip(Request::Get { key: key.clone() });
        roundtrip(Request::Put {
            key: key.clone(),
            value: value.clone(),
        });
        roundtrip(Request::Delete { key: key.clone() });
        roundtrip(Request::Exists { key: key.clone() });
        roundtrip(Request::Batch(vec![
            BatchOp::Put {
                key: key.clone(),
                value: value.clone(),
            },
            BatchOp::Delete { key: key.clone() },
            BatchOp::PutExpiring {
                key: key.clone(),
                value: value.clone(),
                expiry: Expiry::At(1_700_000_000_000),
            },
        ]));
        roundtrip(Request::PutExpiring {
            key: key.clone(),
            value,
            expiry: Expiry::In(60_000),
        });
        roundtrip(Request::Expire {
            key: key.clone(),
            expiry: Expiry::In(0),
            only_if: ExpireCondition {
                has_expiry: true,
                later: true,
                ..ExpireCondition::default()
            },
        });
        roundtrip(Request::Persist { key: key.clone() });
        roundtrip(Request::Ttl { key });
        roundtrip(Request::Batch(vec![]));
        roundtrip(Request::Compact);
        roundtrip(Request::Stats);
        roundtrip(Request::Switchover { to: None });
        roundtrip(Request::Switchover {
            to: Some("n2".into()),
        });
        roundtrip(Request::ClusterStatus);
    }

    fn decode_bytes(opcode: u8, payload: &[u8], limits: &Limits) -> Result<Request, Error> {
        Request::decode(
            Frame {
                opcode,
                payload: Bytes::copy_from_slice(payload),
            },
            limits,
        )
    }

    #[test]
    fn key_over_limit_is_refused_before_reading_it() {
        let limits = Limits {
            max_key_bytes: 4,
            ..Limits::default()
        };
        let err = decode_bytes(opcode::GET, &[5, 0, 0, 0], &limits).unwrap_err();
        assert_eq!(err, Error::KeyTooLarge { len: 5, max: 4 });
    }

    #[test]
    fn batch_count_is_bounded_before_allocation() {
        let err = decode_bytes(opcode::BATCH, &[0xFF; 4], &Limits::default()).unwrap_err();
        assert!(matches!(err, Error::BatchTooLarge { .. }));
        // A count within the limit but with no bytes behind it is truncated,
        // not a huge allocation.
        let err = decode_bytes(opcode::BATCH, &[0x10, 0x27, 0, 0], &Limits::default());
        assert!(matches!(err, Err(Error::Truncated { .. })));
    }

    #[test]
    fn trailing_bytes_and_unknown_opcodes_are_errors() {
        let err = decode_bytes(opcode::PING, &[1], &Limits::default()).unwrap_err();
        assert!(matches!(err, Error::TrailingBytes { .. }));
        let err = decode_bytes(0x3F, &[], &Limits::default()).unwrap_err();
        assert_eq!(err, Error::UnknownOpcode { opcode: 0x3F });
    }

    #[test]
    fn hello_tolerates_later_fields() {
        let mut payload = vec![1, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0];
        payload.extend_from_slice(b"future");
        let request = decode_bytes(opcode::HELLO, &payload, &Limits::default()).unwrap();
        assert!(matches!(request, Request::Hello(_)));
    }
}

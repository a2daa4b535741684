//! Responses: what the server answers, one per request, in request order.
//!
//! "Not found" is an answer ([`Response::NotFound`]), not an error. Errors
//! carry an [`ErrorCode`] and a human-readable message.

use bytes::{BufMut, Bytes, BytesMut};

use super::error::{Error, ErrorCode};
use super::expiry::KeyTtl;
use super::frame::Frame;
use super::limits::Limits;
use super::opcode;
use super::wire::{finish_frame, put_sized, start_frame, Reader};

/// Longest error message or server name accepted.
pub const MAX_MESSAGE_BYTES: u32 = 64 * 1024;
/// Longest STATS (and CLUSTER_STATUS) document accepted.
pub const MAX_STATS_BYTES: u32 = 16 * 1024 * 1024;

/// The node's role, as announced in HELLO_OK.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Role {
    Master,
    Replica,
    /// A role byte this build does not know (sent by a newer server).
    Other(u8),
}

impl Role {
    fn to_byte(self) -> u8 {
        match self {
            Role::Master => 0,
            Role::Replica => 1,
            Role::Other(b) => b,
        }
    }

    fn from_byte(b: u8) -> Role {
        match b {
            0 => Role::Master,
            1 => Role::Replica,
            other => Role::Other(other),
        }
    }
}

/// The server's half of the handshake.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HelloOk {
    /// The protocol version both sides now speak.
    pub version: u16,
    pub role: Role,
    /// The limits this server enforces, so a client can check before sending.
    pub limits: Limits,
    /// Server software and version, e.g. `kvstore 0.1.0`.
    pub server: String,
}

/// What COMPACT reports.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct CompactionSummary {
    pub horizon: u64,
    pub bytes_before: u64,
    pub bytes_after: u64,
    pub keys_kept: u64,
}

/// SWITCHOVER's answer: the master after the switchover.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NewMaster {
    /// Its node id in the coordinator.
    pub node_id: String,
    /// Where it takes clients.
    pub addr: String,
    /// The epoch the coordinator issued it.
    pub epoch: u32,
}

/// A response from the server.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Response {
    /// PUT and BATCH succeeded (durable under the server's policy).
    Ok,
    HelloOk(HelloOk),
    Pong,
    /// GET found the key.
    Value(Bytes),
    /// GET did not find the key.
    NotFound,
    /// DELETE done; `existed` tells whether the key was present.
    Deleted {
        existed: bool,
    },
    /// EXISTS answer.
    Exists(bool),
    Compacted(CompactionSummary),
    /// STATS answer: a UTF-8 JSON object.
    Stats(String),
    /// A write reached a replica: `master` is where to send it. Clients
    /// follow it transparently.
    Redirect {
        master: String,
    },
    /// EXPIRE and PERSIST: whether the key's expiry changed (Redis's 1 or
    /// 0). Protocol version 2.
    Applied(bool),
    /// TTL's answer. Protocol version 2.
    Ttl(KeyTtl),
    /// SWITCHOVER's answer: the new master.
    Switchover(NewMaster),
    /// CLUSTER_STATUS answer: a UTF-8 JSON object
    /// ([`super::cluster::ClusterStatus`]).
    ClusterStatus(String),
    Error {
        code: ErrorCode,
        message: String,
    },
}

impl Response {
    /// The opcode this response is sent with.
    pub fn opcode(&self) -> u8 {
        match self {
            Response::Ok => opcode::OK,
            Response::HelloOk(_) => opcode::HELLO_OK,
            Response::Pong => opcode::PONG,
            Response::Value(_) => opcode::VALUE,
            Response::NotFound => opcode::NOT_FOUND,
            Response::Deleted { .. } => opcode::DELETED,
            Response::Exists(_) => opcode::EXISTS_ANSWER,
            Response::Compacted(_) => opcode::COMPACTED,
            Response::Stats(_) => opcode::STATS_ANSWER,
            Response::Redirect { .. } => opcode::REDIRECT,
            Response::Applied(_) => opcode::APPLIED,
            Response::Ttl(_) => opcode::TTL_ANSWER,
            Response::Switchover(_) => opcode::SWITCHOVER_ANSWER,
            Response::ClusterStatus(_) => opcode::CLUSTER_STATUS_ANSWER,
            Response::Error { .. } => opcode::ERROR,
        }
    }

    /// Builds an error response.
    pub fn error(code: ErrorCode, message: impl Into<String>) -> Response {
        Response::Error {
            code,
            message: message.into(),
        }
    }

    /// Appends this response as one frame to `dst`.
    pub fn encode(&self, dst: &mut BytesMut) -> Result<(), Error> {
        let at = start_frame(dst, self.opcode());
        match self {
            Response::Ok | Response::Pong | Response::NotFound => {}
            Response::HelloOk(hello) => {
                dst.put_u16_le(hello.version);
                dst.put_u8(hello.role.to_byte());
                dst.put_u32_le(hello.limits.max_frame_bytes);
                dst.put_u32_le(hello.limits.max_key_bytes);
                dst.put_u32_le(hello.limits.max_value_bytes);
                dst.put_u32_le(hello.limits.max_batch_ops);
                put_sized(dst, hello.server.as_bytes());
            }
            Response::Value(value) => put_sized(dst, value),
            Response::Deleted { existed: flag }
            | Response::Exists(flag)
            | Response::Applied(flag) => {
                dst.put_u8(u8::from(*flag));
            }
            Response::Compacted(c) => {
                dst.put_u64_le(c.horizon);
                dst.put_u64_le(c.bytes_before);
                dst.put_u64_le(c.bytes_after);
                dst.put_u64_le(c.keys_kept);
            }
            Response::Stats(json) => put_sized(dst, json.as_bytes()),
            Response::Ttl(ttl) => ttl.encode(dst),
            Response::Switchover(new) => {
                put_sized(dst, truncate_utf8(&new.node_id, MAX_MESSAGE_BYTES));
                put_sized(dst, truncate_utf8(&new.addr, MAX_MESSAGE_BYTES));
                dst.put_u32_le(new.epoch);
            }
            Response::ClusterStatus(json) => put_sized(dst, json.as_bytes()),
            Response::Redirect { master } => {
                put_sized(dst, truncate_utf8(master, MAX_MESSAGE_BYTES))
            }
            Response::Error { code, message } => {
                dst.put_u16_le(code.0);
                put_sized(dst, truncate_utf8(message, MAX_MESSAGE_BYTES));
            }
        }
        finish_frame(dst, at)
    }

    /// Decodes a response frame; `limits` bounds a VALUE's length.
    pub fn decode(frame: Frame, limits: &Limits) -> Result<Response, Error> {
        let name = opcode::name(frame.opcode);
        let mut r = Reader::new(frame.payload, name);
        let response = match frame.opcode {
            opcode::OK => Response::Ok,
            opcode::PONG => Response::Pong,
            opcode::NOT_FOUND => Response::NotFound,
            opcode::HELLO_OK => {
                let version = r.u16("version")?;
                let role = Role::from_byte(r.u8("role")?);
                let limits = Limits {
                    max_frame_bytes: r.u32("max frame bytes")?,
                    max_key_bytes: r.u32("max key bytes")?,
                    max_value_bytes: r.u32("max value bytes")?,
                    max_batch_ops: r.u32("max batch ops")?,
                };
                let server = r.string("server", MAX_MESSAGE_BYTES)?;
                // Later versions may append fields: ignore them.
                return Ok(Response::HelloOk(HelloOk {
                    version,
                    role,
                    limits,
                    server,
                }));
            }
            opcode::VALUE => {
                Response::Value(r.sized("value", limits.max_value_bytes, |len, max| {
                    Error::ValueTooLarge { len, max }
                })?)
            }
            opcode::DELETED => Response::Deleted {
                existed: r.bool("existed")?,
            },
            opcode::EXISTS_ANSWER => Response::Exists(r.bool("exists")?),
            opcode::APPLIED => Response::Applied(r.bool("applied")?),
            opcode::TTL_ANSWER => Response::Ttl(KeyTtl::decode(&mut r)?),
            opcode::COMPACTED => Response::Compacted(CompactionSummary {
                horizon: r.u64("horizon")?,
                bytes_before: r.u64("bytes before")?,
                bytes_after: r.u64("bytes after")?,
                keys_kept: r.u64("keys kept")?,
            }),
            opcode::STATS_ANSWER => Response::Stats(r.string("stats", MAX_STATS_BYTES)?),
            opcode::SWITCHOVER_ANSWER => Response::Switchover(NewMaster {
                node_id: r.string("node id", MAX_MESSAGE_BYTES)?,
                addr: r.string("address", MAX_MESSAGE_BYTES)?,
                epoch: r.u32("epoch")?,
            }),
            opcode::CLUSTER_STATUS_ANSWER => {
                Response::ClusterStatus(r.string("cluster status", MAX_STATS_BYTES)?)
            }
            opcode::REDIRECT => Response::Redirect {
                master: r.string("master", MAX_MESSAGE_BYTES)?,
            },
            opcode::ERROR => Response::Error {
                code: ErrorCode(r.u16("code")?),
                message: r.string("message", MAX_MESSAGE_BYTES)?,
            },
            other => return Err(Error::UnknownOpcode { opcode: other }),
        };
        r.finish()?;
        Ok(response)
    }
}

/// Cuts `s` to at most `max` bytes on a character boundary, so an error
/// message can never make a frame exceed what a peer accepts.
fn truncate_utf8(s: &str, max: u32) -> &[u8] {
    let max = usize::try_from(max).unwrap_or(usize::MAX);
    if s.len() <= max {
        return s.as_bytes();
    }
    let mut end = max;
    while !s.is_char_boundary(end) {
        end -= 1;
    }
    &s.as_bytes()[..end]
}

#[cfg(test)]
mod tests {
    use super::*;

    fn roundtrip(response: Response) {
        let mut buf = BytesMut::new();
        response.encode(&mut buf).unwrap();
        let frame = Frame::parse(&mut buf, u32::MAX).unwrap().unwrap();
        assert!(buf.is_empty());
        assert_eq!(
            Response::decode(frame, &Limits::default()).unwrap(),
            response
        );
    }

    #[test]
    fn every_response_roundtrips() {
        roundtrip(Response::Ok);
        roundtrip(Response::Pong);
        roundtrip(Response::NotFound);
        roundtrip(Response::HelloOk(HelloOk {
            version: 1,
            role: Role::Replica,
            limits: Limits::default(),
            server: "kvstore 0.1.0".into(),
        }));
        roundtrip(Response::Value(Bytes::from_static(b"v")));
        roundtrip(Response::Value(Bytes::new()));
        roundtrip(Response::Deleted { existed: true });
        roundtrip(Response::Exists(false));
        roundtrip(Response::Applied(true));
        roundtrip(Response::Ttl(KeyTtl::Absent));
        roundtrip(Response::Ttl(KeyTtl::Never));
        roundtrip(Response::Ttl(KeyTtl::Expires {
            at: 1_700_000_060_000,
            left_ms: 59_999,
        }));
        roundtrip(Response::Compacted(CompactionSummary {
            horizon: 1,
            bytes_before: 2,
            bytes_after: 3,
            keys_kept: 4,
        }));
        roundtrip(Response::Stats("{\"keys\":1}".into()));
        roundtrip(Response::ClusterStatus("{\"coordinator\":\"none\"}".into()));
        roundtrip(Response::Redirect {
            master: "kvstore-0.kvstore-headless:5555".into(),
        });
        roundtrip(Response::Switchover(NewMaster {
            node_id: "n2".into(),
            addr: "10.0.0.2:5555".into(),
            epoch: 7,
        }));
        roundtrip(Response::error(ErrorCode::KEY_TOO_LARGE, "too big"));
        roundtrip(Response::error(ErrorCode(999), "from the future"));
    }

    #[test]
    fn long_messages_are_cut_on_a_char_boundary() {
        let long = "é".repeat(40_000);
        let cut = truncate_utf8(&long, MAX_MESSAGE_BYTES);
        assert!(cut.len() <= 65536);
        assert!(std::str::from_utf8(cut).is_ok());
    }

    #[test]
    fn a_ttl_answer_without_expiry_carries_no_time() {
        let frame = Frame {
            opcode: opcode::TTL_ANSWER,
            payload: Bytes::from_static(&[1, 5, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0]),
        };
        let err = Response::decode(frame, &Limits::default()).unwrap_err();
        assert_eq!(err.code(), ErrorCode::MALFORMED_FRAME);
        let frame = Frame {
            opcode: opcode::TTL_ANSWER,
            payload: Bytes::from_static(&[3; 17]),
        };
        assert!(Response::decode(frame, &Limits::default()).is_err());
    }

    #[test]
    fn bad_bool_is_malformed() {
        let frame = Frame {
            opcode: opcode::EXISTS_ANSWER,
            payload: Bytes::from_static(&[2]),
        };
        let err = Response::decode(frame, &Limits::default()).unwrap_err();
        assert_eq!(err.code(), ErrorCode::MALFORMED_FRAME);
    }
}

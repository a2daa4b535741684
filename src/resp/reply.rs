//! RESP2 answers and their encoding.
//!
//! Invariant: a simple string or error never contains CR or LF (they are
//! replaced by spaces when encoded), so one answer is always one frame.

use bytes::{BufMut, BytesMut};

use crate::protocol::{ErrorCode, Response};

/// One answer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Reply {
    /// `+OK`-style status.
    Status(&'static str),
    /// `-PREFIX message`: the whole text, prefix included (`ERR ...`).
    Error(String),
    Int(i64),
    Bulk(Vec<u8>),
    /// `$-1`: no value.
    Nil,
    Array(Vec<Reply>),
}

impl Reply {
    /// `-ERR <message>`.
    pub fn err(message: impl std::fmt::Display) -> Reply {
        Reply::Error(format!("ERR {message}"))
    }

    pub fn ok() -> Reply {
        Reply::Status("OK")
    }

    pub fn bulk(bytes: impl Into<Vec<u8>>) -> Reply {
        Reply::Bulk(bytes.into())
    }

    pub fn is_error(&self) -> bool {
        matches!(self, Reply::Error(_))
    }

    /// The bytes [`Reply::encode`] appends (an integer is counted at its
    /// widest).
    pub fn encoded_len(&self) -> usize {
        // `<kind><up to 20 digits>\r\n`
        const HEADER: usize = 23;
        match self {
            Reply::Status(s) => s.len() + 3,
            Reply::Error(e) => e.len() + 3,
            Reply::Int(_) => HEADER,
            Reply::Bulk(b) => HEADER + b.len() + 2,
            Reply::Nil => 5,
            Reply::Array(items) => items
                .iter()
                .fold(HEADER, |sum, item| sum.saturating_add(item.encoded_len())),
        }
    }

    /// Appends the RESP2 encoding to `out`.
    pub fn encode(&self, out: &mut BytesMut) {
        match self {
            Reply::Status(s) => line(out, b'+', s.as_bytes()),
            Reply::Error(e) => line(out, b'-', e.as_bytes()),
            Reply::Int(n) => header(out, b':', *n),
            Reply::Bulk(b) => {
                header(out, b'$', len_i64(b.len()));
                out.extend_from_slice(b);
                out.extend_from_slice(b"\r\n");
            }
            Reply::Nil => out.extend_from_slice(b"$-1\r\n"),
            Reply::Array(items) => {
                header(out, b'*', len_i64(items.len()));
                for item in items {
                    item.encode(out);
                }
            }
        }
    }
}

fn len_i64(n: usize) -> i64 {
    i64::try_from(n).unwrap_or(i64::MAX)
}

/// `<kind><text>\r\n` with CR and LF in `text` turned into spaces.
fn line(out: &mut BytesMut, kind: u8, text: &[u8]) {
    out.reserve(text.len() + 3);
    out.put_u8(kind);
    for &b in text {
        out.put_u8(if b == b'\r' || b == b'\n' { b' ' } else { b });
    }
    out.extend_from_slice(b"\r\n");
}

/// `<kind><n>\r\n` without going through `fmt`.
fn header(out: &mut BytesMut, kind: u8, n: i64) {
    let mut digits = [0u8; 20];
    let mut i = digits.len();
    let mut v = n.unsigned_abs();
    loop {
        i -= 1;
        digits[i] = b'0' + (v % 10) as u8;
        v /= 10;
        if v == 0 {
            break;
        }
    }
    out.reserve(24);
    out.put_u8(kind);
    if n < 0 {
        out.put_u8(b'-');
    }
    out.extend_from_slice(&digits[i..]);
    out.extend_from_slice(b"\r\n");
}

/// A binary-protocol answer as a RESP error.
pub fn from_response(response: Response) -> Reply {
    match response {
        Response::Redirect { master } => Reply::Error(format!(
            "READONLY You can't write against a read only replica. master is {master}"
        )),
        Response::Error { code, message } if code == ErrorCode::READ_ONLY => {
            Reply::Error(format!("READONLY {message}"))
        }
        Response::Error { code, message } if code == ErrorCode::NOT_ENOUGH_REPLICAS => {
            Reply::Error(format!("NOREPLICAS {message}"))
        }
        Response::Error { message, .. } => Reply::err(message),
        other => Reply::err(format!("unexpected answer {other:?}")),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn enc(r: Reply) -> Vec<u8> {
        let mut out = BytesMut::new();
        r.encode(&mut out);
        out.to_vec()
    }

    #[test]
    fn encoded_len_bounds_the_encoding() {
        let reply = Reply::Array(vec![
            Reply::ok(),
            Reply::err("x"),
            Reply::Int(-12),
            Reply::bulk("hello"),
            Reply::Nil,
            Reply::Array(vec![Reply::Int(i64::MIN)]),
        ]);
        let len = enc(reply.clone()).len();
        assert!(
            reply.encoded_len() >= len,
            "{} < {len}",
            reply.encoded_len()
        );
        assert_eq!(Reply::bulk("hi").encoded_len(), 23 + 4);
    }

    #[test]
    fn encodings() {
        assert_eq!(enc(Reply::ok()), b"+OK\r\n");
        assert_eq!(enc(Reply::err("a\r\nb")), b"-ERR a  b\r\n");
        assert_eq!(enc(Reply::Int(-12)), b":-12\r\n");
        assert_eq!(enc(Reply::Int(i64::MIN)), b":-9223372036854775808\r\n");
        assert_eq!(enc(Reply::bulk("hi")), b"$2\r\nhi\r\n");
        assert_eq!(enc(Reply::Nil), b"$-1\r\n");
        assert_eq!(
            enc(Reply::Array(vec![Reply::Int(0), Reply::Nil])),
            b"*2\r\n:0\r\n$-1\r\n"
        );
    }
}

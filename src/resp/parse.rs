//! RESP request decoding: multibulk arrays of bulk strings (what every
//! client library sends) and inline commands (what a person types into
//! `telnet`).
//!
//! Invariants:
//! - every length is checked against [`Limits`] as soon as its header line
//!   is complete, before the bytes it announces are waited for, and nothing
//!   is allocated from an announced length (the argument vector grows as
//!   arguments actually arrive);
//! - a request is taken out of the buffer only once it is complete; an
//!   incomplete one leaves the buffer untouched (`Ok(None)`);
//! - header lines (`*N`, `$N`) longer than [`MAX_HEADER_LINE`] and inline
//!   lines longer than `max_inline` are errors, so the buffer of an
//!   incomplete request stays within `max_request` plus framing;
//! - nothing here panics on any input (fuzzed by `fuzz/resp_decode`).

use bytes::{Bytes, BytesMut};

/// Longest `*<n>\r\n` or `$<n>\r\n` line accepted, CRLF included.
pub const MAX_HEADER_LINE: usize = 32;

/// Bounds on one request.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Limits {
    /// Most arguments (command name included) in one request.
    pub max_args: usize,
    /// Largest single argument, in bytes.
    pub max_bulk: usize,
    /// Largest inline command line, in bytes.
    pub max_inline: usize,
    /// Largest sum of argument lengths in one request.
    pub max_request: usize,
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            // MSET of 10,000 pairs (the batch limit) plus its name.
            max_args: 20_001,
            max_bulk: 64 << 20,
            max_inline: 64 << 10,
            max_request: 65 << 20,
        }
    }
}

/// Why a request cannot be decoded. The connection answers
/// `-ERR <message>` and closes, as Redis does.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ParseError {
    #[error("Protocol error: invalid multibulk length")]
    ArrayLength,
    #[error("Protocol error: invalid bulk length")]
    BulkLength,
    #[error("Protocol error: expected '$', got '{0}'")]
    ExpectedBulk(char),
    #[error("Protocol error: too big mbulk count string")]
    HeaderTooLong,
    #[error("Protocol error: too big inline request")]
    InlineTooLong,
    #[error("Protocol error: more than {0} arguments in inline request")]
    TooManyInlineArgs(usize),
    #[error("Protocol error: unbalanced quotes in request")]
    UnbalancedQuotes,
    #[error("Protocol error: request larger than {0} bytes")]
    TooLarge(usize),
    #[error("Protocol error: bulk string not followed by CRLF")]
    MissingCrlf,
}

/// One decoded request: the command name and its arguments. Empty for a
/// blank inline line or `*0`, which the caller skips.
pub type Args = Vec<Bytes>;

/// Encodes `args` as a client sends them: a multibulk array of bulk
/// strings. For tests, the fuzz target and its seed corpus.
pub fn encode_request(args: &[&[u8]]) -> Vec<u8> {
    let mut out = format!("*{}\r\n", args.len()).into_bytes();
    for arg in args {
        out.extend_from_slice(format!("${}\r\n", arg.len()).as_bytes());
        out.extend_from_slice(arg);
        out.extend_from_slice(b"\r\n");
    }
    out
}

/// Takes one complete request off the front of `buf`. `Ok(None)`: more
/// bytes are needed and `buf` is unchanged.
pub fn parse(buf: &mut BytesMut, limits: &Limits) -> Result<Option<Args>, ParseError> {
    match buf.first() {
        None => Ok(None),
        Some(b'*') => parse_multibulk(buf, limits),
        Some(_) => parse_inline(buf, limits),
    }
}

/// Finds the CRLF-terminated line starting at `start`; returns the end of
/// its content (index of `\r`). `Ok(None)` while incomplete.
fn header_line(buf: &[u8], start: usize) -> Result<Option<usize>, ParseError> {
    let window = buf.get(start..).unwrap_or(&[]);
    let window = window.get(..MAX_HEADER_LINE).unwrap_or(window);
    match window.windows(2).position(|w| w == b"\r\n") {
        Some(i) => Ok(Some(start + i)),
        None if window.len() >= MAX_HEADER_LINE => Err(ParseError::HeaderTooLong),
        None => Ok(None),
    }
}

/// A decimal integer as Redis writes them: optional `-`, digits, no
/// overflow.
fn parse_int(digits: &[u8]) -> Option<i64> {
    let (negative, digits) = match digits.split_first() {
        Some((b'-', rest)) => (true, rest),
        _ => (false, digits),
    };
    if digits.is_empty() {
        return None;
    }
    let mut n: i64 = 0;
    for &d in digits {
        if !d.is_ascii_digit() {
            return None;
        }
        n = n.checked_mul(10)?.checked_add(i64::from(d - b'0'))?;
    }
    Some(if negative { -n } else { n })
}

fn parse_multibulk(buf: &mut BytesMut, limits: &Limits) -> Result<Option<Args>, ParseError> {
    let Some(end) = header_line(buf, 0)? else {
        return Ok(None);
    };
    let count = buf
        .get(1..end)
        .and_then(parse_int)
        .ok_or(ParseError::ArrayLength)?;
    let mut pos = end + 2;
    if count <= 0 {
        // `*0` and `*-1` are no request at all; Redis skips them.
        let _ = buf.split_to(pos);
        return Ok(Some(Vec::new()));
    }
    let count = usize::try_from(count).map_err(|_| ParseError::ArrayLength)?;
    if count > limits.max_args {
        return Err(ParseError::ArrayLength);
    }
    // First pass: is the request complete and within the limits? Nothing
    // is kept but where it ends.
    let first = pos;
    let mut total: usize = 0;
    // The sum of the lengths is checked as each header arrives, before
    // its bytes are waited for.
    let mut within = |len: usize| {
        total = total.saturating_add(len);
        if total > limits.max_request {
            return Err(ParseError::TooLarge(limits.max_request));
        }
        Ok(())
    };
    for _ in 0..count {
        let Some(bulk) = bulk_at(buf, pos, limits, &mut within)? else {
            return Ok(None);
        };
        pos = bulk.next;
    }
    // Second pass, over the same checked bytes: the arguments, as views
    // of the request.
    let request = buf.split_to(pos).freeze();
    let mut args = Vec::with_capacity(count);
    let mut pos = first;
    while let Some(bulk) = bulk_at(&request, pos, limits, |_| Ok(()))? {
        args.push(request.slice(bulk.start..bulk.start + bulk.len));
        pos = bulk.next;
    }
    Ok(Some(args))
}

/// One bulk string of a multibulk request.
struct Bulk {
    /// Where its bytes start.
    start: usize,
    len: usize,
    /// Where the next header starts.
    next: usize,
}

/// The bulk string whose `$` header is at `pos`, its length passed to
/// `check` as soon as the header is read. `Ok(None)` while incomplete
/// (and at the end of `buf`).
fn bulk_at(
    buf: &[u8],
    pos: usize,
    limits: &Limits,
    check: impl FnOnce(usize) -> Result<(), ParseError>,
) -> Result<Option<Bulk>, ParseError> {
    match buf.get(pos) {
        None => return Ok(None),
        Some(b'$') => {}
        Some(&other) => return Err(ParseError::ExpectedBulk(char::from(other))),
    }
    let Some(end) = header_line(buf, pos)? else {
        return Ok(None);
    };
    let len = buf
        .get(pos + 1..end)
        .and_then(parse_int)
        .and_then(|n| usize::try_from(n).ok())
        .ok_or(ParseError::BulkLength)?;
    if len > limits.max_bulk {
        return Err(ParseError::BulkLength);
    }
    check(len)?;
    let start = end + 2;
    let data_end = start.saturating_add(len);
    match buf.get(data_end..data_end.saturating_add(2)) {
        None => Ok(None),
        Some(b"\r\n") => Ok(Some(Bulk {
            start,
            len,
            next: data_end + 2,
        })),
        // Bytes are there but not CRLF; "\r" alone may still be completed
        // by the next read only if one byte is missing.
        Some(_) => Err(ParseError::MissingCrlf),
    }
}

fn parse_inline(buf: &mut BytesMut, limits: &Limits) -> Result<Option<Args>, ParseError> {
    let window = buf.get(..limits.max_inline).unwrap_or(buf);
    let Some(newline) = window.iter().position(|&b| b == b'\n') else {
        if buf.len() >= limits.max_inline {
            return Err(ParseError::InlineTooLong);
        }
        return Ok(None);
    };
    let line = buf.split_to(newline + 1);
    let line = line.get(..newline).unwrap_or(&[]);
    let line = line.strip_suffix(b"\r").unwrap_or(line);
    let args = split_args(line)?;
    if args.len() > limits.max_args {
        return Err(ParseError::TooManyInlineArgs(limits.max_args));
    }
    Ok(Some(args))
}

/// Splits an inline line into words, with Redis's quoting: `"..."` takes
/// `\n \r \t \b \a \\ \" \xHH` escapes, `'...'` only `\'`.
pub fn split_args(line: &[u8]) -> Result<Args, ParseError> {
    let mut args = Vec::new();
    let mut i = 0;
    loop {
        while line.get(i).is_some_and(u8::is_ascii_whitespace) {
            i += 1;
        }
        let Some(&first) = line.get(i) else {
            return Ok(args);
        };
        let mut word = Vec::new();
        match first {
            b'"' => {
                i += 1;
                loop {
                    match line.get(i) {
                        None => return Err(ParseError::UnbalancedQuotes),
                        Some(b'"') => {
                            i += 1;
                            break;
                        }
                        Some(b'\\') => {
                            let hex = line.get(i + 2..i + 4).and_then(hex_byte);
                            match (line.get(i + 1), hex) {
                                (Some(b'x'), Some(byte)) => {
                                    word.push(byte);
                                    i += 4;
                                    continue;
                                }
                                (Some(&c), _) => word.push(match c {
                                    b'n' => b'\n',
                                    b'r' => b'\r',
                                    b't' => b'\t',
                                    b'b' => 8,
                                    b'a' => 7,
                                    other => other,
                                }),
                                (None, _) => return Err(ParseError::UnbalancedQuotes),
                            }
                            i += 2;
                        }
                        Some(&c) => {
                            word.push(c);
                            i += 1;
                        }
                    }
                }
                closing_quote_ends_word(line, i)?;
            }
            b'\'' => {
                i += 1;
                loop {
                    match (line.get(i), line.get(i + 1)) {
                        (None, _) => return Err(ParseError::UnbalancedQuotes),
                        (Some(b'\\'), Some(b'\'')) => {
                            word.push(b'\'');
                            i += 2;
                        }
                        (Some(b'\''), _) => {
                            i += 1;
                            break;
                        }
                        (Some(&c), _) => {
                            word.push(c);
                            i += 1;
                        }
                    }
                }
                closing_quote_ends_word(line, i)?;
            }
            _ => {
                while let Some(&c) = line.get(i) {
                    if c.is_ascii_whitespace() {
                        break;
                    }
                    word.push(c);
                    i += 1;
                }
            }
        }
        args.push(Bytes::from(word));
    }
}

/// A closing quote must be followed by a space or the end of the line.
fn closing_quote_ends_word(line: &[u8], i: usize) -> Result<(), ParseError> {
    match line.get(i) {
        Some(c) if !c.is_ascii_whitespace() => Err(ParseError::UnbalancedQuotes),
        _ => Ok(()),
    }
}

fn hex_byte(two: &[u8]) -> Option<u8> {
    let s = std::str::from_utf8(two).ok()?;
    u8::from_str_radix(s, 16).ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn one(input: &[u8]) -> Result<Option<Args>, ParseError> {
        let mut buf = BytesMut::from(input);
        parse(&mut buf, &Limits::default())
    }

    #[test]
    fn multibulk_and_inline() {
        let args = one(b"*2\r\n$3\r\nGET\r\n$1\r\nk\r\n").unwrap().unwrap();
        assert_eq!(args, vec![Bytes::from("GET"), Bytes::from("k")]);
        let args = one(b"set k \"a\\x00b\" 'c d'\r\n").unwrap().unwrap();
        assert_eq!(args.len(), 4);
        assert_eq!(&args[2][..], b"a\x00b");
        assert_eq!(&args[3][..], b"c d");
    }

    #[test]
    fn incomplete_leaves_the_buffer_alone() {
        let full = b"*2\r\n$3\r\nGET\r\n$1\r\nk\r\n";
        for cut in 1..full.len() {
            let mut buf = BytesMut::from(&full[..cut]);
            assert_eq!(parse(&mut buf, &Limits::default()), Ok(None), "cut {cut}");
            assert_eq!(buf.len(), cut);
        }
    }

    #[test]
    fn limits_are_checked_before_the_data_arrives() {
        let limits = Limits {
            max_args: 3,
            max_bulk: 10,
            max_inline: 16,
            max_request: 15,
        };
        let run = |b: &[u8]| parse(&mut BytesMut::from(b), &limits);
        assert_eq!(run(b"*4\r\n"), Err(ParseError::ArrayLength));
        assert_eq!(run(b"*1\r\n$11\r\n"), Err(ParseError::BulkLength));
        assert_eq!(
            run(b"*2\r\n$10\r\n0123456789\r\n$6\r\n"),
            Err(ParseError::TooLarge(15))
        );
        assert_eq!(
            run(b"*99999999999999999999999\r\n"),
            Err(ParseError::ArrayLength)
        );
        let long = format!("*{}\r\n", "9".repeat(40));
        assert_eq!(run(long.as_bytes()), Err(ParseError::HeaderTooLong));
        assert_eq!(run(b"*1\r\n$-1\r\n"), Err(ParseError::BulkLength));
        assert_eq!(run(&[b'a'; 16]), Err(ParseError::InlineTooLong));
        assert_eq!(run(b"*1\r\n$1\r\nab\r\n"), Err(ParseError::MissingCrlf));
        assert_eq!(run(b"*1\r\n:1\r\n"), Err(ParseError::ExpectedBulk(':')));
        assert_eq!(run(b"\"abc\r\n"), Err(ParseError::UnbalancedQuotes));
        // The argument limit holds for inline commands too: a short line
        // of one-letter words must not get past it.
        assert_eq!(run(b"a b c d\r\n"), Err(ParseError::TooManyInlineArgs(3)));
        assert_eq!(run(b"a b c\r\n").map(|a| a.map(|a| a.len())), Ok(Some(3)));
    }
}

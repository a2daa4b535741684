//! Feeds arbitrary bytes to `resp::parse::parse`, request after request
//! like a RESP connection does, under small limits so they are reached.
//!
//! Must hold: no panic; an incomplete request leaves the buffer untouched;
//! a decoded request consumed bytes and is within every limit (argument
//! count, argument size, total size); an inline line is never consumed
//! past `max_inline`; a decoded request re-encoded as multibulk decodes to
//! the same arguments.
#![no_main]

use bytes::BytesMut;
use kvstore::resp::parse::{encode_request, parse, Limits, MAX_HEADER_LINE};
use libfuzzer_sys::fuzz_target;

const LIMITS: Limits = Limits {
    max_args: 64,
    max_bulk: 4096,
    max_inline: 1024,
    max_request: 8192,
};

fuzz_target!(|data: &[u8]| {
    let mut buf = BytesMut::from(data);
    // Each round consumes at least one byte or stops.
    for _ in 0..=data.len() {
        let before = buf.clone();
        match parse(&mut buf, &LIMITS) {
            Ok(None) => {
                assert_eq!(
                    buf, before,
                    "an incomplete request must leave the buffer alone"
                );
                // What is buffered is bounded: one request's data plus its
                // framing, or one inline line.
                let framing = (LIMITS.max_args + 1) * (MAX_HEADER_LINE + 2);
                assert!(buf.len() <= (LIMITS.max_request + framing).max(LIMITS.max_inline));
                break;
            }
            Err(_) => break,
            Ok(Some(args)) => {
                let consumed = before.len() - buf.len();
                assert!(consumed > 0, "a decoded request consumes bytes");
                assert!(args.len() <= LIMITS.max_args);
                assert!(args
                    .iter()
                    .all(|a| a.len() <= LIMITS.max_bulk.max(LIMITS.max_inline)));
                if before.first() == Some(&b'*') {
                    let total: usize = args.iter().map(|a| a.len()).sum();
                    assert!(total <= LIMITS.max_request);
                } else {
                    assert!(consumed <= LIMITS.max_inline);
                }
                if !args.is_empty() && args.len() <= LIMITS.max_args {
                    let refs: Vec<&[u8]> = args.iter().map(|a| &a[..]).collect();
                    let mut again = BytesMut::from(&encode_request(&refs)[..]);
                    let total: usize = args.iter().map(|a| a.len()).sum();
                    if total <= LIMITS.max_request
                        && args.iter().all(|a| a.len() <= LIMITS.max_bulk)
                    {
                        let decoded = parse(&mut again, &LIMITS);
                        assert_eq!(decoded, Ok(Some(args)));
                        assert!(again.is_empty());
                    }
                }
            }
        }
        if buf.is_empty() {
            break;
        }
    }
});

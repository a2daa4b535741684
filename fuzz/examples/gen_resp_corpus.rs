//! Writes the seed corpus of the `resp_decode` target: requests as real
//! clients encode them (`resp::parse::encode_request`), pipelines, inline
//! commands, cut-short and over-limit ones. Each seed states what the
//! parser must make of it under the target's limits, and the program fails
//! if it does not.
//!
//! ```text
//! cargo run --manifest-path fuzz/Cargo.toml --example gen_resp_corpus
//! ```

use std::fs;
use std::path::Path;

use bytes::BytesMut;
use kvstore::resp::parse::{encode_request, parse, Limits, ParseError};

/// The target's limits (fuzz_targets/resp_decode.rs).
const LIMITS: Limits = Limits {
    max_args: 64,
    max_bulk: 4096,
    max_inline: 1024,
    max_request: 8192,
};

#[derive(Debug, Clone, Copy)]
enum Expect {
    Request,
    Incomplete,
    Error(fn(&ParseError) -> bool),
}

fn check(name: &str, bytes: &[u8], expect: Expect) {
    let got = parse(&mut BytesMut::from(bytes), &LIMITS);
    let ok = match (&got, expect) {
        (Ok(Some(_)), Expect::Request) | (Ok(None), Expect::Incomplete) => true,
        (Err(e), Expect::Error(f)) => f(e),
        _ => false,
    };
    assert!(ok, "seed {name}: expected {expect:?}, parser said {got:?}");
}

fn main() {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("corpus/resp_decode");
    fs::create_dir_all(&dir).expect("create corpus dir");
    let binary: Vec<u8> = (0..=255u8).collect();
    let big = vec![b'v'; LIMITS.max_bulk];
    let mut seeds: Vec<(&str, Vec<u8>, Expect)> = vec![
        ("ping", encode_request(&[b"PING"]), Expect::Request),
        ("get", encode_request(&[b"GET", b"key"]), Expect::Request),
        (
            "set",
            encode_request(&[b"SET", b"key", b"value"]),
            Expect::Request,
        ),
        (
            "set-nx",
            encode_request(&[b"SET", b"k", b"v", b"NX"]),
            Expect::Request,
        ),
        (
            "set-binary",
            encode_request(&[b"SET", b"bin", &binary]),
            Expect::Request,
        ),
        (
            "set-max-bulk",
            encode_request(&[b"SET", b"k", &big]),
            Expect::Request,
        ),
        (
            "mset",
            encode_request(&[b"MSET", b"a", b"1", b"b", b"2"]),
            Expect::Request,
        ),
        (
            "empty-arg",
            encode_request(&[b"ECHO", b""]),
            Expect::Request,
        ),
        ("array-zero", b"*0\r\n".to_vec(), Expect::Request),
        ("array-minus-one", b"*-1\r\n".to_vec(), Expect::Request),
        ("inline-ping", b"PING\r\n".to_vec(), Expect::Request),
        (
            "inline-quoted",
            b"SET k \"a\\x00b\\n\" 'c\\'d'\r\n".to_vec(),
            Expect::Request,
        ),
        ("inline-lf-only", b"GET k\n".to_vec(), Expect::Request),
        ("cut-header", b"*2\r".to_vec(), Expect::Incomplete),
        (
            "cut-bulk",
            encode_request(&[b"SET", b"key", b"value"])[..20].to_vec(),
            Expect::Incomplete,
        ),
        (
            "too-many-args",
            b"*65\r\n".to_vec(),
            Expect::Error(|e| *e == ParseError::ArrayLength),
        ),
        (
            "bulk-too-long",
            b"*1\r\n$4097\r\n".to_vec(),
            Expect::Error(|e| *e == ParseError::BulkLength),
        ),
        (
            "bulk-negative",
            b"*1\r\n$-1\r\n".to_vec(),
            Expect::Error(|e| *e == ParseError::BulkLength),
        ),
        (
            "header-too-long",
            format!("*{}\r\n", "9".repeat(40)).into_bytes(),
            Expect::Error(|e| *e == ParseError::HeaderTooLong),
        ),
        (
            "not-bulk",
            b"*1\r\n:1\r\n".to_vec(),
            Expect::Error(|e| matches!(e, ParseError::ExpectedBulk(_))),
        ),
        (
            "no-crlf-after-bulk",
            b"*1\r\n$1\r\nabc".to_vec(),
            Expect::Error(|e| *e == ParseError::MissingCrlf),
        ),
        (
            "inline-too-long",
            vec![b'a'; LIMITS.max_inline],
            Expect::Error(|e| *e == ParseError::InlineTooLong),
        ),
        (
            "unbalanced-quote",
            b"GET \"k\r\n".to_vec(),
            Expect::Error(|e| *e == ParseError::UnbalancedQuotes),
        ),
    ];
    let over: Vec<&[u8]> = std::iter::once(&b"MSET"[..])
        .chain(std::iter::repeat(&big[..]).take(3))
        .collect();
    seeds.push((
        "request-too-large",
        encode_request(&over),
        Expect::Error(|e| matches!(e, ParseError::TooLarge(_))),
    ));
    let mut pipeline = Vec::new();
    for i in 0..16 {
        let key = format!("key:{i:06}");
        pipeline.extend(encode_request(&[b"SET", key.as_bytes(), b"xxxxxxxxxx"]));
        pipeline.extend(encode_request(&[b"GET", key.as_bytes()]));
    }
    seeds.push(("pipeline", pipeline, Expect::Request));
    for (name, bytes, expect) in &seeds {
        check(name, bytes, *expect);
        fs::write(dir.join(name), bytes).expect("write seed");
    }
    println!("wrote {} seeds to {}", seeds.len(), dir.display());
}

//! Fuzzes every wire message decoder with arbitrary bytes cut into frames
//! the way a connection cuts them (`Frame::parse` with the default limits).
//!
//! Each frame is offered to all four decoders: `Request::decode`,
//! `Response::decode`, `ToMaster::decode` and `ToReplica::decode`. The
//! seeds (`corpus/frame_decode/expiry-*`) include protocol version 2's
//! expiry messages: PUT_EXPIRING, a batch's put with expiry, EXPIRE with
//! its conditions, PERSIST, TTL, APPLIED and TTL_ANSWER.
//! Properties checked:
//! - framing and decoding never panic, whatever the bytes;
//! - a decoded message re-encodes without error, the encoding parses as one
//!   whole frame, and that frame decodes to the same value (decode and
//!   encode are inverse on everything decode accepts).

#![no_main]

use bytes::BytesMut;
use kvstore::protocol::replication::{ToMaster, ToReplica};
use kvstore::protocol::{Frame, Limits, Request, Response};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let limits = Limits::default();
    let mut buf = BytesMut::from(data);
    // Each step consumes at least the 4-byte length prefix, so this ends.
    while let Ok(Some(frame)) = Frame::parse(&mut buf, limits.max_frame_bytes) {
        check(&frame, &limits);
    }
});

fn check(frame: &Frame, limits: &Limits) {
    if let Ok(req) = Request::decode(frame.clone(), limits) {
        let mut out = BytesMut::new();
        req.encode(&mut out).expect("a decoded request re-encodes");
        let again = reparse(out, limits);
        assert_eq!(Request::decode(again, limits).as_ref(), Ok(&req));
    }
    if let Ok(resp) = Response::decode(frame.clone(), limits) {
        let mut out = BytesMut::new();
        resp.encode(&mut out)
            .expect("a decoded response re-encodes");
        let again = reparse(out, limits);
        assert_eq!(Response::decode(again, limits).as_ref(), Ok(&resp));
    }
    if let Ok(msg) = ToMaster::decode(frame.clone()) {
        let mut out = BytesMut::new();
        msg.encode(&mut out).expect("a decoded ToMaster re-encodes");
        let again = reparse(out, limits);
        assert_eq!(ToMaster::decode(again).as_ref(), Ok(&msg));
    }
    if let Ok(Some(msg)) = ToReplica::decode(frame.clone()) {
        let mut out = BytesMut::new();
        msg.encode(&mut out)
            .expect("a decoded ToReplica re-encodes");
        let again = reparse(out, limits);
        assert_eq!(ToReplica::decode(again).as_ref(), Ok(&Some(msg)));
    }
}

/// Parses an encoding back into exactly one frame with nothing left over.
fn reparse(mut out: BytesMut, limits: &Limits) -> Frame {
    let frame = Frame::parse(&mut out, limits.max_frame_bytes)
        .expect("own encoding frames")
        .expect("own encoding is a whole frame");
    assert!(
        out.is_empty(),
        "encoding left {} bytes after the frame",
        out.len()
    );
    frame
}

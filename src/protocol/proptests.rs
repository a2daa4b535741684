//! Property tests of the codec: arbitrary bytes never panic a decoder,
//! every request survives encode → frame → decode, and a stream of frames
//! parses the same however it is cut into reads.

use bytes::{Bytes, BytesMut};
use proptest::prelude::*;

use super::*;

fn bytes_up_to(n: usize) -> impl Strategy<Value = Bytes> {
    proptest::collection::vec(any::<u8>(), 0..n).prop_map(Bytes::from)
}

fn expiry() -> impl Strategy<Value = Expiry> {
    prop_oneof![
        any::<u64>().prop_map(Expiry::In),
        any::<u64>().prop_map(Expiry::At)
    ]
}

fn condition() -> impl Strategy<Value = ExpireCondition> {
    any::<[bool; 4]>().prop_map(|[no_expiry, has_expiry, later, sooner]| ExpireCondition {
        no_expiry,
        has_expiry,
        later,
        sooner,
    })
}

fn request() -> impl Strategy<Value = Request> {
    let op = prop_oneof![
        (bytes_up_to(16), bytes_up_to(32)).prop_map(|(key, value)| BatchOp::Put { key, value }),
        bytes_up_to(16).prop_map(|key| BatchOp::Delete { key }),
        (bytes_up_to(16), bytes_up_to(32), expiry())
            .prop_map(|(key, value, expiry)| BatchOp::PutExpiring { key, value, expiry }),
    ];
    prop_oneof![
        Just(Request::Ping),
        Just(Request::Compact),
        Just(Request::Stats),
        Just(Request::ClusterStatus),
        bytes_up_to(64).prop_map(|key| Request::Get { key }),
        bytes_up_to(64).prop_map(|key| Request::Delete { key }),
        bytes_up_to(64).prop_map(|key| Request::Exists { key }),
        (bytes_up_to(64), bytes_up_to(256)).prop_map(|(key, value)| Request::Put { key, value }),
        proptest::collection::vec(op, 0..8).prop_map(Request::Batch),
        (bytes_up_to(64), bytes_up_to(256), expiry())
            .prop_map(|(key, value, expiry)| Request::PutExpiring { key, value, expiry }),
        (bytes_up_to(64), expiry(), condition()).prop_map(|(key, expiry, only_if)| {
            Request::Expire {
                key,
                expiry,
                only_if,
            }
        }),
        bytes_up_to(64).prop_map(|key| Request::Persist { key }),
        bytes_up_to(64).prop_map(|key| Request::Ttl { key }),
        proptest::option::of("[a-z0-9-]{1,12}").prop_map(|to| Request::Switchover { to }),
        (any::<u16>(), bytes_up_to(8), "[a-z]{0,8}").prop_map(|(version, token, name)| {
            Request::Hello(Hello {
                version,
                auth: if token.is_empty() {
                    Auth::None
                } else {
                    Auth::Token(token)
                },
                client_name: name,
            })
        }),
    ]
}

proptest! {
    #[test]
    fn arbitrary_bytes_never_panic(data in proptest::collection::vec(any::<u8>(), 0..2048)) {
        let limits = Limits {
            max_frame_bytes: 1024,
            max_key_bytes: 64,
            max_value_bytes: 512,
            max_batch_ops: 16,
        };
        let mut buf = BytesMut::from(&data[..]);
        // Bounded: each iteration consumes a frame or stops.
        for _ in 0..data.len() + 1 {
            match Frame::parse(&mut buf, limits.max_frame_bytes) {
                Ok(Some(frame)) => {
                    let _ = Request::decode(frame.clone(), &limits);
                    let _ = Response::decode(frame, &limits);
                }
                Ok(None) | Err(_) => break,
            }
        }
    }

    #[test]
    fn requests_round_trip_through_any_read_sizes(
        requests in proptest::collection::vec(request(), 1..8),
        chunk in 1usize..64,
    ) {
        let mut wire = BytesMut::new();
        for r in &requests {
            r.encode(&mut wire).unwrap();
        }
        let limits = Limits::default();
        let mut buf = BytesMut::new();
        let mut decoded = Vec::new();
        for piece in wire.chunks(chunk) {
            buf.extend_from_slice(piece);
            while let Some(frame) = Frame::parse(&mut buf, limits.max_frame_bytes).unwrap() {
                decoded.push(Request::decode(frame, &limits).unwrap());
            }
        }
        prop_assert!(buf.is_empty());
        prop_assert_eq!(decoded, requests);
    }
}

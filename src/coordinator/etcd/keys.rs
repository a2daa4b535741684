//! The keys of a cluster in etcd, and reading their values.

use std::time::Duration;

use etcd_client::{KeyValue, TxnOpResponse};

use crate::coordinator::{Error, Result};

/// The keys under `/<cluster>/` (see the module header of `etcd`).
pub(super) struct Keys {
    pub leader: String,
    pub epoch: String,
    pub in_sync: String,
    pub members: String,
    pub successor: String,
}

impl Keys {
    pub fn new(cluster: &str) -> Keys {
        Keys {
            leader: format!("/{cluster}/leader"),
            epoch: format!("/{cluster}/epoch"),
            in_sync: format!("/{cluster}/in-sync"),
            members: format!("/{cluster}/members/"),
            successor: format!("/{cluster}/successor"),
        }
    }
}

/// The first key-value of each of the first `N` get responses in a Txn.
pub(super) fn first_kvs<const N: usize>(responses: Vec<TxnOpResponse>) -> [Option<KeyValue>; N] {
    let mut out: [Option<KeyValue>; N] = std::array::from_fn(|_| None);
    for (slot, resp) in out.iter_mut().zip(responses) {
        if let TxnOpResponse::Get(get) = resp {
            *slot = get.kvs().first().cloned();
        }
    }
    out
}

pub(super) fn parse_epoch(key: &str, value: &[u8]) -> Result<u32> {
    std::str::from_utf8(value)
        .ok()
        .and_then(|s| s.parse().ok())
        .ok_or_else(|| Error::Corrupt {
            key: key.to_string(),
            reason: format!("not an epoch: {:?}", String::from_utf8_lossy(value)),
        })
}

/// A TTL in seconds from etcd as a duration (etcd never grants less than
/// one second; anything else is refused rather than trusted).
pub(super) fn granted(ttl: i64) -> Result<Duration> {
    u64::try_from(ttl)
        .ok()
        .filter(|&s| s > 0)
        .map(Duration::from_secs)
        .ok_or_else(|| Error::Corrupt {
            key: "lease".into(),
            reason: format!("etcd granted a TTL of {ttl} s"),
        })
}

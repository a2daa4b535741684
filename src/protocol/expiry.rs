//! The expiry fields of protocol version 2 (docs/PROTOCOL.md, "Expiry"):
//! when a key expires as a request gives it ([`Expiry`]), the conditions
//! of EXPIRE ([`ExpireCondition`]) and TTL's answer ([`KeyTtl`]).
//!
//! Only the wire shapes live here. Turning a relative expiry into an
//! absolute time needs the server's clock, so it is done where the
//! request is executed ([`Expiry::at`] takes the time as an argument).

use bytes::{BufMut, BytesMut};

use super::error::Error;
use super::wire::Reader;

/// Latest expiry accepted, in ms since the Unix epoch: Redis keeps
/// expiries in a signed 64-bit millisecond count, and so does kvstore, so
/// that both protocols agree on every key.
pub const MAX_EXPIRY_MS: u64 = i64::MAX as u64;

const EXPIRY_IN: u8 = 1;
const EXPIRY_AT: u8 = 2;

/// When a key expires, as a request gives it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Expiry {
    /// This many milliseconds after the server runs the request, on the
    /// server's clock (Redis's `PX`): immune to the client's clock.
    In(u64),
    /// At this time, in milliseconds since the Unix epoch (Redis's
    /// `PXAT`); a time already past expires the key at once.
    At(u64),
}

impl Expiry {
    /// The absolute expiry (ms since the Unix epoch) this means at `now`,
    /// or `None` when it lies past [`MAX_EXPIRY_MS`].
    pub fn at(self, now: u64) -> Option<u64> {
        let at = match self {
            Expiry::In(ms) => now.checked_add(ms)?,
            Expiry::At(at) => at,
        };
        (at <= MAX_EXPIRY_MS).then_some(at)
    }

    /// Encoded as `u8 kind` (1 = in, 2 = at) then `u64` milliseconds.
    pub(crate) fn encode(self, dst: &mut BytesMut) {
        let (kind, ms) = match self {
            Expiry::In(ms) => (EXPIRY_IN, ms),
            Expiry::At(at) => (EXPIRY_AT, at),
        };
        dst.put_u8(kind);
        dst.put_u64_le(ms);
    }

    pub(crate) fn decode(r: &mut Reader) -> Result<Expiry, Error> {
        let kind = r.u8("expiry kind")?;
        let ms = r.u64("expiry")?;
        match kind {
            EXPIRY_IN => Ok(Expiry::In(ms)),
            EXPIRY_AT => Ok(Expiry::At(ms)),
            other => Err(Error::InvalidField {
                opcode: r.opcode(),
                field: "expiry kind",
                value: u64::from(other),
            }),
        }
    }
}

const IF_NO_EXPIRY: u8 = 0x01;
const IF_HAS_EXPIRY: u8 = 0x02;
const IF_LATER: u8 = 0x04;
const IF_SOONER: u8 = 0x08;

/// The conditions of an EXPIRE, Redis's `NX`/`XX`/`GT`/`LT`: all that are
/// set must hold. A key without expiry counts as expiring never (`GT`
/// fails on it, `LT` holds). One byte of flags on the wire.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct ExpireCondition {
    /// `NX` (bit 0): the key has no expiry.
    pub no_expiry: bool,
    /// `XX` (bit 1): the key has an expiry.
    pub has_expiry: bool,
    /// `GT` (bit 2): the new expiry is later than the current one.
    pub later: bool,
    /// `LT` (bit 3): the new expiry is sooner than the current one.
    pub sooner: bool,
}

impl ExpireCondition {
    /// Why these conditions cannot be combined (Redis refuses the same
    /// pairs), or `None`.
    pub fn conflict(&self) -> Option<&'static str> {
        if self.no_expiry && (self.has_expiry || self.later || self.sooner) {
            return Some("NX cannot be combined with XX, GT or LT");
        }
        if self.later && self.sooner {
            return Some("GT and LT cannot be combined");
        }
        None
    }

    fn to_byte(self) -> u8 {
        let bit = |on: bool, bit: u8| if on { bit } else { 0 };
        bit(self.no_expiry, IF_NO_EXPIRY)
            | bit(self.has_expiry, IF_HAS_EXPIRY)
            | bit(self.later, IF_LATER)
            | bit(self.sooner, IF_SOONER)
    }

    pub(crate) fn encode(self, dst: &mut BytesMut) {
        dst.put_u8(self.to_byte());
    }

    /// Any combination of the four bits decodes (a conflicting one is a
    /// request error, answered without closing); other bits are malformed.
    pub(crate) fn decode(r: &mut Reader) -> Result<ExpireCondition, Error> {
        let b = r.u8("conditions")?;
        if b & !(IF_NO_EXPIRY | IF_HAS_EXPIRY | IF_LATER | IF_SOONER) != 0 {
            return Err(Error::InvalidField {
                opcode: r.opcode(),
                field: "conditions",
                value: u64::from(b),
            });
        }
        Ok(ExpireCondition {
            no_expiry: b & IF_NO_EXPIRY != 0,
            has_expiry: b & IF_HAS_EXPIRY != 0,
            later: b & IF_LATER != 0,
            sooner: b & IF_SOONER != 0,
        })
    }
}

const TTL_ABSENT: u8 = 0;
const TTL_NEVER: u8 = 1;
const TTL_EXPIRES: u8 = 2;

/// TTL's answer: whether the key has a value, and until when.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum KeyTtl {
    /// No value, or an expired one (Redis's `-2`).
    Absent,
    /// A value without expiry (Redis's `-1`).
    Never,
    /// A value that expires `at` (ms since the Unix epoch, the server's
    /// clock), `left_ms` after the server answered.
    Expires { at: u64, left_ms: u64 },
}

impl KeyTtl {
    /// Encoded as `u8 state` (0 absent, 1 no expiry, 2 expires), `u64 at`,
    /// `u64 left_ms`; both zero unless the state is 2.
    pub(crate) fn encode(self, dst: &mut BytesMut) {
        let (state, at, left_ms) = match self {
            KeyTtl::Absent => (TTL_ABSENT, 0, 0),
            KeyTtl::Never => (TTL_NEVER, 0, 0),
            KeyTtl::Expires { at, left_ms } => (TTL_EXPIRES, at, left_ms),
        };
        dst.put_u8(state);
        dst.put_u64_le(at);
        dst.put_u64_le(left_ms);
    }

    pub(crate) fn decode(r: &mut Reader) -> Result<KeyTtl, Error> {
        let state = r.u8("state")?;
        let at = r.u64("expires at")?;
        let left_ms = r.u64("ms left")?;
        let invalid = |field, value| Error::InvalidField {
            opcode: r.opcode(),
            field,
            value,
        };
        match state {
            TTL_ABSENT | TTL_NEVER if at != 0 => Err(invalid("expires at", at)),
            TTL_ABSENT | TTL_NEVER if left_ms != 0 => Err(invalid("ms left", left_ms)),
            TTL_ABSENT => Ok(KeyTtl::Absent),
            TTL_NEVER => Ok(KeyTtl::Never),
            TTL_EXPIRES => Ok(KeyTtl::Expires { at, left_ms }),
            other => Err(invalid("state", u64::from(other))),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn relative_and_absolute_expiries_resolve_on_the_given_clock() {
        assert_eq!(Expiry::In(500).at(1_000), Some(1_500));
        assert_eq!(Expiry::At(7).at(1_000), Some(7));
        assert_eq!(Expiry::At(MAX_EXPIRY_MS).at(1), Some(MAX_EXPIRY_MS));
        assert_eq!(Expiry::At(MAX_EXPIRY_MS + 1).at(1), None);
        assert_eq!(Expiry::In(MAX_EXPIRY_MS).at(1), None);
        assert_eq!(Expiry::In(u64::MAX).at(1), None);
    }

    #[test]
    fn conditions_conflict_as_in_redis() {
        let c = |no_expiry, has_expiry, later, sooner| ExpireCondition {
            no_expiry,
            has_expiry,
            later,
            sooner,
        };
        assert_eq!(c(false, false, false, false).conflict(), None);
        assert_eq!(c(false, true, true, false).conflict(), None);
        assert_eq!(c(false, true, false, true).conflict(), None);
        assert!(c(true, true, false, false).conflict().is_some());
        assert!(c(true, false, true, false).conflict().is_some());
        assert!(c(false, false, true, true).conflict().is_some());
    }
}

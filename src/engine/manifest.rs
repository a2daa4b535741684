//! The merged-generation manifest (`MERGED`): the commit point of a
//! compaction. In the [envelope](super::envelope) every metadata file
//! shares:
//!
//! ```text
//!  8  magic "KVSTMAN\0"
//!  4  format version (1)
//!  4  number of merged files n
//!  8  horizon H: the generation replaces the log below offset H
//!  8  × n  length of each file merged-H-0000.dat, merged-H-0001.dat, ...
//!  4  crc32 of every byte before it
//! ```
//!
//! It is written to `MERGED.tmp`, fsynced, renamed to `MERGED` and the
//! directory fsynced. A rename is atomic, so a reader sees the old manifest
//! or the new one, never a mix.

use std::path::Path;

use super::envelope::{self, u32_at, u64_at, Envelope, Invalid};
use super::error::Result;
use crate::durable;

pub const FILE_NAME: &str = "MERGED";
const ENVELOPE: Envelope = Envelope {
    name: "manifest",
    magic: b"KVSTMAN\0",
    version: 1,
    oldest: 1,
    min_payload: 12,
};
/// More merged files than this in one generation is not something the
/// engine writes; refusing it bounds the allocation below.
const MAX_FILES: u32 = 1 << 20;

#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Manifest {
    pub horizon: u64,
    pub file_lens: Vec<u64>,
}

impl Manifest {
    pub fn encode(&self) -> Vec<u8> {
        let n = self.file_lens.len();
        ENVELOPE.encode(12 + 8 * n, |out| {
            // At most MAX_FILES: compaction cuts files at the segment size.
            out.extend_from_slice(&(n as u32).to_le_bytes());
            out.extend_from_slice(&self.horizon.to_le_bytes());
            for len in &self.file_lens {
                out.extend_from_slice(&len.to_le_bytes());
            }
        })
    }

    pub fn decode(bytes: &[u8]) -> std::result::Result<Manifest, Invalid> {
        let payload = ENVELOPE.open(bytes)?;
        let count = u32_at(payload, 0);
        let lens = &payload[12..];
        if count > MAX_FILES || lens.len() != count as usize * 8 {
            return Err(Invalid::in_payload(
                0,
                format!("manifest lists {count} files in {} bytes", lens.len()),
            ));
        }
        Ok(Manifest {
            horizon: u64_at(payload, 4),
            file_lens: lens.chunks_exact(8).map(|c| u64_at(c, 0)).collect(),
        })
    }

    /// Reads `dir/MERGED`; `Ok(None)` if there is none (never compacted).
    pub fn load(dir: &Path) -> Result<Option<Manifest>> {
        envelope::read_file(&dir.join(FILE_NAME), Manifest::decode)
    }

    /// Writes the manifest to its temporary name, fsynced.
    pub fn stage(&self, dir: &Path) -> Result<()> {
        Ok(durable::stage(&dir.join(FILE_NAME), &self.encode())?)
    }

    /// Renames the staged manifest into place and fsyncs the directory:
    /// the commit point.
    pub fn commit(dir: &Path) -> Result<()> {
        Ok(durable::commit(&dir.join(FILE_NAME))?)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trips_and_refuses_damage() {
        let m = Manifest {
            horizon: 1 << 33,
            file_lens: vec![32, 4096],
        };
        let bytes = m.encode();
        assert_eq!(Manifest::decode(&bytes).unwrap(), m);
        for i in 0..bytes.len() {
            let mut bad = bytes.clone();
            bad[i] ^= 4;
            assert!(Manifest::decode(&bad).is_err(), "flip at {i}");
        }
        assert!(Manifest::decode(&bytes[..bytes.len() - 1]).is_err());
    }

    #[test]
    fn a_wrong_file_count_is_corrupt_at_the_count() {
        // A valid envelope whose count (3) disagrees with its lengths (2).
        let bytes = ENVELOPE.encode(28, |out| {
            out.extend_from_slice(&3u32.to_le_bytes());
            for n in [4096u64, 32, 4096] {
                out.extend_from_slice(&n.to_le_bytes());
            }
        });
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join(FILE_NAME), &bytes).unwrap();
        match Manifest::load(dir.path()) {
            // The count follows the 12 bytes of magic and version.
            Err(crate::engine::error::Error::Corrupt { file, offset, .. }) => {
                assert_eq!(file, dir.path().join(FILE_NAME));
                assert_eq!(offset, 12);
            }
            other => panic!("expected corruption, got {other:?}"),
        }
    }

    /// The checked-in v1 manifest decodes and encodes back to the same
    /// bytes: the envelope did not change the format.
    #[test]
    fn the_v1_manifest_encodes_byte_for_byte() {
        let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("tests/fixtures/v1")
            .join(FILE_NAME);
        let bytes = std::fs::read(path).unwrap();
        let m = Manifest::decode(&bytes).unwrap();
        assert_eq!(m.file_lens.len(), 2);
        assert_eq!(m.encode(), bytes);
    }
}

//! The merged-generation manifest (`MERGED`): the commit point of a
//! compaction.
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

use std::fs;
use std::io::ErrorKind;
use std::path::Path;

use super::error::{Error, Result};
use crate::durable;

pub const FILE_NAME: &str = "MERGED";
const MAGIC: &[u8; 8] = b"KVSTMAN\0";
const VERSION: u32 = 1;
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
        let mut out = Vec::with_capacity(24 + 8 * self.file_lens.len() + 4);
        out.extend_from_slice(MAGIC);
        out.extend_from_slice(&VERSION.to_le_bytes());
        out.extend_from_slice(&(self.file_lens.len() as u32).to_le_bytes());
        out.extend_from_slice(&self.horizon.to_le_bytes());
        for len in &self.file_lens {
            out.extend_from_slice(&len.to_le_bytes());
        }
        let crc = crc32fast::hash(&out);
        out.extend_from_slice(&crc.to_le_bytes());
        out
    }

    pub fn decode(bytes: &[u8]) -> std::result::Result<Manifest, String> {
        let body_len = bytes
            .len()
            .checked_sub(4)
            .filter(|&n| n >= 24)
            .ok_or("manifest is too short")?;
        let (body, crc) = bytes.split_at(body_len);
        let stored = u32::from_le_bytes(crc.try_into().expect("4 bytes"));
        if stored != crc32fast::hash(body) {
            return Err("manifest checksum mismatch".into());
        }
        if &body[..8] != MAGIC {
            return Err("bad manifest magic".into());
        }
        let version = u32::from_le_bytes(body[8..12].try_into().expect("4 bytes"));
        if version != VERSION {
            return Err(format!("unsupported manifest version {version}"));
        }
        let count = u32::from_le_bytes(body[12..16].try_into().expect("4 bytes"));
        if count > MAX_FILES || body.len() - 24 != count as usize * 8 {
            return Err(format!(
                "manifest lists {count} files in {} bytes",
                body.len()
            ));
        }
        let horizon = u64::from_le_bytes(body[16..24].try_into().expect("8 bytes"));
        let file_lens = body[24..]
            .chunks_exact(8)
            .map(|c| u64::from_le_bytes(c.try_into().expect("8 bytes")))
            .collect();
        Ok(Manifest { horizon, file_lens })
    }

    /// Reads `dir/MERGED`; `Ok(None)` if there is none (never compacted).
    pub fn load(dir: &Path) -> Result<Option<Manifest>> {
        let path = dir.join(FILE_NAME);
        match fs::read(&path) {
            Ok(bytes) => Manifest::decode(&bytes)
                .map(Some)
                .map_err(|reason| Error::corrupt(&path, 0, reason)),
            Err(e) if e.kind() == ErrorKind::NotFound => Ok(None),
            Err(e) => Err(Error::io(format!("read {}", path.display()), e)),
        }
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
}

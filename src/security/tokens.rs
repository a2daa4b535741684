//! Bearer tokens and what each one may do.
//!
//! A node reads up to three token files, one per [`Permission`]: read-only,
//! client (read and write) and admin (everything, including pulling the
//! raw log, backups and promotion). A file holds one token per line; blank
//! lines and `#` comments are skipped, so an operator rotating a token puts
//! the old and the new one in the file for as long as both must work.
//!
//! Invariants:
//! - tokens are kept only as SHA-256 digests, and a presented token is
//!   compared against every accepted digest in constant time, so neither
//!   the answer time nor an early exit tells which bytes matched;
//! - a token is never logged or put in an error message;
//! - a file with no token is an error, not "authentication off".

use std::path::{Path, PathBuf};

use ring::digest::{digest, SHA256};
use subtle::ConstantTimeEq;

/// What a credential allows, in increasing order: each level includes the
/// ones below it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Permission {
    /// GET, EXISTS, STATS (and PING, which needs nothing).
    Read,
    /// Read plus PUT, DELETE, BATCH.
    Write,
    /// Everything: COMPACT, PROMOTE, REPLICATE, BACKUP, REPL_SYNC.
    Admin,
}

impl Permission {
    /// The name used in logs, metrics and docs.
    pub fn name(self) -> &'static str {
        match self {
            Permission::Read => "read",
            Permission::Write => "write",
            Permission::Admin => "admin",
        }
    }
}

/// Where a node's tokens come from: one optional file per permission.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct TokenFiles {
    pub readonly: Option<PathBuf>,
    pub client: Option<PathBuf>,
    pub admin: Option<PathBuf>,
}

impl TokenFiles {
    /// True if any file is set: the node then requires authentication.
    pub fn enabled(&self) -> bool {
        self.readonly.is_some() || self.client.is_some() || self.admin.is_some()
    }
}

/// Why tokens could not be loaded. Never contains a token.
#[derive(Debug, thiserror::Error)]
pub enum TokenError {
    #[error("{setting}: cannot read token file {path}: {source}")]
    Read {
        setting: &'static str,
        path: PathBuf,
        source: std::io::Error,
    },
    #[error(
        "{setting}: token file {path} holds no token (one per line; blank and # lines are skipped)"
    )]
    Empty {
        setting: &'static str,
        path: PathBuf,
    },
}

/// The flag and variable of each token file, for messages.
const READONLY_SETTING: &str = "--readonly-token-file (KVSTORE_READONLY_TOKEN_FILE)";
const CLIENT_SETTING: &str = "--auth-token-file (KVSTORE_AUTH_TOKEN_FILE)";
const ADMIN_SETTING: &str = "--admin-token-file (KVSTORE_ADMIN_TOKEN_FILE)";

/// The accepted tokens, as digests, each with its permission.
#[derive(Default)]
pub struct Tokens {
    accepted: Vec<([u8; 32], Permission)>,
}

impl std::fmt::Debug for Tokens {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Tokens({} accepted)", self.accepted.len())
    }
}

impl Tokens {
    /// Reads every configured file. All or nothing: one bad file fails
    /// the whole load, so a reload never half-applies.
    pub fn load(files: &TokenFiles) -> Result<Tokens, TokenError> {
        let mut accepted = Vec::new();
        let levels = [
            (&files.readonly, Permission::Read, READONLY_SETTING),
            (&files.client, Permission::Write, CLIENT_SETTING),
            (&files.admin, Permission::Admin, ADMIN_SETTING),
        ];
        for (path, permission, setting) in levels {
            if let Some(path) = path {
                for token in read_token_file(setting, path)? {
                    accepted.push((sha256(&token), permission));
                }
            }
        }
        Ok(Tokens { accepted })
    }

    /// How many tokens are accepted (for logs).
    pub fn len(&self) -> usize {
        self.accepted.len()
    }

    pub fn is_empty(&self) -> bool {
        self.accepted.is_empty()
    }

    /// The permission `token` grants, or `None` if it is not accepted.
    /// Every accepted digest is compared, whatever matched; a token listed
    /// under several permissions gets the highest.
    pub fn check(&self, token: &[u8]) -> Option<Permission> {
        let presented = sha256(token);
        let mut granted = None;
        for (digest, permission) in &self.accepted {
            if bool::from(digest.ct_eq(&presented)) {
                granted = granted.max(Some(*permission));
            }
        }
        granted
    }
}

/// The tokens of one file, in file order; `setting` names the file's flag
/// in errors. The first token is what this node presents when it is the
/// client (a replica to its master, the CLI).
pub fn read_token_file(setting: &'static str, path: &Path) -> Result<Vec<Vec<u8>>, TokenError> {
    let text = std::fs::read(path).map_err(|source| TokenError::Read {
        setting,
        path: path.to_path_buf(),
        source,
    })?;
    let tokens: Vec<Vec<u8>> = text
        .split(|&b| b == b'\n')
        .map(|line| line.trim_ascii())
        .filter(|line| !line.is_empty() && !line.starts_with(b"#"))
        .map(<[u8]>::to_vec)
        .collect();
    if tokens.is_empty() {
        return Err(TokenError::Empty {
            setting,
            path: path.to_path_buf(),
        });
    }
    Ok(tokens)
}

/// The first token of a client's `--auth-token-file`: its credential.
pub fn client_token(path: &Path) -> Result<Vec<u8>, TokenError> {
    first_token(CLIENT_SETTING, path)
}

/// The first token of this node's `--admin-token-file`: what a replica
/// presents to its master.
pub fn admin_token(path: &Path) -> Result<Vec<u8>, TokenError> {
    first_token(ADMIN_SETTING, path)
}

fn first_token(setting: &'static str, path: &Path) -> Result<Vec<u8>, TokenError> {
    let mut tokens = read_token_file(setting, path)?;
    Ok(tokens.swap_remove(0))
}

fn sha256(bytes: &[u8]) -> [u8; 32] {
    let mut out = [0u8; 32];
    out.copy_from_slice(digest(&SHA256, bytes).as_ref());
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn file(dir: &tempfile::TempDir, name: &str, text: &str) -> PathBuf {
        let path = dir.path().join(name);
        std::fs::write(&path, text).expect("write token file");
        path
    }

    #[test]
    fn each_file_grants_its_permission_and_several_lines_all_work() {
        let dir = tempfile::tempdir().expect("tempdir");
        let files = TokenFiles {
            readonly: Some(file(&dir, "ro", "reader\n")),
            client: Some(file(
                &dir,
                "client",
                "# rotating\nold-client\n\n  new-client  \n",
            )),
            admin: Some(file(&dir, "admin", "root\r\n")),
        };
        let tokens = Tokens::load(&files).expect("load");
        assert_eq!(tokens.len(), 4);
        assert_eq!(tokens.check(b"reader"), Some(Permission::Read));
        assert_eq!(tokens.check(b"old-client"), Some(Permission::Write));
        assert_eq!(tokens.check(b"new-client"), Some(Permission::Write));
        assert_eq!(tokens.check(b"root"), Some(Permission::Admin));
        assert_eq!(tokens.check(b"root\r"), None);
        assert_eq!(tokens.check(b"# rotating"), None);
        assert_eq!(tokens.check(b""), None);
        assert_eq!(tokens.check(b"reade"), None);
        assert_eq!(
            client_token(files.client.as_deref().expect("set")).expect("first"),
            b"old-client"
        );
    }

    #[test]
    fn an_empty_or_missing_file_is_an_error_that_names_it() {
        let dir = tempfile::tempdir().expect("tempdir");
        let empty = file(&dir, "empty", "# nothing yet\n\n");
        let err = Tokens::load(&TokenFiles {
            admin: Some(empty.clone()),
            ..TokenFiles::default()
        })
        .expect_err("empty file");
        assert!(err.to_string().contains(&*empty.to_string_lossy()), "{err}");
        assert!(err.to_string().starts_with("--admin-token-file"), "{err}");
        let missing = dir.path().join("missing");
        let err = client_token(&missing).expect_err("missing file");
        assert!(err.to_string().contains("cannot read token file"), "{err}");
        assert!(err.to_string().contains("KVSTORE_AUTH_TOKEN_FILE"), "{err}");
    }

    #[test]
    fn the_highest_permission_wins_for_a_token_listed_twice() {
        let dir = tempfile::tempdir().expect("tempdir");
        let files = TokenFiles {
            readonly: Some(file(&dir, "ro", "same\n")),
            admin: Some(file(&dir, "admin", "same\n")),
            ..TokenFiles::default()
        };
        let tokens = Tokens::load(&files).expect("load");
        assert_eq!(tokens.check(b"same"), Some(Permission::Admin));
    }
}

//! Authentication and encryption in transit: what a node accepts from its
//! peers and presents to its master.
//!
//! - [`tokens`]: bearer tokens read from files, each granting a
//!   [`Permission`] (read, write, admin), checked in constant time;
//! - [`tls`]: rustls server and client configuration from PEM files;
//! - [`stream`]: one stream type for plaintext and TLS connections.
//!
//! [`Security`] is a node's live view of all of it. SIGHUP calls
//! [`Security::reload`], which re-reads every file and swaps the new
//! tokens and certificates in atomically. Connections already open keep
//! their TLS session, but re-check their token against the new set before
//! their next request, so a token removed from its file stops working on
//! open connections too. A reload that fails changes nothing.

pub mod session;
pub mod stream;
pub mod tls;
pub mod tokens;

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use arc_swap::{ArcSwap, ArcSwapOption};
use tokio_rustls::TlsAcceptor;

pub use session::{Credential, Revoked};
pub use stream::{ClientStream, MaybeTls, ServerStream};
pub use tls::{Connector, TlsError, TlsFiles};
pub use tokens::{Permission, TokenError, TokenFiles, Tokens};

/// Why security settings could not be loaded.
#[derive(Debug, thiserror::Error)]
pub enum SecurityError {
    #[error(transparent)]
    Token(#[from] TokenError),
    #[error(transparent)]
    Tls(#[from] TlsError),
    #[error("--tls-cert and --tls-key must be given together")]
    CertWithoutKey,
}

/// Everything loaded from the files at one moment.
struct Loaded {
    tokens: Tokens,
    acceptor: Option<TlsAcceptor>,
    connector: Option<Connector>,
    /// The first admin token: what this node presents to its master.
    outbound_token: Option<Vec<u8>>,
}

impl Loaded {
    fn read(files: &TokenFiles, tls: &TlsFiles) -> Result<Loaded, SecurityError> {
        let tokens = Tokens::load(files)?;
        let acceptor = match (&tls.cert, &tls.key) {
            (Some(cert), Some(key)) => Some(TlsAcceptor::from(tls::server_config(cert, key)?)),
            (None, None) => None,
            _ => return Err(SecurityError::CertWithoutKey),
        };
        let connector = Connector::from_files(tls)?;
        let outbound_token = match &files.admin {
            Some(path) => Some(tokens::admin_token(path)?),
            None => None,
        };
        Ok(Loaded {
            tokens,
            acceptor,
            connector,
            outbound_token,
        })
    }
}

/// A node's authentication and TLS state, reloadable while it runs.
pub struct Security {
    files: TokenFiles,
    tls: TlsFiles,
    tokens: ArcSwap<Tokens>,
    acceptor: ArcSwapOption<TlsAcceptor>,
    connector: ArcSwapOption<Connector>,
    outbound_token: ArcSwapOption<Vec<u8>>,
    /// Bumped by every successful reload, so connections re-check their
    /// token against the new set before their next request.
    generation: AtomicU64,
}

impl std::fmt::Debug for Security {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Security")
            .field("auth", &self.auth_enabled())
            .field("tls", &self.tls_enabled())
            .finish_non_exhaustive()
    }
}

impl Security {
    /// Reads every configured file; fails naming the first bad one.
    pub fn load(files: TokenFiles, tls: TlsFiles) -> Result<Security, SecurityError> {
        let loaded = Loaded::read(&files, &tls)?;
        Ok(Security {
            files,
            tls,
            tokens: ArcSwap::from_pointee(loaded.tokens),
            acceptor: ArcSwapOption::new(loaded.acceptor.map(Arc::new)),
            connector: ArcSwapOption::new(loaded.connector.map(Arc::new)),
            outbound_token: ArcSwapOption::new(loaded.outbound_token.map(Arc::new)),
            generation: AtomicU64::new(0),
        })
    }

    /// No authentication, no TLS: the local quick start.
    pub fn disabled() -> Security {
        Security {
            files: TokenFiles::default(),
            tls: TlsFiles::default(),
            tokens: ArcSwap::from_pointee(Tokens::default()),
            acceptor: ArcSwapOption::empty(),
            connector: ArcSwapOption::empty(),
            outbound_token: ArcSwapOption::empty(),
            generation: AtomicU64::new(0),
        }
    }

    /// Re-reads every file and swaps the results in; on error nothing
    /// changes. Returns how many tokens are now accepted.
    pub fn reload(&self) -> Result<usize, SecurityError> {
        let loaded = Loaded::read(&self.files, &self.tls)?;
        let count = loaded.tokens.len();
        self.tokens.store(Arc::new(loaded.tokens));
        self.acceptor.store(loaded.acceptor.map(Arc::new));
        self.connector.store(loaded.connector.map(Arc::new));
        self.outbound_token
            .store(loaded.outbound_token.map(Arc::new));
        self.generation.fetch_add(1, Ordering::Release);
        Ok(count)
    }

    /// Changes on every successful reload.
    pub fn generation(&self) -> u64 {
        self.generation.load(Ordering::Acquire)
    }

    /// True if connections must authenticate.
    pub fn auth_enabled(&self) -> bool {
        self.files.enabled()
    }

    /// True if the client port and RESP listener require TLS.
    pub fn tls_enabled(&self) -> bool {
        self.tls.cert.is_some()
    }

    /// What a new connection may do before it authenticates: everything
    /// when authentication is off, nothing otherwise.
    pub fn initial_permission(&self) -> Option<Permission> {
        if self.auth_enabled() {
            None
        } else {
            Some(Permission::Admin)
        }
    }

    /// The permission `token` grants, `None` if it is not accepted.
    pub fn check(&self, token: &[u8]) -> Option<Permission> {
        self.tokens.load().check(token)
    }

    /// The acceptor for new connections, `None` when TLS is off.
    pub fn acceptor(&self) -> Option<TlsAcceptor> {
        self.acceptor.load_full().map(|a| TlsAcceptor::clone(&a))
    }

    /// How this node reaches its master: TLS settings, if any.
    pub fn connector(&self) -> Option<Arc<Connector>> {
        self.connector.load_full()
    }

    /// The token this node presents to its master, if any.
    pub fn outbound_token(&self) -> Option<Arc<Vec<u8>>> {
        self.outbound_token.load_full()
    }
}

//! What one connection has proved: the token it presented and the
//! permission that token has now.
//!
//! The permission is re-derived from the token after every reload of the
//! token files (see [`Security::generation`]), before the connection's
//! next request, so removing a token from its file also cuts the
//! connections that authenticated with it.

use bytes::Bytes;

use super::{Permission, Security};

/// One connection's authentication state.
#[derive(Debug, Clone)]
pub struct Credential {
    /// The accepted token, kept to re-check after a reload.
    token: Option<Bytes>,
    /// The reload generation `granted` was derived at.
    generation: u64,
    granted: Option<Permission>,
}

/// The token a connection authenticated with was removed by a reload.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Revoked;

impl Credential {
    /// A new connection: everything without authentication, nothing with.
    pub fn new(security: &Security) -> Credential {
        Credential {
            token: None,
            generation: security.generation(),
            granted: security.initial_permission(),
        }
    }

    /// Whether the connection may do anything yet: it authenticated, or
    /// authentication is off.
    pub fn is_authenticated(&self) -> bool {
        self.granted.is_some()
    }

    /// Checks `token`; on success the connection has its permission, on
    /// failure none.
    pub fn authenticate(&mut self, security: &Security, token: &Bytes) -> Option<Permission> {
        self.generation = security.generation();
        self.granted = security.check(token);
        self.token = self.granted.map(|_| token.clone());
        self.granted
    }

    /// The permission now, re-checked if the tokens were reloaded since.
    pub fn permission(&mut self, security: &Security) -> Result<Option<Permission>, Revoked> {
        let Some(token) = &self.token else {
            return Ok(self.granted);
        };
        let now = security.generation();
        if now != self.generation {
            self.generation = now;
            self.granted = security.check(token);
            if self.granted.is_none() {
                self.token = None;
                return Err(Revoked);
            }
        }
        Ok(self.granted)
    }
}

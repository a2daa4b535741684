//! Authentication for RESP clients, in Redis's words: `AUTH [user] token`
//! or `HELLO 2 AUTH user token` (the user name is ignored: kvstore has
//! tokens, not users); before it, only AUTH, HELLO, PING and QUIT run and
//! everything else answers `-NOAUTH`. A token that is not accepted answers
//! `-WRONGPASS` and closes the connection, like the binary protocol, so a
//! client cannot try tokens one after another on one connection. A
//! read-only token gets `-NOPERM` for writes.

use bytes::Bytes;

use super::parse::Args;
use super::reply::Reply;
use super::table;
use super::Session;
use crate::metrics::AuthFailure;
use crate::node::Node;
use crate::security::Permission;

/// What to do instead of running a command.
pub enum Refusal {
    /// Answer this and go on.
    Answer(Reply),
    /// Answer this and close the connection.
    Close(Reply),
}

const WRONGPASS: &str = "WRONGPASS invalid username-password pair or user is disabled.";

/// Checks one command against the session's credential; returns the
/// command to run (HELLO without its AUTH option) or what to answer.
pub fn gate(node: &Node, session: &mut Session, args: Args) -> Result<Args, Refusal> {
    let is = |command: &[u8]| {
        args.first()
            .is_some_and(|n| n.eq_ignore_ascii_case(command))
    };
    if is(b"auth") {
        return Err(auth(node, session, &args));
    }
    if is(b"hello") {
        return hello(node, session, args);
    }
    if is(b"quit") || is(b"ping") {
        return Ok(args);
    }
    let Ok(granted) = session.credential.permission(&node.security) else {
        node.metrics.auth_failure(AuthFailure::BadToken);
        tracing::warn!(peer = %session.peer, "RESP token removed by a reload; closing the connection");
        return Err(Refusal::Close(Reply::Error(WRONGPASS.into())));
    };
    // Admin (and no authentication at all) allows everything: no lookup
    // on the hot path.
    if granted == Some(Permission::Admin) {
        return Ok(args);
    }
    let name = args.first().map(|n| &n[..]).unwrap_or_default();
    let needed = match table::lookup(name) {
        Some(spec) if spec.flags.contains(&"write") => Permission::Write,
        _ => Permission::Read,
    };
    match granted {
        Some(granted) if granted >= needed => Ok(args),
        None => {
            node.metrics.auth_failure(AuthFailure::MissingToken);
            Err(Refusal::Answer(Reply::Error(
                "NOAUTH Authentication required.".into(),
            )))
        }
        Some(_) => {
            node.metrics.auth_failure(AuthFailure::PermissionDenied);
            let command = String::from_utf8_lossy(name).to_lowercase();
            tracing::warn!(peer = %session.peer, %command, "RESP permission denied: read-only token");
            Err(Refusal::Answer(Reply::Error(format!(
                "NOPERM this token has no permissions to run the '{command}' command"
            ))))
        }
    }
}

/// `AUTH token` or `AUTH user token`.
fn auth(node: &Node, session: &mut Session, args: &Args) -> Refusal {
    if !node.security.auth_enabled() {
        return Refusal::Answer(Reply::err(
            "AUTH <password> called without any password configured for the default user. \
             Are you sure your configuration is correct?",
        ));
    }
    let token = match args.len() {
        2 | 3 => args.last(),
        _ => None,
    };
    let Some(token) = token else {
        return Refusal::Answer(Reply::err("wrong number of arguments for 'auth' command"));
    };
    match authenticate(node, session, token) {
        true => Refusal::Answer(Reply::ok()),
        false => Refusal::Close(Reply::Error(WRONGPASS.into())),
    }
}

/// `HELLO [protover [AUTH user token] [SETNAME name]]`: authenticates,
/// then passes the rest on to the HELLO command.
fn hello(node: &Node, session: &mut Session, args: Args) -> Result<Args, Refusal> {
    let at = args
        .iter()
        .skip(2)
        .position(|a| a.eq_ignore_ascii_case(b"auth"))
        .map(|i| i + 2);
    let Some(at) = at else {
        if !matches!(session.credential.permission(&node.security), Ok(Some(_))) {
            node.metrics.auth_failure(AuthFailure::MissingToken);
            return Err(Refusal::Answer(Reply::Error(
                "NOAUTH HELLO must be called with the client already authenticated, otherwise \
                 the HELLO <proto> AUTH <user> <pass> option can be used to authenticate the \
                 client and select the RESP protocol version at the same time"
                    .into(),
            )));
        }
        return Ok(args);
    };
    let Some(token) = args.get(at + 2) else {
        return Err(Refusal::Answer(Reply::err("syntax error in HELLO option")));
    };
    if !node.security.auth_enabled() {
        return Err(auth(node, session, &args));
    }
    if !authenticate(node, session, token) {
        return Err(Refusal::Close(Reply::Error(WRONGPASS.into())));
    }
    let rest: Vec<Bytes> = args
        .iter()
        .enumerate()
        .filter(|(i, _)| !(at..at + 3).contains(i))
        .map(|(_, a)| a.clone())
        .collect();
    Ok(rest)
}

/// Checks `token`; counts and logs a failure without the token.
fn authenticate(node: &Node, session: &mut Session, token: &Bytes) -> bool {
    match session.credential.authenticate(&node.security, token) {
        Some(_) => true,
        None => {
            node.metrics.auth_failure(AuthFailure::BadToken);
            tracing::warn!(peer = %session.peer, "RESP authentication failed: token not accepted");
            false
        }
    }
}

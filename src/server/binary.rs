//! The binary protocol's front end (docs/PROTOCOL.md): a [`Codec`] for
//! the node's connection loop, and the [`FrontEnd`] of the client port.
//!
//! The codec decodes frames into requests (every length is validated when
//! its 4 bytes arrive, before anything is allocated), gates each request
//! by the connection's credential, runs it on the node and encodes the
//! answer. A connection error (code < 100) is answered and ends the
//! connection; a request error leaves it open.
//!
//! With authentication on, nothing but HELLO and PING runs before a HELLO
//! with an accepted token, and every request is checked against the
//! token's permission before it runs (see [`BinaryCodec::authorize`]).
//!
//! REPL_SYNC and BACKUP turn the connection into a stream: the codec hands
//! it over, and [`Binary::hand_off`] gives it to the replication master or
//! the backup server. Pipelined behind other requests (read together with
//! them), either is answered MALFORMED_REQUEST instead and the connection
//! goes on.

use std::sync::Arc;
use std::time::Instant;

use bytes::BytesMut;
use futures_util::future::join_all;

use crate::metrics::AuthFailure;
use crate::node::connection::{Admit, Closing, Codec, Cut, Served};
use crate::node::execute;
use crate::node::listener::FrontEnd;
use crate::node::Node;
use crate::protocol::replication::SyncRequest;
use crate::protocol::{self, Auth, ErrorCode, Frame, Request, Response};
use crate::security::{Credential, Permission, ServerStream};
use crate::{backup, replication};

/// The client port's front end.
#[derive(Debug, Default)]
pub struct Binary;

/// What a binary connection turns into.
pub enum HandOff {
    /// The peer is a replica: the connection becomes its replication
    /// stream, under the credential it authenticated with.
    Replication(SyncRequest),
    /// The peer asked for a backup snapshot.
    Backup,
}

impl FrontEnd for Binary {
    type Codec = BinaryCodec;
    const NAME: &'static str = "client";

    fn codec(_this: &Arc<Self>, node: &Arc<Node>, stream: &ServerStream) -> BinaryCodec {
        let peer = stream
            .tcp()
            .peer_addr()
            .map(|a| a.to_string())
            .unwrap_or_else(|_| "unknown".into());
        BinaryCodec {
            node: Arc::clone(node),
            limits: node.limits.protocol(),
            peer,
            client_name: String::new(),
            credential: Credential::new(&node.security),
        }
    }

    fn tls_refusal(&self) -> &'static [u8] {
        tls_required_frame()
    }

    fn too_many(&self, node: &Node) -> Vec<u8> {
        let mut buf = BytesMut::new();
        let message = format!(
            "too many connections (limit {}); retry later",
            node.limits.max_connections
        );
        let _ = Response::error(ErrorCode::TOO_MANY_CONNECTIONS, message).encode(&mut buf);
        buf.to_vec()
    }

    async fn hand_off(&self, node: Arc<Node>, served: Served<BinaryCodec>) {
        let Served::HandOff {
            hand_off,
            stream,
            leftover,
            codec,
        } = served
        else {
            return;
        };
        // Each gets the parts of the node it uses, not the node.
        match hand_off {
            HandOff::Replication(sync) => {
                let serving = replication::master::Serving {
                    replication: Arc::clone(&node.replication),
                    security: Arc::clone(&node.security),
                    max_frame_bytes: node.limits.max_frame_bytes,
                    shutdown: node.shutdown.clone(),
                };
                replication::master::serve_replica(
                    stream,
                    leftover,
                    serving,
                    sync,
                    codec.credential,
                )
                .await;
            }
            HandOff::Backup => {
                let serving = backup::serve::Serving {
                    engine: node.engine.clone(),
                    metrics: Arc::clone(&node.metrics),
                    shutdown: node.shutdown.clone(),
                };
                backup::serve::serve_backup(stream, leftover, serving).await
            }
        }
    }
}

/// One binary connection's state: who it is and what it has proved.
pub struct BinaryCodec {
    node: Arc<Node>,
    limits: protocol::Limits,
    peer: String,
    /// From HELLO, for logs.
    client_name: String,
    /// What this connection has proved.
    credential: Credential,
}

impl Codec for BinaryCodec {
    /// A request, or why its frame did not decode (answered as an error).
    type Request = Result<Request, protocol::Error>;
    type Answer = Response;
    type HandOff = HandOff;

    fn decode(&mut self, buf: &mut BytesMut) -> Result<Option<Self::Request>, Response> {
        match Frame::parse(buf, self.limits.max_frame_bytes) {
            Ok(Some(frame)) => Ok(Some(Request::decode(frame, &self.limits))),
            Ok(None) => Ok(None),
            Err(e) => Err(Response::error(e.code(), e.to_string())),
        }
    }

    fn missing(&self, buf: &BytesMut) -> usize {
        // The prefix, if buffered, was validated by `decode`.
        Frame::missing(buf, self.limits.max_frame_bytes)
            .ok()
            .flatten()
            .unwrap_or(0)
    }

    fn admit(&mut self, request: Self::Request, pipelined: bool) -> Admit<Self> {
        let request = match request {
            Ok(request) => request,
            Err(e) => return Admit::Answer(Response::error(e.code(), e.to_string())),
        };
        if let Err((code, message)) = self.authorize(&request) {
            return Admit::Answer(Response::error(code, message));
        }
        match request {
            // The connection becomes a stream only for a request sent
            // alone; behind others it is answered MALFORMED_REQUEST.
            Request::ReplSync(_) | Request::Backup if pipelined => Admit::Run(Ok(request)),
            Request::ReplSync(sync) => Admit::HandOff(HandOff::Replication(sync)),
            Request::Backup => Admit::HandOff(HandOff::Backup),
            // EXPIRE and PERSIST append inside the engine's writer when
            // first polled, as the others do, so they may share a group
            // commit too.
            Request::Put { .. }
            | Request::PutExpiring { .. }
            | Request::Delete { .. }
            | Request::Batch(_)
            | Request::Expire { .. }
            | Request::Persist { .. } => Admit::Write(Ok(request)),
            Request::Get { .. } => Admit::Read(Ok(request)),
            request => Admit::Run(Ok(request)),
        }
    }

    async fn run(&mut self, request: Self::Request) -> Response {
        self.run_write(request).await
    }

    async fn run_write(&self, request: Self::Request) -> Response {
        self.run_one(&request).await
    }

    fn warm_reads(&self, reads: &[Self::Request]) {
        self.node
            .engine
            .warm_for_reads(reads.iter().filter_map(|request| match request {
                Ok(Request::Get { key }) => Some(&key[..]),
                _ => None,
            }));
    }

    /// The keys' index entries are warmed first, as RESP's are
    /// ([`crate::engine::Engine::warm_for_writes`]); consecutive plain PUTs
    /// of the run go to the engine as one append ([`execute::put_groups`]).
    async fn run_writes(&self, writes: Vec<Self::Request>) -> Vec<Response> {
        self.node
            .engine
            .warm_for_writes(writes.iter().filter_map(written_key));
        let groups = execute::put_groups(&writes, plain_put);
        let answers = join_all(groups.iter().map(|group| async {
            match &writes[group.clone()] {
                [request] => self.run_one(request).await,
                puts => self.run_puts(puts).await,
            }
        }))
        .await;
        execute::spread(&groups, answers)
    }

    fn encode(&mut self, response: &Response, out: &mut BytesMut) -> Option<Closing> {
        if let Err(e) = response.encode(out) {
            // Only an answer over 4 GiB cannot be framed; say so instead.
            let msg = format!("answer cannot be sent: {e}");
            let _ = Response::error(ErrorCode::INTERNAL, msg).encode(out);
        }
        match response {
            Response::Error { code, message } if code.closes_connection() => Some(Closing {
                why: format!("{code}: {message}"),
                protocol_error: true,
            }),
            _ => None,
        }
    }

    fn frame_timeout(&self) -> Response {
        Response::error(ErrorCode::FRAME_TIMEOUT, "frame not completed in time")
    }

    fn encoded_len(&self, response: &Response) -> usize {
        // Frame header, opcode, fixed fields and length prefixes fit in
        // the constant; the rest is what the answer carries.
        64 + match response {
            Response::Value(value) => value.len(),
            Response::Stats(json) => json.len(),
            Response::ClusterStatus(json) => json.len(),
            Response::Error { message, .. } => message.len(),
            Response::Redirect { master } => master.len(),
            Response::HelloOk(hello) => hello.server.len(),
            Response::Switchover(new) => new.node_id.len() + new.addr.len(),
            _ => 0,
        }
    }

    fn authenticated(&self) -> bool {
        self.credential.is_authenticated()
    }

    fn cut(&self, cut: Cut) -> Response {
        match cut {
            Cut::HandshakeTimeout(limit) => Response::error(
                ErrorCode::FRAME_TIMEOUT,
                format!(
                    "handshake not completed within {}s: send HELLO (with a token when the server \
                     requires one) or a first request sooner (--handshake-timeout-secs)",
                    limit.as_secs()
                ),
            ),
            Cut::Evicted => Response::error(
                ErrorCode::TOO_MANY_CONNECTIONS,
                "closed to admit a new connection: every slot was taken and this connection \
                 was the one idle the longest (or still in its handshake); reconnect",
            ),
            Cut::Memory(exhausted) => {
                Response::error(ErrorCode::MEMORY_LIMIT, exhausted.to_string())
            }
            Cut::Largest { held } => Response::error(
                ErrorCode::MEMORY_LIMIT,
                format!(
                    "closed to free memory: the node's memory for client requests and answers \
                     was spent and this connection held the most ({held} bytes); retry later"
                ),
            ),
        }
    }

    fn shutting_down(&self) -> Response {
        Response::error(
            ErrorCode::SHUTTING_DOWN,
            "the server is shutting down; retry on another node or once it is back",
        )
    }
}

impl BinaryCodec {
    async fn run_one(&self, request: &<Self as Codec>::Request) -> Response {
        match request {
            Ok(request) => execute::execute(&self.node, request).await,
            Err(e) => Response::error(e.code(), e.to_string()),
        }
    }

    /// A group of PUTs from [`execute::put_groups`], appended as one: all
    /// get the same answer. Timed and counted one by one.
    async fn run_puts(&self, puts: &[<Self as Codec>::Request]) -> Response {
        let started = Instant::now();
        let response =
            match execute::write_puts(&self.node, puts.iter().filter_map(plain_put)).await {
                Ok(_) => Response::Ok,
                Err(answer) => answer,
            };
        let (outcome, elapsed) = (execute::outcome(&response), started.elapsed());
        for _ in puts {
            self.node.metrics.observe_request("put", outcome, elapsed);
        }
        response
    }

    /// Checks `request` against the connection's credential. HELLO
    /// authenticates (a missing or unknown token ends the connection);
    /// anything else needs the permission [`required_permission`] names.
    /// Refusals are counted and logged with the peer, never the token.
    fn authorize(&mut self, request: &Request) -> Result<(), (ErrorCode, String)> {
        let security = &self.node.security;
        if let Request::Hello(hello) = request {
            self.client_name.clone_from(&hello.client_name);
            if !security.auth_enabled() {
                return Ok(());
            }
            let Auth::Token(token) = &hello.auth else {
                self.node.metrics.auth_failure(AuthFailure::MissingToken);
                tracing::warn!(peer = %self.peer, client = %self.client_name, "HELLO without a token; this node requires one");
                return Err((
                    ErrorCode::AUTH_REQUIRED,
                    "this server requires a token: send one in HELLO (kvstore --auth-token-file)"
                        .into(),
                ));
            };
            return match self.credential.authenticate(security, token) {
                Some(permission) => {
                    tracing::debug!(peer = %self.peer, client = %self.client_name, permission = permission.name(), "authenticated");
                    Ok(())
                }
                None => {
                    self.node.metrics.auth_failure(AuthFailure::BadToken);
                    tracing::warn!(peer = %self.peer, client = %self.client_name, "authentication failed: token not accepted");
                    Err((
                        ErrorCode::AUTH_FAILED,
                        "authentication failed: the token is not accepted".into(),
                    ))
                }
            };
        }
        let Some(needed) = required_permission(request) else {
            return Ok(());
        };
        let Ok(granted) = self.credential.permission(security) else {
            self.node.metrics.auth_failure(AuthFailure::BadToken);
            tracing::warn!(peer = %self.peer, client = %self.client_name, "token removed by a reload; closing the connection");
            return Err((
                ErrorCode::AUTH_FAILED,
                "the token of this connection is no longer accepted (removed by a reload); \
                 reconnect with a current token"
                    .into(),
            ));
        };
        match granted {
            Some(granted) if granted >= needed => Ok(()),
            None => {
                self.node.metrics.auth_failure(AuthFailure::MissingToken);
                tracing::warn!(peer = %self.peer, op = request.name(), "request before authenticating");
                Err((
                    ErrorCode::AUTH_REQUIRED,
                    format!(
                        "authentication required: send HELLO with a token before {}",
                        request.name().to_uppercase()
                    ),
                ))
            }
            Some(granted) => {
                self.node
                    .metrics
                    .auth_failure(AuthFailure::PermissionDenied);
                tracing::warn!(
                    peer = %self.peer,
                    client = %self.client_name,
                    op = request.name(),
                    "permission denied: {} needs a token with the {} permission, this one has {}",
                    request.name().to_uppercase(),
                    needed.name(),
                    granted.name()
                );
                Err((
                    ErrorCode::PERMISSION_DENIED,
                    format!(
                        "permission denied: {} needs a token with the {} permission; this connection's token has {}",
                        request.name().to_uppercase(),
                        needed.name(),
                        granted.name()
                    ),
                ))
            }
        }
    }
}

/// The key and value of a plain PUT (no expiry).
fn plain_put(request: &Result<Request, protocol::Error>) -> Option<(&[u8], &[u8])> {
    match request {
        Ok(Request::Put { key, value }) => Some((key, value)),
        _ => None,
    }
}

/// The key a PUT or DELETE writes.
fn written_key(request: &Result<Request, protocol::Error>) -> Option<&[u8]> {
    match request {
        Ok(Request::Put { key, .. } | Request::Delete { key }) => Some(key),
        _ => None,
    }
}

/// The permission a request needs; `None` for HELLO and PING, which any
/// connection may send.
fn required_permission(request: &Request) -> Option<Permission> {
    match request {
        Request::Hello(_) | Request::Ping => None,
        Request::Get { .. } | Request::Exists { .. } | Request::Ttl { .. } | Request::Stats => {
            Some(Permission::Read)
        }
        Request::ClusterStatus => Some(Permission::Read),
        Request::Put { .. }
        | Request::PutExpiring { .. }
        | Request::Delete { .. }
        | Request::Batch(_)
        | Request::Expire { .. }
        | Request::Persist { .. } => Some(Permission::Write),
        Request::Compact
        | Request::Promote
        | Request::Replicate { .. }
        | Request::Switchover { .. }
        | Request::ReplSync(_)
        | Request::Backup => Some(Permission::Admin),
    }
}

/// The plaintext answer to a plaintext client on a TLS port, encoded once.
fn tls_required_frame() -> &'static [u8] {
    static FRAME: std::sync::LazyLock<Vec<u8>> = std::sync::LazyLock::new(|| {
        let mut buf = BytesMut::new();
        let message = "this port requires TLS: connect with --tls-ca (KVSTORE_TLS_CA)";
        let _ = Response::error(ErrorCode::TLS_REQUIRED, message).encode(&mut buf);
        buf.to_vec()
    });
    &FRAME
}

//! The RESP codec: Redis requests in, RESP2 answers out, for the node's
//! connection loop (which owns pipelining, timeouts and shutdown, as for
//! binary connections).
//!
//! - consecutive writes of one pipeline (`SET`, `MSET`, a one-key `DEL`,
//!   the expiry writes: [`commands::batchable`]) are runs of writes, so
//!   they share a group commit; before a run of several starts, the
//!   engine's index is warmed for all their keys, so the writes do not
//!   wait on memory inside the engine's single writer; consecutive plain
//!   `SET key value`s of a run go to the engine as one append
//!   ([`execute::put_groups`]), so they take its writer's lock once;
//! - consecutive `GET key`s of one pipeline are gathered, and the engine's
//!   index and log warmed for all their keys before the first runs, so
//!   that their misses of memory overlap ([`commands::warm_for_reads`]);
//! - the read buffer holds at most one incomplete request, whose size the
//!   parser bounds; the loop grows it by what has arrived, never by an
//!   announced length;
//! - a protocol error is answered `-ERR Protocol error: ...` and the
//!   connection closed, as Redis does; so is a request not complete
//!   within `--frame-timeout-secs`;
//! - `QUIT` and a refused token (`-WRONGPASS`) are answered, then the
//!   connection is closed.

use std::sync::Arc;

use bytes::BytesMut;
use futures_util::future::join_all;

use super::auth::{self, Refusal};
use super::commands;
use super::parse::{self, Args};
use super::reply::Reply;
use super::{Session, Shared};
use crate::node::connection::{Admit, Closing, Codec, Cut};
use crate::node::{execute, Node};

/// One RESP connection's state.
pub struct RespCodec {
    pub(super) node: Arc<Node>,
    pub(super) shared: Arc<Shared>,
    pub(super) session: Session,
    /// Set when the answer being sent ends the connection.
    closing: Option<Closing>,
}

impl RespCodec {
    pub(super) fn new(node: Arc<Node>, shared: Arc<Shared>, session: Session) -> RespCodec {
        RespCodec {
            node,
            shared,
            session,
            closing: None,
        }
    }
}

impl Codec for RespCodec {
    type Request = Args;
    type Answer = Reply;
    type HandOff = std::convert::Infallible;

    fn decode(&mut self, buf: &mut BytesMut) -> Result<Option<Args>, Reply> {
        parse::parse(buf, &self.shared.settings.limits).map_err(Reply::err)
    }

    fn missing(&self, buf: &BytesMut) -> usize {
        // RESP announces lengths argument by argument: grow by what is
        // already here (a big value streaming in).
        buf.len()
    }

    fn admit(&mut self, args: Args, _pipelined: bool) -> Admit<Self> {
        if args.is_empty() {
            return Admit::Skip;
        }
        match auth::gate(&self.node, &mut self.session, args) {
            Ok(args) if commands::batchable(&args) => Admit::Write(args),
            Ok(args) if commands::plain_get(&args).is_some() => Admit::Read(args),
            Ok(args) => Admit::Run(args),
            Err(Refusal::Answer(reply)) => Admit::Answer(reply),
            Err(Refusal::Close(reply)) => {
                self.closing = Some(Closing {
                    why: "token not accepted".into(),
                    protocol_error: false,
                });
                Admit::Answer(reply)
            }
        }
    }

    async fn run(&mut self, args: Args) -> Reply {
        commands::execute(&self.node, &self.shared, &mut self.session, args).await
    }

    async fn run_write(&self, args: Args) -> Reply {
        commands::execute_write(&self.node, &self.shared, &args).await
    }

    fn warm_reads(&self, reads: &[Args]) {
        commands::warm_for_reads(&self.node, reads);
    }

    async fn run_writes(&self, writes: Vec<Args>) -> Vec<Reply> {
        commands::warm_for_writes(&self.node, &writes);
        let groups = execute::put_groups(&writes, commands::plain_set);
        let (node, shared) = (&self.node, &self.shared);
        let replies = join_all(groups.iter().map(|group| async {
            match &writes[group.clone()] {
                [args] => commands::execute_write(node, shared, args).await,
                sets => commands::execute_sets(node, shared, sets).await,
            }
        }))
        .await;
        execute::spread(&groups, replies)
    }

    fn encode(&mut self, reply: &Reply, out: &mut BytesMut) -> Option<Closing> {
        reply.encode(out);
        if self.session.quit {
            return Some(Closing {
                why: "QUIT".into(),
                protocol_error: false,
            });
        }
        self.closing.take()
    }

    fn frame_timeout(&self) -> Reply {
        Reply::err("Protocol error: request not completed in time")
    }

    fn encoded_len(&self, reply: &Reply) -> usize {
        reply.encoded_len()
    }

    fn authenticated(&self) -> bool {
        self.session.credential.is_authenticated()
    }

    fn cut(&self, cut: Cut) -> Reply {
        match cut {
            Cut::HandshakeTimeout(limit) => Reply::err(format!(
                "Protocol error: no AUTH (or, without authentication, no command) within {}s \
                 (--handshake-timeout-secs)",
                limit.as_secs()
            )),
            Cut::Evicted => Reply::err(
                "max number of clients reached: this connection was closed to admit a new one \
                 (it was the one idle the longest)",
            ),
            Cut::Memory(exhausted) => Reply::err(exhausted),
            Cut::Largest { held } => Reply::err(format!(
                "closed to free memory: the node's memory for client requests and answers was \
                 spent and this connection held the most ({held} bytes); retry later"
            )),
        }
    }

    fn shutting_down(&self) -> Reply {
        Reply::err("the server is shutting down")
    }
}

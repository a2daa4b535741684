//! PLACEHOLDER: one client connection. The protocol branch (`proto`)
//! replaces this file with the real frame loop; only the two signatures
//! below are the contract with the accept loop in `server/mod.rs`.

use std::sync::Arc;

use tokio::io::AsyncReadExt;
use tokio::net::TcpStream;

use crate::server::ServerContext;

/// Serves one accepted connection until the peer closes it or the server
/// shuts down. Placeholder: reads and discards bytes.
pub async fn serve_connection(mut stream: TcpStream, ctx: Arc<ServerContext>) {
    let mut buf = [0u8; 4096];
    loop {
        tokio::select! {
            _ = ctx.shutdown.wait() => return,
            read = stream.read(&mut buf) => match read {
                Ok(0) | Err(_) => return,
                Ok(_) => {}
            },
        }
    }
}

/// Refuses a connection over `--max-connections`. Placeholder: closes it.
pub async fn reject_connection(stream: TcpStream, _ctx: Arc<ServerContext>) {
    drop(stream);
}

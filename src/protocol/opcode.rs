//! Opcode bytes: the first byte of every frame body.
//!
//! Ranges are reserved so that later features never collide
//! (docs/PROTOCOL.md section 3 lists what each holds):
//!
//! | range       | use                                                  |
//! |-------------|------------------------------------------------------|
//! | 0x01..=0x3F | client requests (0x12..=0x3F unassigned)             |
//! | 0x40..=0x5F | replication, replica to master (0x42.. unassigned)   |
//! | 0x60..=0x6F | backup requests (0x61.. unassigned)                  |
//! | 0x70..=0x7F | later connection-level requests (all unassigned)     |
//! | 0x80..=0xBF | responses to client requests (0x8E.. unassigned)     |
//! | 0xC0..=0xDF | replication and backup streams, server to client     |
//! | 0xE0..=0xFE | unassigned                                           |
//! | 0xFF        | error response                                       |
//!
//! Bit 0x80 set means "sent by the server".

// Requests.
pub const HELLO: u8 = 0x01;
pub const PING: u8 = 0x02;
pub const GET: u8 = 0x03;
pub const PUT: u8 = 0x04;
pub const DELETE: u8 = 0x05;
pub const EXISTS: u8 = 0x06;
pub const BATCH: u8 = 0x07;
pub const COMPACT: u8 = 0x08;
pub const STATS: u8 = 0x09;
/// Admin: make this replica the master (new epoch).
pub const PROMOTE: u8 = 0x0A;
/// Admin: follow the master at the given address.
pub const REPLICATE: u8 = 0x0B;
// Protocol version 2: key expiry.
/// PUT with an expiry.
pub const PUT_EXPIRING: u8 = 0x0C;
/// Set a key's expiry, under conditions (Redis's `PEXPIRE`/`PEXPIREAT`).
pub const EXPIRE: u8 = 0x0D;
/// Remove a key's expiry.
pub const PERSIST: u8 = 0x0E;
/// Ask when a key expires.
pub const TTL: u8 = 0x0F;
/// Admin: hand the master's seat to a caught-up replica (planned
/// switchover, with a coordinator).
pub const SWITCHOVER: u8 = 0x10;
/// Ask the coordinator's view of the cluster: holder, epoch, lease, in-sync
/// set, members.
pub const CLUSTER_STATUS: u8 = 0x11;

/// Backup: answer with a snapshot stream (REPL_FULL, REPL_FILE,
/// REPL_FILE_DATA..., REPL_STREAM), then close the connection.
pub const BACKUP: u8 = 0x60;

// Replication stream, replica to master.
pub const REPL_SYNC: u8 = 0x40;
pub const REPL_ACK: u8 = 0x41;
// Replication stream, master to replica.
pub const REPL_TRUNCATE: u8 = 0xC0;
pub const REPL_FULL: u8 = 0xC1;
pub const REPL_FILE: u8 = 0xC2;
pub const REPL_FILE_DATA: u8 = 0xC3;
pub const REPL_STREAM: u8 = 0xC4;
pub const REPL_CHUNK: u8 = 0xC5;
pub const REPL_HEARTBEAT: u8 = 0xC6;

// Responses.
pub const OK: u8 = 0x80;
pub const HELLO_OK: u8 = 0x81;
pub const PONG: u8 = 0x82;
pub const VALUE: u8 = 0x83;
pub const NOT_FOUND: u8 = 0x84;
pub const DELETED: u8 = 0x85;
pub const EXISTS_ANSWER: u8 = 0x86;
pub const COMPACTED: u8 = 0x87;
pub const STATS_ANSWER: u8 = 0x88;
/// A write reached a replica: here is the master to send it to.
pub const REDIRECT: u8 = 0x89;
/// EXPIRE and PERSIST: whether the key's expiry changed.
pub const APPLIED: u8 = 0x8A;
/// TTL's answer.
pub const TTL_ANSWER: u8 = 0x8B;
/// SWITCHOVER's answer: the new master.
pub const SWITCHOVER_ANSWER: u8 = 0x8C;
/// CLUSTER_STATUS's answer: a JSON document.
pub const CLUSTER_STATUS_ANSWER: u8 = 0x8D;
pub const ERROR: u8 = 0xFF;

/// Batch operation kinds inside a BATCH request.
pub const BATCH_PUT: u8 = 0x01;
pub const BATCH_DELETE: u8 = 0x02;
/// A put with an expiry (protocol version 2).
pub const BATCH_PUT_EXPIRING: u8 = 0x03;

/// A readable name for logs and error messages.
pub fn name(opcode: u8) -> &'static str {
    match opcode {
        HELLO => "HELLO",
        PING => "PING",
        GET => "GET",
        PUT => "PUT",
        DELETE => "DELETE",
        EXISTS => "EXISTS",
        BATCH => "BATCH",
        COMPACT => "COMPACT",
        STATS => "STATS",
        PROMOTE => "PROMOTE",
        REPLICATE => "REPLICATE",
        PUT_EXPIRING => "PUT_EXPIRING",
        EXPIRE => "EXPIRE",
        PERSIST => "PERSIST",
        TTL => "TTL",
        SWITCHOVER => "SWITCHOVER",
        CLUSTER_STATUS => "CLUSTER_STATUS",
        BACKUP => "BACKUP",
        REPL_SYNC => "REPL_SYNC",
        REPL_ACK => "REPL_ACK",
        REPL_TRUNCATE => "REPL_TRUNCATE",
        REPL_FULL => "REPL_FULL",
        REPL_FILE => "REPL_FILE",
        REPL_FILE_DATA => "REPL_FILE_DATA",
        REPL_STREAM => "REPL_STREAM",
        REPL_CHUNK => "REPL_CHUNK",
        REPL_HEARTBEAT => "REPL_HEARTBEAT",
        REDIRECT => "REDIRECT",
        OK => "OK",
        HELLO_OK => "HELLO_OK",
        PONG => "PONG",
        VALUE => "VALUE",
        NOT_FOUND => "NOT_FOUND",
        DELETED => "DELETED",
        EXISTS_ANSWER => "EXISTS_ANSWER",
        COMPACTED => "COMPACTED",
        STATS_ANSWER => "STATS_ANSWER",
        APPLIED => "APPLIED",
        TTL_ANSWER => "TTL_ANSWER",
        SWITCHOVER_ANSWER => "SWITCHOVER_ANSWER",
        CLUSTER_STATUS_ANSWER => "CLUSTER_STATUS_ANSWER",
        ERROR => "ERROR",
        _ => "UNKNOWN",
    }
}

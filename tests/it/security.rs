//! Authentication and TLS against real `kvstore serve` processes: every
//! outcome of HELLO (no token, wrong token, right token), each token's
//! permissions (read-only, client, admin), rotation on SIGHUP, replicas
//! with the wrong credential, TLS with the right CA, another CA,
//! plaintext against TLS and the reverse, replication over TLS, and RESP
//! `AUTH`. Certificates are generated here with rcgen.

use crate::common;

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::path::{Path, PathBuf};
use std::time::Duration;

use bytes::Bytes;
use common::{cli, http_get, raw_connect, resp_addr, wait_for, Answer, Server, NET_DEADLINE};
use kvstore::client::{BlockingClient, ClientOptions, Error};
use kvstore::protocol::{Auth, ErrorCode, Hello, Request, Response, PROTOCOL_VERSION};
use kvstore::security::{Connector, TlsFiles};
use nix::sys::signal::{kill, Signal};
use nix::unistd::Pid;

const DEADLINE: Duration = Duration::from_secs(30);

/// Token files and certificates in one directory that outlives the test.
struct Secrets {
    dir: tempfile::TempDir,
}

impl Secrets {
    fn new() -> Secrets {
        let secrets = Secrets {
            dir: tempfile::tempdir().expect("tempdir"),
        };
        secrets.write("client", "client-token-1\n");
        secrets.write("readonly", "reader-token\n");
        secrets.write("admin", "admin-token\n");
        secrets
    }

    fn path(&self, name: &str) -> PathBuf {
        self.dir.path().join(name)
    }

    fn arg(&self, name: &str) -> String {
        self.path(name).to_str().expect("utf-8 path").to_string()
    }

    fn write(&self, name: &str, text: &str) {
        std::fs::write(self.path(name), text).expect("write secret");
    }

    /// `serve` flags enabling all three token files.
    fn auth_args(&self) -> Vec<String> {
        vec![
            "--auth-token-file".into(),
            self.arg("client"),
            "--readonly-token-file".into(),
            self.arg("readonly"),
            "--admin-token-file".into(),
            self.arg("admin"),
        ]
    }

    /// Writes a CA (`<prefix>ca.pem`) and a server certificate for
    /// localhost and 127.0.0.1 signed by it (`<prefix>cert.pem`,
    /// `<prefix>key.pem`).
    fn make_pki(&self, prefix: &str) {
        let ca_key = rcgen::KeyPair::generate().expect("CA key");
        let mut ca = rcgen::CertificateParams::new(Vec::<String>::new()).expect("CA params");
        ca.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
        ca.distinguished_name.push(
            rcgen::DnType::CommonName,
            format!("kvstore test CA {prefix}"),
        );
        let ca_cert = ca.self_signed(&ca_key).expect("self-sign CA");
        let key = rcgen::KeyPair::generate().expect("server key");
        let params =
            rcgen::CertificateParams::new(vec!["localhost".to_string(), "127.0.0.1".to_string()])
                .expect("server params");
        let cert = params
            .signed_by(&key, &ca_cert, &ca_key)
            .expect("sign server certificate");
        self.write(&format!("{prefix}ca.pem"), &ca_cert.pem());
        self.write(&format!("{prefix}cert.pem"), &cert.pem());
        self.write(&format!("{prefix}key.pem"), &key.serialize_pem());
    }

    /// `serve` flags for TLS with the `<prefix>` certificate.
    fn tls_args(&self, prefix: &str) -> Vec<String> {
        vec![
            "--tls-cert".into(),
            self.arg(&format!("{prefix}cert.pem")),
            "--tls-key".into(),
            self.arg(&format!("{prefix}key.pem")),
        ]
    }
}

fn strs(v: &[String]) -> Vec<&str> {
    v.iter().map(String::as_str).collect()
}

fn options(token: Option<&[u8]>, ca: Option<&Path>) -> ClientOptions {
    ClientOptions {
        connect_timeout: NET_DEADLINE,
        request_timeout: NET_DEADLINE,
        client_name: "security-test".into(),
        credential: token.map(Bytes::copy_from_slice),
        tls: Connector::from_files(&TlsFiles {
            ca: ca.map(Path::to_path_buf),
            ..TlsFiles::default()
        })
        .expect("load CA"),
        follow_redirects: false,
    }
}

fn connect(addr: SocketAddr, token: Option<&[u8]>) -> Result<BlockingClient, Error> {
    BlockingClient::connect(addr.to_string(), options(token, None))
}

fn server_code(result: Result<impl std::fmt::Debug, Error>) -> ErrorCode {
    match result {
        Err(Error::Server { code, .. }) => code,
        other => panic!("expected a server error, got {other:?}"),
    }
}

fn hello_frame(token: Option<&[u8]>) -> Vec<u8> {
    let mut buf = bytes::BytesMut::new();
    Request::Hello(Hello {
        version: PROTOCOL_VERSION,
        auth: match token {
            Some(t) => Auth::Token(Bytes::copy_from_slice(t)),
            None => Auth::None,
        },
        client_name: "raw".into(),
    })
    .encode(&mut buf)
    .expect("encode HELLO");
    buf.to_vec()
}

fn auth_failures(server: &Server, reason: &str) -> f64 {
    let (_, body) = http_get(server.http_addr, "/metrics").expect("scrape");
    let line = format!("kvstore_auth_failures_total{{reason=\"{reason}\"}} ");
    body.lines()
        .find_map(|l| l.strip_prefix(&line))
        .unwrap_or_else(|| panic!("no {line} in /metrics"))
        .trim()
        .parse()
        .expect("a number")
}

#[test]
fn hello_without_with_a_wrong_and_with_the_right_token() {
    let secrets = Secrets::new();
    let server = Server::start(&strs(&secrets.auth_args()));

    // No token: one clear error, the connection is closed.
    let code = server_code(connect(server.addr, None));
    assert_eq!(code, ErrorCode::AUTH_REQUIRED);

    // Wrong token: AUTH_FAILED, then closed; counted, logged without it.
    let mut raw = raw_connect(server.addr);
    raw.send(&hello_frame(Some(b"not-the-token")))
        .expect("send");
    assert_eq!(raw.until_closed(), vec![ErrorCode::AUTH_FAILED]);
    assert!(auth_failures(&server, "bad_token") >= 1.0);
    wait_for(DEADLINE, "the failure in the log", || {
        server
            .logs()
            .contains("authentication failed: token not accepted")
            .then_some(())
    });
    assert!(
        !server.logs().contains("not-the-token"),
        "a token was logged"
    );

    // Before authenticating: PING works, GET ends the connection.
    let mut raw = raw_connect(server.addr);
    raw.send(&common::request_bytes(&Request::Ping))
        .expect("send");
    assert!(matches!(raw.answer(), Answer::Frame(Response::Pong)));
    raw.send(&common::request_bytes(&Request::Get {
        key: Bytes::from_static(b"k"),
    }))
    .expect("send");
    assert_eq!(raw.until_closed(), vec![ErrorCode::AUTH_REQUIRED]);

    // The right client token reads and writes.
    let mut client = connect(server.addr, Some(b"client-token-1")).expect("authenticated");
    client.put(b"k", b"v").expect("put");
    assert_eq!(client.get(b"k").expect("get").as_deref(), Some(&b"v"[..]));
}

#[test]
fn each_token_does_what_its_permission_allows_and_no_more() {
    let secrets = Secrets::new();
    let server = Server::start(&strs(&secrets.auth_args()));

    let mut reader = connect(server.addr, Some(b"reader-token")).expect("read-only");
    assert_eq!(reader.get(b"k").expect("get"), None);
    assert_eq!(
        server_code(reader.put(b"k", b"v")),
        ErrorCode::PERMISSION_DENIED
    );
    // A request error: the connection stays usable.
    reader.ping().expect("still connected");
    // CLUSTER_STATUS is a read, like STATS.
    let status = reader
        .cluster_status()
        .expect("cluster status with a read token");
    assert_eq!(status.coordinator, "none");

    let mut client = connect(server.addr, Some(b"client-token-1")).expect("client");
    client.put(b"k", b"v").expect("put");
    assert_eq!(server_code(client.promote()), ErrorCode::PERMISSION_DENIED);
    assert_eq!(server_code(client.compact()), ErrorCode::PERMISSION_DENIED);
    assert_eq!(
        server_code(client.replicate("127.0.0.1:1")),
        ErrorCode::PERMISSION_DENIED
    );

    // A client token cannot pull the raw log: REPL_SYNC is refused and
    // the connection does not turn into a replication stream.
    let mut raw = raw_connect(server.addr);
    raw.send(&hello_frame(Some(b"client-token-1")))
        .expect("send");
    assert!(matches!(raw.answer(), Answer::Frame(Response::HelloOk(_))));
    let sync = kvstore::protocol::replication::SyncRequest {
        replica_id: "thief".into(),
        advertise: "127.0.0.1:1".into(),
        epoch: 0,
        end: 0,
        full: true,
        format: 2,
        dir_id: String::new(),
    };
    raw.send(&common::request_bytes(&Request::ReplSync(sync)))
        .expect("send");
    match raw.answer() {
        Answer::Frame(Response::Error { code, .. }) => {
            assert_eq!(code, ErrorCode::PERMISSION_DENIED)
        }
        other => panic!("REPL_SYNC with a client token answered {other:?}"),
    }
    // Nor a backup, from the CLI.
    let backup = |token_file: &str| {
        let to = secrets.path("backups");
        let from = server.addr.to_string();
        let args = [
            "--auth-token-file",
            &secrets.arg(token_file),
            "backup",
            "--from",
            &from,
            "--to",
            to.to_str().expect("utf-8"),
        ];
        cli(server.addr, &args)
    };
    let out = backup("client");
    assert!(!out.status.success(), "a client token took a backup");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("permission denied"), "{stderr}");
    assert!(auth_failures(&server, "permission_denied") >= 5.0);

    // The admin token does all of it.
    let mut admin = connect(server.addr, Some(b"admin-token")).expect("admin");
    admin.compact().expect("compact");
    let out = backup("admin");
    assert!(
        out.status.success(),
        "admin backup: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

#[test]
fn the_cli_sends_the_token_from_its_file_and_says_when_one_is_missing() {
    let secrets = Secrets::new();
    let server = Server::start(&strs(&secrets.auth_args()));
    let token = secrets.arg("client");
    let out = cli(server.addr, &["--auth-token-file", &token, "put", "a", "1"]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let out = cli(server.addr, &["read", "a", "--auth-token-file", &token]);
    assert_eq!(out.stdout, b"1");
    let out = cli(server.addr, &["read", "a"]);
    assert!(!out.status.success());
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("requires a token"), "{stderr}");
}

#[test]
fn sighup_rotates_tokens_with_a_window_where_both_work() {
    let secrets = Secrets::new();
    let mut args = secrets.auth_args();
    args.extend(["--resp-listen".to_string(), "127.0.0.1:0".into()]);
    let server = Server::start(&strs(&args));
    let hup = || kill(Pid::from_raw(server.pid() as i32), Signal::SIGHUP).expect("SIGHUP");
    // Connections opened with the token that will be removed.
    let mut held = connect(server.addr, Some(b"client-token-1")).expect("held connection");
    let mut held_resp = resp_connect(resp_addr(&server));
    assert_eq!(resp(&mut held_resp, &["AUTH", "client-token-1"]), "+OK\r\n");

    // Old and new both in the file.
    secrets.write("client", "client-token-1\nclient-token-2\n");
    hup();
    wait_for(DEADLINE, "the new token to be accepted", || {
        connect(server.addr, Some(b"client-token-2")).ok()
    });
    connect(server.addr, Some(b"client-token-1")).expect("old token still works");

    // The old one removed.
    secrets.write("client", "client-token-2\n");
    hup();
    wait_for(DEADLINE, "the old token to be refused", || {
        match connect(server.addr, Some(b"client-token-1")) {
            Err(Error::Server { code, .. }) if code == ErrorCode::AUTH_FAILED => Some(()),
            _ => None,
        }
    });
    connect(server.addr, Some(b"client-token-2")).expect("new token works");
    // Connections that authenticated with the removed token are cut at
    // their next request, on both protocols.
    assert_eq!(server_code(held.get(b"k")), ErrorCode::AUTH_FAILED);
    assert!(resp(&mut held_resp, &["GET", "k"]).starts_with("-WRONGPASS"));
    assert_eq!(
        resp(&mut held_resp, &["PING"]),
        "",
        "RESP connection left open"
    );

    // A broken file keeps what was loaded.
    secrets.write("client", "# nothing\n");
    hup();
    wait_for(DEADLINE, "the reload failure in the log", || {
        server.logs().contains("reload failed").then_some(())
    });
    connect(server.addr, Some(b"client-token-2")).expect("still the previous tokens");
}

/// A replica with a token the master does not accept, or one without the
/// admin permission, gets no log, and the master's log says why.
#[test]
fn a_replica_with_the_wrong_credential_cannot_pull_the_log() {
    let secrets = Secrets::new();
    let master = Server::start(&strs(&secrets.auth_args()));
    let mut admin = connect(master.addr, Some(b"admin-token")).expect("admin");
    admin.put(b"secret-key", b"secret-value").expect("put");

    secrets.write("wrong", "some-other-token\n");
    let replica_args = |token_file: &str| {
        vec![
            "--role".to_string(),
            "replica".into(),
            "--master-addr".into(),
            master.addr.to_string(),
            "--admin-token-file".into(),
            secrets.arg(token_file),
        ]
    };
    let wrong = Server::start_unready(&strs(&replica_args("wrong")));
    wait_for(DEADLINE, "the master to log the refused replica", || {
        master
            .logs()
            .contains("authentication failed: token not accepted")
            .then_some(())
    });
    // Its own log names the refusal too.
    wait_for(DEADLINE, "the replica to log the refusal", || {
        wrong.logs().contains("AUTH_FAILED").then_some(())
    });

    // A client token as the replica's credential: authenticated, but
    // REPL_SYNC is refused.
    let client_as_admin = Server::start_unready(&strs(&replica_args("client")));
    wait_for(DEADLINE, "the master to log the missing permission", || {
        master
            .logs()
            .contains("REPL_SYNC needs a token with the admin permission")
            .then_some(())
    });
    // Neither got the data (each accepts its own token file's token).
    for (replica, token) in [
        (&wrong, &b"some-other-token"[..]),
        (&client_as_admin, &b"client-token-1"[..]),
    ] {
        let mut c = connect(replica.addr, Some(token)).expect("replica answers");
        assert_eq!(c.get(b"secret-key").expect("get"), None, "log leaked");
    }
}

#[test]
fn tls_with_the_right_ca_another_ca_and_plaintext_both_ways() {
    let secrets = Secrets::new();
    secrets.make_pki("");
    secrets.make_pki("other-");
    let server = Server::start(&strs(&secrets.tls_args("")));
    let ca = secrets.path("ca.pem");

    let mut client = BlockingClient::connect(server.addr.to_string(), options(None, Some(&ca)))
        .expect("TLS with the right CA");
    client.put(b"k", b"over tls").expect("put");
    assert_eq!(
        client.get(b"k").expect("get").as_deref(),
        Some(&b"over tls"[..])
    );

    // Another CA: the handshake fails, and says it is TLS.
    let other = secrets.path("other-ca.pem");
    match BlockingClient::connect(server.addr.to_string(), options(None, Some(&other))) {
        Err(e @ Error::Connect { .. }) => {
            assert!(e.to_string().contains("TLS handshake"), "{e}")
        }
        other => panic!("a certificate from another CA was accepted: {other:?}"),
    }

    // Plaintext against TLS: an answer saying so, not a timeout.
    assert_eq!(
        server_code(connect(server.addr, None)),
        ErrorCode::TLS_REQUIRED
    );
    let out = cli(server.addr, &["read", "k"]);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("requires TLS"), "{stderr}");
    // The CLI with the CA.
    let out = cli(
        server.addr,
        &["--tls-ca", ca.to_str().expect("utf-8"), "read", "k"],
    );
    assert_eq!(out.stdout, b"over tls");

    // TLS against a plaintext port: closed at once, an error naming TLS.
    let plain = Server::start(&[]);
    match BlockingClient::connect(plain.addr.to_string(), options(None, Some(&ca))) {
        Err(e @ Error::Connect { .. }) => {
            assert!(e.to_string().contains("TLS handshake"), "{e}")
        }
        other => panic!("TLS to a plaintext port: {other:?}"),
    }
    // Counted as the server ends the connection, after the client saw
    // it closed.
    wait_for(Duration::from_secs(10), "the TLS failure counted", || {
        (auth_failures(&plain, "tls") >= 1.0).then_some(())
    });
}

#[test]
fn replication_over_tls_with_tokens_converges() {
    let secrets = Secrets::new();
    secrets.make_pki("");
    let mut args = secrets.auth_args();
    args.extend(secrets.tls_args(""));
    args.extend(["--tls-ca".to_string(), secrets.arg("ca.pem")]);
    let master = Server::start(&strs(&args));
    let ca = secrets.path("ca.pem");
    let mut client = BlockingClient::connect(
        master.addr.to_string(),
        options(Some(b"client-token-1"), Some(&ca)),
    )
    .expect("client over TLS");
    for i in 0..200 {
        client
            .put(format!("k{i}").as_bytes(), format!("v{i}").as_bytes())
            .expect("put");
    }
    let mut replica_args = args.clone();
    replica_args.extend([
        "--role".to_string(),
        "replica".into(),
        "--master-addr".into(),
        master.addr.to_string(),
    ]);
    let replica = Server::start_unready(&strs(&replica_args));
    let mut reader = wait_for(DEADLINE, "a TLS connection to the replica", || {
        BlockingClient::connect(
            replica.addr.to_string(),
            options(Some(b"reader-token"), Some(&ca)),
        )
        .ok()
    });
    wait_for(DEADLINE, "the replica to have every key", || {
        (reader.get(b"k199").ok()?.as_deref() == Some(&b"v199"[..])).then_some(())
    });
    for i in 0..200 {
        let value = reader.get(format!("k{i}").as_bytes()).expect("get");
        assert_eq!(value.as_deref(), Some(format!("v{i}").as_bytes()));
    }
}

/// One RESP request over a plain socket; returns the raw reply text, or
/// "" when the server closed.
fn resp(stream: &mut TcpStream, command: &[&str]) -> String {
    let mut out = format!("*{}\r\n", command.len());
    for arg in command {
        out.push_str(&format!("${}\r\n{arg}\r\n", arg.len()));
    }
    if stream.write_all(out.as_bytes()).is_err() {
        return String::new();
    }
    let mut buf = [0u8; 4096];
    match stream.read(&mut buf) {
        Ok(n) => String::from_utf8_lossy(&buf[..n]).into_owned(),
        Err(_) => String::new(),
    }
}

fn resp_connect(addr: SocketAddr) -> TcpStream {
    let s = TcpStream::connect_timeout(&addr, NET_DEADLINE).expect("connect");
    s.set_read_timeout(Some(NET_DEADLINE)).expect("timeout");
    s
}

#[test]
fn resp_auth_like_redis() {
    let secrets = Secrets::new();
    let mut args = secrets.auth_args();
    args.extend(["--resp-listen".to_string(), "127.0.0.1:0".into()]);
    let server = Server::start(&strs(&args));
    let addr = resp_addr(&server);

    let mut s = resp_connect(addr);
    assert!(resp(&mut s, &["GET", "k"]).starts_with("-NOAUTH"));
    assert_eq!(resp(&mut s, &["PING"]), "+PONG\r\n");
    assert!(resp(&mut s, &["AUTH", "wrong"]).starts_with("-WRONGPASS"));
    assert_eq!(resp(&mut s, &["PING"]), "", "open after a wrong token");

    let mut s = resp_connect(addr);
    assert_eq!(resp(&mut s, &["AUTH", "reader-token"]), "+OK\r\n");
    assert_eq!(resp(&mut s, &["GET", "k"]), "$-1\r\n");
    assert!(resp(&mut s, &["SET", "k", "v"]).starts_with("-NOPERM"));

    let mut s = resp_connect(addr);
    assert_eq!(
        resp(&mut s, &["AUTH", "default", "client-token-1"]),
        "+OK\r\n"
    );
    assert_eq!(resp(&mut s, &["SET", "k", "v"]), "+OK\r\n");

    // A real client: redis-cli -a.
    let out = std::process::Command::new("redis-cli")
        .args(["-h", "127.0.0.1", "-p", &addr.port().to_string()])
        .args(["--no-auth-warning", "-a", "client-token-1", "GET", "k"])
        .output()
        .expect("run redis-cli (`make deps` installs Debian's redis-tools)");
    assert_eq!(String::from_utf8_lossy(&out.stdout).trim(), "v");
}

#[test]
fn resp_over_tls_refuses_plaintext_and_serves_redis_cli_with_the_ca() {
    let secrets = Secrets::new();
    secrets.make_pki("");
    let mut args = secrets.tls_args("");
    args.extend(["--resp-listen".to_string(), "127.0.0.1:0".into()]);
    let server = Server::start(&strs(&args));
    let addr = resp_addr(&server);
    let mut s = resp_connect(addr);
    assert!(resp(&mut s, &["PING"]).contains("requires TLS"));

    let out = std::process::Command::new("redis-cli")
        .args(["-h", "127.0.0.1", "-p", &addr.port().to_string()])
        .args(["--tls", "--cacert", &secrets.arg("ca.pem"), "SET", "t", "1"])
        .output()
        .expect("run redis-cli");
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(stdout.trim(), "OK", "redis-cli --tls: {stdout} {stderr}");
}

/// A token or certificate file that cannot be used stops the node at
/// start, exit code 2, one line naming the setting and the file.
#[test]
fn unusable_token_and_certificate_files_fail_at_start_naming_them() {
    let secrets = Secrets::new();
    secrets.write("empty", "# no token yet\n");
    secrets.write("not-pem", "hello\n");
    let missing = secrets.arg("missing");
    let (empty, not_pem) = (secrets.arg("empty"), secrets.arg("not-pem"));
    let local = ["--listen", "127.0.0.1:0", "--http-listen", "127.0.0.1:0"];
    let cases: [(&[&str], &str, &str); 4] = [
        (
            &["--admin-token-file", &missing],
            "--admin-token-file",
            &missing,
        ),
        (
            &["--auth-token-file", &empty],
            "KVSTORE_AUTH_TOKEN_FILE",
            &empty,
        ),
        (
            &["--tls-cert", &not_pem, "--tls-key", &not_pem],
            "--tls-cert",
            &not_pem,
        ),
        (&["--tls-cert", &not_pem], "--tls-key", "required"),
    ];
    for (flags, setting, detail) in cases {
        let mut args = vec!["serve"];
        args.extend(local);
        args.extend(flags);
        let (status, stderr) = common::run_to_exit(&args, &[], DEADLINE);
        assert_eq!(status.code(), Some(2), "{flags:?}: {stderr}");
        assert!(
            stderr.contains(setting) && stderr.contains(detail),
            "{flags:?}: {stderr}"
        );
    }
}

/// On a TLS-only port, a plaintext frame whose first byte happens to be
/// 0x16 (a TLS handshake record's type: a frame of N = 22 + 256·k bytes)
/// gets TLS_REQUIRED like any plaintext client, not a failed handshake.
#[test]
fn a_plaintext_frame_starting_with_0x16_on_a_tls_port_gets_tls_required() {
    let secrets = Secrets::new();
    secrets.make_pki("");
    let server = Server::start(&strs(&secrets.tls_args("")));
    // GET of a 17-byte key: N = 22, the frame starts 16 00 00 00; and a
    // PUT whose frame starts 16 03 01 00 04 01 00 00 00 like a record.
    let get = common::request_bytes(&Request::Get {
        key: Bytes::from_static(b"seventeen-bytes-k"),
    });
    let put = common::request_bytes(&Request::Put {
        key: Bytes::from_static(b"p"),
        value: Bytes::from(vec![b'v'; 66_326 - 10]),
    });
    for (what, bytes) in [("GET", get), ("PUT", put)] {
        assert_eq!(bytes[0], 0x16, "{what}");
        let mut s = raw_connect(server.addr);
        s.send(&bytes).ok();
        match s.answer() {
            Answer::Frame(Response::Error { code, .. }) => {
                assert_eq!(code, ErrorCode::TLS_REQUIRED, "{what}")
            }
            other => panic!("{what}: expected TLS_REQUIRED, got {other:?}"),
        }
    }
}

/// A peer that starts a TLS handshake and stalls holds only its own
/// connection: other clients are served meanwhile.
#[test]
fn a_stalled_handshake_does_not_hold_up_other_clients() {
    let secrets = Secrets::new();
    secrets.make_pki("");
    let server = Server::start(&strs(&secrets.tls_args("")));
    let ca = secrets.path("ca.pem");
    let mut stalled = Vec::new();
    for _ in 0..20 {
        let mut s = TcpStream::connect_timeout(&server.addr, NET_DEADLINE).expect("connect");
        s.write_all(&[0x16, 0x03, 0x01])
            .expect("half a record header");
        stalled.push(s);
    }
    let mut client = BlockingClient::connect(server.addr.to_string(), options(None, Some(&ca)))
        .expect("served while others stall");
    client.put(b"k", b"v").expect("put");
    assert_eq!(client.get(b"k").expect("get").as_deref(), Some(&b"v"[..]));
}

/// Removing the admin token a replica streams with cuts its stream at
/// once; it gets the log again when it presents the new token.
#[test]
fn removing_the_replicas_admin_token_cuts_its_stream_until_it_has_the_new_one() {
    let secrets = Secrets::new();
    let master = Server::start(&strs(&secrets.auth_args()));
    secrets.write("replica-admin", "admin-token\n");
    let replica = Server::start_unready(&[
        "--role",
        "replica",
        "--master-addr",
        &master.addr.to_string(),
        "--admin-token-file",
        &secrets.arg("replica-admin"),
    ]);
    let hup = |s: &Server| kill(Pid::from_raw(s.pid() as i32), Signal::SIGHUP).expect("SIGHUP");
    let has = |token: &[u8], key: &[u8]| {
        let mut c = connect(replica.addr, Some(token)).ok()?;
        c.get(key).ok()?.map(|_| ())
    };
    let mut writer = connect(master.addr, Some(b"client-token-1")).expect("client");
    writer.put(b"k1", b"v1").expect("put");
    wait_for(DEADLINE, "the replica to stream k1", || {
        has(b"admin-token", b"k1")
    });

    secrets.write("admin", "admin-token-2\n");
    hup(&master);
    wait_for(DEADLINE, "the master to cut the stream", || {
        master
            .logs()
            .contains("no longer accepted with the admin permission")
            .then_some(())
    });
    wait_for(DEADLINE, "the master to refuse the old token again", || {
        (master
            .logs()
            .matches("authentication failed: token not accepted")
            .count()
            >= 1)
            .then_some(())
    });
    writer.put(b"k2", b"v2").expect("put");

    secrets.write("replica-admin", "admin-token-2\n");
    hup(&replica);
    wait_for(
        DEADLINE,
        "the replica to stream k2 with the new token",
        || has(b"admin-token-2", b"k2"),
    );
}

//! Unit tests for [`Config::from_args`]: defaults, every setting's error
//! names the setting, precedence of flags over ConfigMap variables, and
//! `--role auto`.

use clap::{CommandFactory, Parser};

use super::*;

#[derive(Parser)]
struct Cmd {
    #[command(flatten)]
    args: ServeArgs,
}

/// Parses `flags` as clap does for `kvstore serve` (a refused value becomes
/// the one-line error), then checks them with `env` as the environment.
fn parse(flags: &[&str], env: &[(&str, &str)]) -> Result<Config, ConfigError> {
    let mut argv = vec!["kvstore"];
    argv.extend_from_slice(flags);
    let cmd = match Cmd::try_parse_from(argv) {
        Ok(cmd) => cmd,
        Err(e) => {
            return Err(ConfigError::from_clap(&e, &Cmd::command())
                .unwrap_or_else(|| panic!("not a value error: {e}")))
        }
    };
    Config::from_args(&cmd.args, |k| {
        env.iter()
            .find(|(name, _)| *name == k)
            .map(|(_, v)| v.to_string())
    })
}

#[test]
fn defaults_match_the_design() {
    let c = parse(&[], &[]).unwrap();
    assert_eq!(c.data_dir, PathBuf::from("./data"));
    assert_eq!(c.listen, "0.0.0.0:5555".parse().unwrap());
    assert_eq!(c.http_listen, "0.0.0.0:9555".parse().unwrap());
    assert_eq!(c.durability, Durability::Always);
    assert_eq!(c.role, Role::Master);
    assert_eq!(c.replication_mode, ReplicationMode::Async);
    assert!(c.replication_enabled);
    assert_eq!(c.limits, Limits::default());
    assert_eq!(c.log_format, LogFormat::Text);
    assert_eq!(c.port_file, None);
}

#[test]
fn every_bad_value_names_its_setting() {
    let cases: &[(&str, &str, &str)] = &[
        ("--data-dir", "", "KVSTORE_DATA_DIR"),
        ("--listen", "nowhere", "KVSTORE_LISTEN"),
        ("--listen", "1.2.3.4:99999", "KVSTORE_LISTEN"),
        ("--http-listen", "x", "KVSTORE_HTTP_LISTEN"),
        ("--http-listen", "0.0.0.0:5555", "KVSTORE_HTTP_LISTEN"),
        ("--durability", "sometimes", "KVSTORE_DURABILITY"),
        ("--fsync-interval-ms", "0", "KVSTORE_FSYNC_INTERVAL_MS"),
        ("--segment-max-bytes", "12", "KVSTORE_SEGMENT_MAX_BYTES"),
        ("--role", "leader", "KVSTORE_ROLE"),
        ("--replication-mode", "semi", "KVSTORE_REPLICATION_MODE"),
        (
            "--replication-enabled",
            "maybe",
            "KVSTORE_REPLICATION_ENABLED",
        ),
        ("--max-connections", "0", "KVSTORE_MAX_CONNECTIONS"),
        ("--max-connections", "-5", "KVSTORE_MAX_CONNECTIONS"),
        ("--max-frame-bytes", "10", "KVSTORE_MAX_FRAME_BYTES"),
        (
            "--max-frame-bytes",
            "99999999999",
            "KVSTORE_MAX_FRAME_BYTES",
        ),
        ("--idle-timeout-secs", "soon", "KVSTORE_IDLE_TIMEOUT_SECS"),
        ("--frame-timeout-secs", "0", "KVSTORE_FRAME_TIMEOUT_SECS"),
        (
            "--shutdown-timeout-secs",
            "1e3",
            "KVSTORE_SHUTDOWN_TIMEOUT_SECS",
        ),
        ("--io-threads", "2000", "KVSTORE_IO_THREADS"),
        ("--log-format", "xml", "KVSTORE_LOG_FORMAT"),
        ("--port-file", "", "KVSTORE_PORT_FILE"),
    ];
    for (flag, value, env) in cases {
        let flag_eq = format!("{flag}={value}");
        let err = parse(&[&flag_eq], &[]).expect_err(&flag_eq).to_string();
        assert!(err.contains(flag) && err.contains(env), "{flag_eq}: {err}");
    }
}

#[test]
fn configmap_variables_are_read_as_they_are() {
    let c = parse(
        &[],
        &[
            ("REPLICATION_MODE", "sync"),
            ("REPLICATION_ENABLED", "false"),
        ],
    )
    .unwrap();
    assert_eq!(c.replication_mode, ReplicationMode::Sync);
    assert!(!c.replication_enabled);
    // A flag wins over the ConfigMap.
    let c = parse(
        &["--replication-mode", "async"],
        &[("REPLICATION_MODE", "sync")],
    )
    .unwrap();
    assert_eq!(c.replication_mode, ReplicationMode::Async);
    let err = parse(&[], &[("REPLICATION_MODE", "fast")])
        .unwrap_err()
        .to_string();
    assert!(err.contains("REPLICATION_MODE"), "{err}");
    let err = parse(&["--role", "auto"], &[("MASTER_ORDINAL", "x")])
        .unwrap_err()
        .to_string();
    assert!(err.contains("MASTER_ORDINAL"), "{err}");
}

#[test]
fn role_auto_compares_pod_and_master_ordinals() {
    let env = [("MASTER_ORDINAL", "1"), ("HOSTNAME", "kvstore-1")];
    assert_eq!(parse(&["--role", "auto"], &env).unwrap().role, Role::Master);

    let env = [("MASTER_ORDINAL", "1"), ("HOSTNAME", "kvstore-2")];
    let err = parse(&["--role", "auto"], &env).unwrap_err().to_string();
    assert!(err.contains("--master-addr"), "{err}");
    let c = parse(
        &[
            "--role",
            "auto",
            "--master-addr",
            "kvstore-{ordinal}.kvstore-headless:5555",
        ],
        &env,
    )
    .unwrap();
    assert_eq!(
        c.role,
        Role::Replica {
            master_addr: "kvstore-1.kvstore-headless:5555".into()
        }
    );

    let err = parse(
        &["--role", "auto"],
        &[("MASTER_ORDINAL", "0"), ("HOSTNAME", "box")],
    )
    .unwrap_err()
    .to_string();
    assert!(err.contains("HOSTNAME"), "{err}");
    let err = parse(&["--role", "auto"], &[]).unwrap_err().to_string();
    assert!(err.contains("MASTER_ORDINAL"), "{err}");

    // Replication off: every node stands alone.
    let env = [
        ("MASTER_ORDINAL", "0"),
        ("HOSTNAME", "kvstore-2"),
        ("REPLICATION_ENABLED", "false"),
    ];
    assert_eq!(parse(&["--role", "auto"], &env).unwrap().role, Role::Master);
}

#[test]
fn replica_needs_a_valid_master_addr() {
    assert!(parse(&["--role", "replica"], &[])
        .unwrap_err()
        .to_string()
        .contains("--master-addr"));
    let err = parse(&["--role", "replica", "--master-addr", "nohost"], &[])
        .unwrap_err()
        .to_string();
    assert!(err.contains("--master-addr"), "{err}");
    let c = parse(
        &["--role", "replica", "--master-addr", "kvstore-0:5555"],
        &[],
    )
    .unwrap();
    assert_eq!(
        c.role,
        Role::Replica {
            master_addr: "kvstore-0:5555".into()
        }
    );
    let err = parse(
        &["--role", "replica", "--master-addr", "m:1"],
        &[("REPLICATION_ENABLED", "0")],
    )
    .unwrap_err()
    .to_string();
    assert!(err.contains("--role"), "{err}");
}

#[test]
fn limits_parse() {
    let c = parse(
        &[
            "--max-connections",
            "7",
            "--max-frame-bytes",
            "4096",
            "--idle-timeout-secs",
            "0",
            "--frame-timeout-secs",
            "2",
        ],
        &[],
    )
    .unwrap();
    assert_eq!(c.limits.max_connections, 7);
    assert_eq!(c.limits.max_frame_bytes, 4096);
    assert_eq!(c.limits.idle_timeout, Duration::ZERO);
    assert_eq!(c.limits.frame_timeout, Duration::from_secs(2));
}

#[test]
fn a_refused_value_reads_as_the_documented_line() {
    let err = parse(&["--durability", "sometimes"], &[]).unwrap_err();
    assert_eq!(
        err.to_string(),
        r#"invalid value "sometimes" for --durability (KVSTORE_DURABILITY): expected always, interval or never"#
    );
    let err = parse(&["--role", "leader"], &[]).unwrap_err();
    assert_eq!(
        err.to_string(),
        r#"invalid value "leader" for --role (KVSTORE_ROLE): expected master, replica or auto"#
    );
    let err = parse(&["--log-format", "xml"], &[]).unwrap_err();
    assert!(err.to_string().ends_with("expected text or json"), "{err}");
}

#[test]
fn durability_is_one_type_with_its_interval() {
    let c = parse(
        &["--durability", "interval", "--fsync-interval-ms", "250"],
        &[],
    )
    .unwrap();
    assert_eq!(
        c.durability,
        Durability::Interval(Duration::from_millis(250))
    );
    assert_eq!(c.durability.name(), "interval");
    let c = parse(&["--durability", "never"], &[]).unwrap();
    assert_eq!(c.durability, Durability::Never);
}

#[test]
fn a_coordinator_makes_every_node_a_candidate() {
    let flags = [
        "--coordinator",
        "etcd",
        "--etcd-endpoints",
        "http://127.0.0.1:2379,http://10.0.0.2:2379",
        "--node-id",
        "kvstore-1",
        "--lease-ttl-ms",
        "3000",
        // Not read with a coordinator.
        "--role",
        "replica",
    ];
    let c = parse(&flags, &[]).unwrap();
    assert_eq!(c.role, Role::Candidate);
    let s = c.coordinator.expect("coordinator settings");
    assert_eq!(s.backend, Backend::Etcd);
    assert_eq!(s.etcd_endpoints.len(), 2);
    assert_eq!(s.cluster, "kvstore");
    assert_eq!(s.node_id, "kvstore-1");
    assert_eq!(s.lease_ttl, Some(Duration::from_secs(3)));
    // The node id defaults to the host name.
    let c = parse(&flags[..6], &[("HOSTNAME", "kvstore-2")]).unwrap();
    assert_eq!(c.coordinator.unwrap().node_id, "kvstore-1");
    let c = parse(&flags[..4], &[("HOSTNAME", "kvstore-2")]).unwrap();
    assert_eq!(c.coordinator.unwrap().node_id, "kvstore-2");
    assert!(parse(&[], &[]).unwrap().coordinator.is_none());
}

#[test]
fn coordinator_settings_are_checked() {
    let err = |flags: &[&str]| parse(flags, &[("HOSTNAME", "h")]).unwrap_err().to_string();
    let e = err(&["--coordinator", "etcd"]);
    assert!(
        e.contains("--etcd-endpoints (KVSTORE_ETCD_ENDPOINTS)"),
        "{e}"
    );
    let e = err(&["--coordinator", "zookeeper"]);
    assert!(e.contains("--coordinator (KVSTORE_COORDINATOR)"), "{e}");
    let e = err(&[
        "--coordinator",
        "etcd",
        "--etcd-endpoints",
        "127.0.0.1:2379",
    ]);
    assert!(e.contains("--etcd-endpoints"), "{e}");
    let e = err(&["--node-id", "Node_1"]);
    assert!(e.contains("--node-id (KVSTORE_NODE_ID)"), "{e}");
    let e = err(&["--lease-ttl-ms", "999"]);
    assert!(e.contains("--lease-ttl-ms (KVSTORE_LEASE_TTL_MS)"), "{e}");
    let e = parse(
        &["--coordinator", "kubernetes"],
        &[("HOSTNAME", "Bad_Host")],
    )
    .unwrap_err()
    .to_string();
    assert!(e.contains("--node-id"), "{e}");
}

#[test]
fn the_in_sync_lag_bound_stays_below_the_sync_timeout() {
    let sync = [
        "--coordinator",
        "etcd",
        "--etcd-endpoints",
        "http://127.0.0.1:2379",
        "--node-id",
        "n1",
        "--replication-mode",
        "sync",
    ];
    let lag = |extra: &[&str]| {
        let flags: Vec<&str> = sync.iter().chain(extra).copied().collect();
        parse(&flags, &[]).map(|c| c.ha.in_sync_max_lag)
    };
    assert_eq!(lag(&[]).unwrap(), Duration::from_millis(2000));
    // A shorter sync timeout lowers the default with it.
    assert_eq!(
        lag(&["--sync-timeout-ms", "1000"]).unwrap(),
        Duration::from_millis(500)
    );
    // A value given explicitly is never changed: refused when too long.
    let e = lag(&["--sync-timeout-ms", "1000", "--in-sync-max-lag-ms", "1000"])
        .unwrap_err()
        .to_string();
    assert!(
        e.contains("--in-sync-max-lag-ms (KVSTORE_IN_SYNC_MAX_LAG_MS)"),
        "{e}"
    );
}

#[test]
fn the_pod_selector_is_checked_and_finds_this_pod_by_name() {
    let kube = ["--coordinator", "kubernetes", "--kube-pod-selector"];
    let with = |selector: &str, env: &[(&str, &str)]| {
        let mut flags = kube.to_vec();
        flags.push(selector);
        parse(&flags, env)
    };
    let config = with(
        "app.kubernetes.io/name=kvstore,tier=db",
        &[("HOSTNAME", "kvstore-1")],
    )
    .unwrap();
    let k = config.coordinator.expect("coordinator").kubernetes;
    assert_eq!(k.pod_name.as_deref(), Some("kvstore-1"));
    assert_eq!(
        k.pod_selector.as_deref(),
        Some("app.kubernetes.io/name=kvstore,tier=db")
    );
    for bad in ["kvstore", "=x", "a=b,", "a b=c", "a=b c"] {
        let e = with(bad, &[("HOSTNAME", "kvstore-1")])
            .unwrap_err()
            .to_string();
        assert!(
            e.contains("--kube-pod-selector (KVSTORE_KUBE_POD_SELECTOR)"),
            "{bad}: {e}"
        );
    }
    let e = parse(
        &[
            "--coordinator",
            "etcd",
            "--etcd-endpoints",
            "http://127.0.0.1:2379",
            "--kube-pod-selector",
            "a=b",
        ],
        &[("HOSTNAME", "h")],
    )
    .unwrap_err()
    .to_string();
    assert!(e.contains("--kube-pod-selector"), "{e}");
    // Under `none` nothing labels pods: not read.
    parse(&["--kube-pod-selector", "a=b"], &[]).unwrap();
}

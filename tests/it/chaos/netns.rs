//! A network namespace joined to the root namespace by a veth pair, so a
//! test can partition a node by taking the link down. Created with
//! `ip netns` / `ip link` (root needed); deleted on drop (deleting the
//! namespace deletes the veth pair).

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};

pub struct NetNs {
    pub name: String,
    root_if: String,
    /// Address of the root side of the link.
    pub root_ip: String,
    /// Address of the namespace side.
    pub ns_ip: String,
}

fn ip(args: &[&str]) -> Result<(), String> {
    let out = Command::new("ip")
        .args(args)
        .output()
        .map_err(|e| format!("ip: {e}"))?;
    if out.status.success() {
        Ok(())
    } else {
        Err(format!(
            "ip {}: {}",
            args.join(" "),
            String::from_utf8_lossy(&out.stderr).trim()
        ))
    }
}

impl NetNs {
    /// Creates the namespace and the link, or says why it cannot.
    pub fn create() -> Result<NetNs, String> {
        let id = std::process::id();
        let name = format!("kvc{id}");
        let (root_if, ns_if) = (format!("kvc{id}a"), format!("kvc{id}b"));
        let net = format!("10.{}.{}", 200 + (id >> 16) % 50, (id >> 8) & 0xff);
        let host = (id & 0x3f) * 4;
        let (root_ip, ns_ip) = (format!("{net}.{}", host + 1), format!("{net}.{}", host + 2));
        ip(&["netns", "add", &name])?;
        let ns = NetNs {
            name: name.clone(),
            root_if: root_if.clone(),
            root_ip: root_ip.clone(),
            ns_ip: ns_ip.clone(),
        };
        ip(&[
            "link", "add", &root_if, "type", "veth", "peer", "name", &ns_if,
        ])?;
        ip(&["link", "set", &ns_if, "netns", &name])?;
        ip(&["addr", "add", &format!("{root_ip}/30"), "dev", &root_if])?;
        ip(&["link", "set", &root_if, "up"])?;
        let inside = |args: &[&str]| {
            let mut full = vec!["netns", "exec", &name, "ip"];
            full.extend_from_slice(args);
            ip(&full)
        };
        inside(&["addr", "add", &format!("{ns_ip}/30"), "dev", &ns_if])?;
        inside(&["link", "set", &ns_if, "up"])?;
        inside(&["link", "set", "lo", "up"])?;
        Ok(ns)
    }

    /// Creates the namespace, or says why not (stderr, `!!!!!` line) and
    /// returns `None` when `KVSTORE_CHAOS_ALLOW_NO_NETNS=1` lets the test
    /// pass without it; fails the test otherwise.
    pub fn create_or_skip() -> Option<NetNs> {
        match NetNs::create() {
            Ok(ns) => Some(ns),
            Err(why) => {
                eprintln!("!!!!! chaos: CANNOT CREATE A NETWORK NAMESPACE: {why}");
                assert!(
                    std::env::var("KVSTORE_CHAOS_ALLOW_NO_NETNS").as_deref() == Ok("1"),
                    "cannot create network namespaces ({why}); run as root or set KVSTORE_CHAOS_ALLOW_NO_NETNS=1"
                );
                None
            }
        }
    }

    /// Moves the calling thread, and only it, into the namespace: the
    /// sockets it opens from then on live there (a client beside a node
    /// in the namespace, on its side of any partition).
    pub fn enter(&self) {
        let ns = std::fs::File::open(format!("/run/netns/{}", self.name))
            .expect("open the namespace (ip netns add makes /run/netns/NAME)");
        nix::sched::setns(&ns, nix::sched::CloneFlags::CLONE_NEWNET)
            .expect("setns into the namespace");
    }

    /// Takes the link down (true) or up (false): a partition and its end.
    pub fn partition(&self, cut: bool) {
        ip(&[
            "link",
            "set",
            &self.root_if,
            if cut { "down" } else { "up" },
        ])
        .expect("toggle the veth link");
    }

    /// Runs `kvstore serve` inside the namespace.
    pub fn spawn_serve(&self, bin: &str, dir: &Path, args: &[String]) -> (Child, PathBuf) {
        let ports = dir.join("ports");
        let _ = std::fs::remove_file(&ports);
        let log = std::fs::File::create(dir.join("serve.log")).expect("log");
        let child = Command::new("ip")
            .args(["netns", "exec", &self.name, bin, "serve", "--data-dir"])
            .arg(dir.join("data"))
            .args(["--listen", &format!("{}:0", self.ns_ip)])
            .args(["--http-listen", &format!("{}:0", self.ns_ip)])
            .arg("--port-file")
            .arg(&ports)
            .args(args)
            .env_remove("RUST_LOG")
            .stdin(Stdio::null())
            .stdout(log.try_clone().expect("log"))
            .stderr(log)
            .spawn()
            .expect("spawn kvstore in the namespace");
        (child, ports)
    }
}

impl Drop for NetNs {
    fn drop(&mut self) {
        let _ = ip(&["netns", "del", &self.name]);
        let _ = ip(&["link", "del", &self.root_if]);
    }
}

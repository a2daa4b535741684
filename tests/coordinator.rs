//! The coordinator layer (src/coordinator/) against its real backends:
//! the rules of docs/FAILOVER.md, written once in `coordinator/conformance.rs`
//! and run against etcd (Debian's `etcd-server`, started per test on
//! loopback) and against the Kubernetes Lease API stand-in
//! (`common/kube_standin.rs`: no API server can run here), plus what is
//! particular to each backend.

#[cfg(any(feature = "etcd", feature = "kubernetes"))]
#[path = "coordinator/conformance.rs"]
mod conformance;

#[cfg(feature = "etcd")]
#[path = "common/etcd.rs"]
mod etcd_server;

#[cfg(feature = "etcd")]
#[path = "coordinator/etcd.rs"]
mod etcd;

#[cfg(feature = "kubernetes")]
#[path = "common/kube_standin.rs"]
mod kube_standin;

#[cfg(feature = "kubernetes")]
#[path = "coordinator/kubernetes.rs"]
mod kubernetes;

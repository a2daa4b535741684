//! The coordinator layer (src/coordinator/) against its real backends:
//! the rules of docs/FAILOVER.md, written once in `coordinator/conformance.rs`
//! and run against etcd (Debian's `etcd-server`, started per test on
//! loopback) and against the Kubernetes Lease API stand-in
//! (`common/kube_standin.rs`: no API server can run here), plus what is
//! particular to each backend.

#[cfg(any(feature = "etcd", feature = "kubernetes"))]
mod conformance;

#[cfg(feature = "etcd")]
mod etcd;

#[cfg(feature = "kubernetes")]
mod kubernetes;

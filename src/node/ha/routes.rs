//! Routing follows the master: while this node leads, it keeps the
//! routing marks (on Kubernetes, the pods' `kvstore.io/role` labels that
//! the master Service selects: `coordinator::Routing`) pointing at itself.
//!
//! Invariants:
//! - Marks are written only while the term's fence holds; the coordinator
//!   layer makes a late write harmless (marks only move forward in epochs).
//! - A failure is logged and retried; it never holds up a write: this runs
//!   beside the term, not in the write path.
//! - Marks are checked again every period, so a pod created since (a
//!   restarted or added one, which starts without the label) gets its
//!   `replica` label, and one relabelled by hand gets it back.

use std::sync::Arc;
use std::time::Duration;

use tracing::{debug, info, warn};

use super::Ha;
use crate::coordinator::Routing;

/// The longest wait before a failed update is tried again.
const RETRY_AT_MOST: Duration = Duration::from_secs(1);

/// Keeps the marks of the term of `epoch`; runs until aborted (with the
/// term).
pub(super) async fn keep_marked(
    ha: Arc<Ha>,
    routing: Arc<dyn Routing>,
    epoch: u32,
) -> &'static str {
    let retry = ha.period.min(RETRY_AT_MOST);
    let mut failing = false;
    loop {
        if !ha.may_write() {
            // Fenced: the term is ending; the lead loop ends this task.
            tokio::time::sleep(retry).await;
            continue;
        }
        match routing.mark_master(epoch).await {
            Ok(changed) => {
                if changed > 0 || failing {
                    info!(
                        epoch,
                        changed, "routing points at this node (pod label kvstore.io/role=master)"
                    );
                }
                failing = false;
                tokio::time::sleep(ha.period).await;
            }
            Err(e) => {
                if failing {
                    debug!(epoch, "routing update failed again: {e}");
                } else {
                    warn!(
                        epoch,
                        "cannot point routing at this node ({e}); retrying, writes go on meanwhile"
                    );
                }
                failing = true;
                tokio::time::sleep(retry).await;
            }
        }
    }
}

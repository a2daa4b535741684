//! The figures the engine workload reports and the table they are printed
//! in, shared like `workload.rs` by `benches/engine.rs` and
//! `benches/compare` through `#[path]`. A figure's `id` is stable: it is
//! how a child process of the comparison names its results.

use std::fmt::Write as _;

/// How a figure compares across stores.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub enum Better {
    Higher,
    Lower,
}

/// One figure the workload reports. `id` is stable (it crosses a process
/// boundary in `benches/compare`); `label` is for people.
#[derive(Clone, Copy, Debug)]
pub struct Metric {
    pub id: &'static str,
    pub label: &'static str,
    pub unit: Unit,
    pub better: Better,
}

#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub enum Unit {
    OpsPerSec,
    Seconds,
    Bytes,
    BytesPerKey,
    Ratio,
    Count,
}

const fn metric(id: &'static str, label: &'static str, unit: Unit, better: Better) -> Metric {
    Metric {
        id,
        label,
        unit,
        better,
    }
}

pub const PUTS_NEVER: Metric = metric(
    "puts_never",
    "puts, no fsync",
    Unit::OpsPerSec,
    Better::Higher,
);
pub const PUTS_NEVER_CPU: Metric = metric(
    "puts_never_cpu",
    "  (puts per CPU-second)",
    Unit::OpsPerSec,
    Better::Higher,
);
pub const GETS_1T_CPU: Metric = metric(
    "gets_1t_cpu",
    "  (gets per CPU-second)",
    Unit::OpsPerSec,
    Better::Higher,
);
pub const GETS_1T_FIRST: Metric = metric(
    "gets_1t_first",
    "gets, 1 thread, first pass",
    Unit::OpsPerSec,
    Better::Higher,
);
pub const GETS_1T: Metric = metric("gets_1t", "gets, 1 thread", Unit::OpsPerSec, Better::Higher);
pub const GETS_1T_WARMED: Metric = metric(
    "gets_1t_warmed",
    "gets, 1 thread, warmed runs",
    Unit::OpsPerSec,
    Better::Higher,
);
pub const GETS_2T: Metric = metric(
    "gets_2t",
    "gets, 2 threads",
    Unit::OpsPerSec,
    Better::Higher,
);
pub const SYNCED_1W: Metric = metric(
    "synced_1w",
    "synced puts, 1 writer",
    Unit::OpsPerSec,
    Better::Higher,
);
pub const BARE_SYNC_1W: Metric = metric(
    "bare_sync_1w",
    "bare 128 B append + fdatasync",
    Unit::OpsPerSec,
    Better::Higher,
);
pub const SYNCED_VS_BARE: Metric = metric(
    "synced_vs_bare",
    "synced puts, 1 writer / bare",
    Unit::Ratio,
    Better::Higher,
);
pub const BARE_OVERWRITE_1W: Metric = metric(
    "bare_overwrite_1w",
    "bare 128 B overwrite + fdatasync",
    Unit::OpsPerSec,
    Better::Higher,
);
pub const SYNCED_VS_OVERWRITE: Metric = metric(
    "synced_vs_overwrite",
    "synced puts, 1 writer / overwrite",
    Unit::Ratio,
    Better::Higher,
);
pub const SYNCED_64W: Metric = metric(
    "synced_64w",
    "synced puts, 64 writers",
    Unit::OpsPerSec,
    Better::Higher,
);
pub const SYNCED_SCALE: Metric = metric(
    "synced_scale",
    "64 writers / 1 writer",
    Unit::Ratio,
    Better::Higher,
);
pub const PUTS_PER_FSYNC_64W: Metric = metric(
    "puts_per_fsync_64w",
    "puts per fsync, 64 writers",
    Unit::Ratio,
    Better::Higher,
);
pub const SYNCED_1T: Metric = metric(
    "synced_1t",
    "synced puts, 1 task",
    Unit::OpsPerSec,
    Better::Higher,
);
pub const SYNCED_64T: Metric = metric(
    "synced_64t",
    "synced puts, 64 tasks on 2 threads",
    Unit::OpsPerSec,
    Better::Higher,
);
pub const SYNCED_SCALE_T: Metric = metric(
    "synced_scale_t",
    "64 tasks / 1 task",
    Unit::Ratio,
    Better::Higher,
);
pub const PUTS_PER_FSYNC_64T: Metric = metric(
    "puts_per_fsync_64t",
    "puts per fsync, 64 tasks",
    Unit::Ratio,
    Better::Higher,
);
pub const REOPEN: Metric = metric(
    "reopen_s",
    "reopen + first get (first)",
    Unit::Seconds,
    Better::Lower,
);
pub const REOPEN_BEST: Metric = metric(
    "reopen_best_s",
    "reopen + first get (best of 3)",
    Unit::Seconds,
    Better::Lower,
);
pub const REOPEN_CPU: Metric = metric(
    "reopen_cpu_s",
    "  (reopen CPU-seconds, least)",
    Unit::Seconds,
    Better::Lower,
);
pub const REOPEN_UNCLEAN: Metric = metric(
    "reopen_unclean_s",
    "reopen + first get, as after a crash",
    Unit::Seconds,
    Better::Lower,
);
pub const DISK_BYTES: Metric = metric(
    "disk_bytes",
    "disk bytes (file lengths)",
    Unit::Bytes,
    Better::Lower,
);
pub const DISK_ALLOC: Metric = metric(
    "disk_alloc",
    "disk blocks allocated",
    Unit::Bytes,
    Better::Lower,
);
pub const DISK_PER_KEY: Metric = metric(
    "disk_per_key",
    "disk bytes per key",
    Unit::BytesPerKey,
    Better::Lower,
);
pub const KEYDIR_PER_KEY: Metric = metric(
    "keydir_per_key",
    "keydir bytes per key",
    Unit::BytesPerKey,
    Better::Lower,
);
pub const SYNCED_1W_OPS: Metric = metric(
    "synced_1w_ops",
    "  (ops done, 1 writer)",
    Unit::Count,
    Better::Higher,
);
pub const SYNCED_64W_OPS: Metric = metric(
    "synced_64w_ops",
    "  (ops done, 64 writers)",
    Unit::Count,
    Better::Higher,
);

/// Every metric, in table order.
pub const METRICS: &[Metric] = &[
    PUTS_NEVER,
    PUTS_NEVER_CPU,
    GETS_1T_FIRST,
    GETS_1T,
    GETS_1T_CPU,
    GETS_1T_WARMED,
    GETS_2T,
    SYNCED_1W,
    BARE_SYNC_1W,
    SYNCED_VS_BARE,
    BARE_OVERWRITE_1W,
    SYNCED_VS_OVERWRITE,
    SYNCED_64W,
    SYNCED_SCALE,
    PUTS_PER_FSYNC_64W,
    SYNCED_1T,
    SYNCED_64T,
    SYNCED_SCALE_T,
    PUTS_PER_FSYNC_64T,
    REOPEN,
    REOPEN_BEST,
    REOPEN_CPU,
    REOPEN_UNCLEAN,
    DISK_BYTES,
    DISK_ALLOC,
    DISK_PER_KEY,
    KEYDIR_PER_KEY,
    SYNCED_1W_OPS,
    SYNCED_64W_OPS,
];

pub type Results = Vec<(&'static str, f64)>;

/// Formats one figure for the table.
pub fn format_value(unit: Unit, v: f64) -> String {
    match unit {
        Unit::OpsPerSec => {
            if v >= 1e6 {
                format!("{:.2} M/s", v / 1e6)
            } else if v >= 1e3 {
                format!("{:.1} k/s", v / 1e3)
            } else {
                format!("{v:.0} /s")
            }
        }
        Unit::Seconds => {
            if v < 0.01 {
                format!("{:.2} ms", v * 1e3)
            } else {
                format!("{v:.3} s")
            }
        }
        Unit::Bytes => format!("{:.1} MiB", v / (1024.0 * 1024.0)),
        Unit::BytesPerKey => format!("{v:.1} B"),
        Unit::Ratio => format!("{v:.2}x"),
        Unit::Count => format!("{v:.0}"),
    }
}

/// The table: one row per metric, one column per store and, when there is
/// more than one store, kvstore / best peer (for figures where lower is
/// better, a ratio below 1 means kvstore is ahead).
pub fn table(columns: &[(String, Results)]) -> String {
    let mut s = String::new();
    let peers = columns.len() > 1;
    let _ = write!(s, "| {:<30} |", "metric");
    for (name, _) in columns {
        let _ = write!(s, " {name:>12} |");
    }
    if peers {
        let _ = write!(s, " {:>22} |", "kvstore / best peer");
    }
    s.push('\n');
    let _ = write!(s, "|{}|", "-".repeat(32));
    for _ in columns {
        let _ = write!(s, "{}:|", "-".repeat(13));
    }
    if peers {
        let _ = write!(s, "{}:|", "-".repeat(23));
    }
    s.push('\n');
    for m in METRICS {
        let cells: Vec<Option<f64>> = columns
            .iter()
            .map(|(_, r)| r.iter().find(|(id, _)| *id == m.id).map(|(_, v)| *v))
            .collect();
        if cells.iter().all(Option::is_none) {
            continue;
        }
        let _ = write!(s, "| {:<30} |", m.label);
        for c in &cells {
            let text = c.map_or_else(|| "n/a".to_string(), |v| format_value(m.unit, v));
            let _ = write!(s, " {text:>12} |");
        }
        if peers {
            let _ = write!(s, " {:>22} |", ratio_cell(m, columns, &cells));
        }
        s.push('\n');
    }
    s
}

fn ratio_cell(m: &Metric, columns: &[(String, Results)], cells: &[Option<f64>]) -> String {
    let Some(ours) = columns
        .iter()
        .position(|(name, _)| name == "kvstore")
        .and_then(|i| cells[i])
    else {
        return String::new();
    };
    let best = columns
        .iter()
        .zip(cells)
        .filter(|((name, _), _)| name != "kvstore")
        .filter_map(|((name, _), v)| v.map(|v| (name, v)))
        .reduce(|a, b| {
            let b_wins = match m.better {
                Better::Higher => b.1 > a.1,
                Better::Lower => b.1 < a.1,
            };
            if b_wins {
                b
            } else {
                a
            }
        });
    match best {
        Some((name, v)) if v > 0.0 => format!("{:.2}x vs {name}", ours / v),
        _ => String::new(),
    }
}

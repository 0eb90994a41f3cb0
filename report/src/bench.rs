//! The benchmark summary: every figure's spread over runs, ratios only
//! from one run. Formatting only; measures nothing.

use std::time::Duration;

use serde_json::{Value, json};

use shmem_host::vm::BootAlone;
use shmem_host::vm::guest::CopyRounds;
use shmem_host::vm::{Measurements, SuiteReport};

fn percentile(v: &[Duration], p: f64) -> Option<f64> {
    if v.is_empty() {
        return None;
    }
    let mut s: Vec<f64> = v.iter().map(|d| d.as_secs_f64() * 1e3).collect();
    s.sort_by(f64::total_cmp);
    let idx = ((p / 100.0) * (s.len() - 1) as f64).round() as usize;
    Some(s[idx.min(s.len() - 1)])
}

/// n, min, median and max of some measurements (null when there are none).
fn spread(v: impl IntoIterator<Item = f64>) -> Value {
    let mut s: Vec<f64> = v.into_iter().filter(|x| x.is_finite()).collect();
    if s.is_empty() {
        return Value::Null;
    }
    s.sort_by(f64::total_cmp);
    let n = s.len();
    let median = if n % 2 == 1 { s[n / 2] } else { (s[n / 2 - 1] + s[n / 2]) / 2.0 };
    json!({"n": n, "min": s[0], "median": median, "max": s[n - 1]})
}

/// A figure of one run, from its QEMU and model samples.
type RunFigure<'a> = &'a dyn Fn(&[Duration], &[Duration]) -> Option<f64>;

/// Per run: the p50 and p99 of a latency on QEMU and the model, and their ratio in that run.
fn latency(runs: &[SuiteReport], pick: impl Fn(&Measurements) -> (&[Duration], &[Duration])) -> Value {
    let per = |f: RunFigure<'_>| {
        spread(runs.iter().filter_map(|r| {
            let (q, m) = pick(&r.measurements);
            f(q, m)
        }))
    };
    json!({
        "qemu_p50_ms": per(&|q, _| percentile(q, 50.0)),
        "qemu_p99_ms": per(&|q, _| percentile(q, 99.0)),
        "model_p50_ms": per(&|_, m| percentile(m, 50.0)),
        "qemu_over_model_p50": per(&|q, m| Some(percentile(q, 50.0)? / percentile(m, 50.0)?)),
    })
}

/// The benchmark summary of `runs` (each a whole suite run that passed), as
/// one JSON document: every figure as n/min/median/max over the runs, and
/// ratios only from figures measured in the same run (bandwidth: the same
/// round of the same boot). Boot to agent ready is measured alone
/// (`boots_alone`) and, sharing the cores, inside the suite; copy bandwidth
/// on the boots alone.
///
/// The bench's JSON: every figure that could be measured, and
/// `not_measured`, what could not and why (a failed run, a boot alone that
/// failed, bandwidth on a clock too coarse). `None` when nothing at all was measured.
pub fn bench_report(
    runs: &[SuiteReport],
    boots_alone: &[BootAlone],
    not_measured: &[String],
    verdicts_failed: &[String],
) -> Option<String> {
    if runs.is_empty() && boots_alone.is_empty() {
        return None;
    }
    let rounds: Vec<&CopyRounds> = boots_alone.iter().filter_map(|b| b.bandwidth.as_ref().ok()).collect();
    let unfit: Vec<String> =
        boots_alone.iter().filter_map(|b| b.bandwidth.as_ref().err().map(ToString::to_string)).collect();
    let bw = if rounds.is_empty() {
        unfit.first().map(|why| json!({ "not_measured": why }))
    } else {
        Some(json!({
            "clock": rounds.iter().map(|c| c.clock.to_string()).collect::<Vec<_>>(),
            "bytes_per_copy_run": rounds[0].bytes,
            "shortest_copy_ticks": rounds.iter().map(|c| c.shortest()).min(),
            "mapping_mib_s": spread(rounds.iter().flat_map(|c| c.shm_mib_s())),
            "guest_ram_mib_s": spread(rounds.iter().flat_map(|c| c.ram_mib_s())),
            "ratio_mapping_over_ram": spread(rounds.iter().flat_map(|c| c.ratios())),
            "boots_not_measured": unfit,
        }))
    };
    let first = runs.first();
    let doc = json!({
        "bench": "vm-suite",
        "runs": runs.len(),
        "qemu": first.map(|r| r.qemu.version_text.clone()),
        "accel": first.map(|r| r.accel.name()),
        "scenarios": first.map(|r| r.scenarios.len()),
        "boot_to_agent_ready_s": spread(boots_alone.iter().map(|b| b.boot_time.as_secs_f64())),
        "boot_to_agent_ready_in_suite_s": spread(runs.iter().flat_map(|r| r.measurements.boot_times.iter().map(Duration::as_secs_f64))),
        "suite_s": spread(runs.iter().map(|r| r.suite_time.as_secs_f64())),
        "map_ack": latency(runs, |m| (&m.qemu_map, &m.model_map)),
        "unmap_ack": latency(runs, |m| (&m.qemu_unmap, &m.model_unmap)),
        "ack_to_mem_table": latency(runs, |m| (&m.qemu_table_lag, &m.model_table_lag)),
        "copy_bandwidth": bw,
        "not_measured": not_measured,
        "runs_whose_verdicts_failed": verdicts_failed,
    });
    Some(serde_json::to_string_pretty(&doc).unwrap_or_default())
}

#[cfg(test)]
mod tests {
    use super::*;
    use shmem_host::vm::BootAlone;

    #[test]
    fn a_bench_whose_clock_was_too_coarse_still_reports_its_boots() {
        let coarse = || BootAlone {
            boot_time: Duration::from_millis(900),
            bandwidth: Err(shmem_host::vm::bench::Unfit::Coarse {
                shortest: 20_000_000,
                uncertainty: 0.01502,
                clock: "2.0 GHz".into(),
                error: 0.01502,
            }),
        };
        let json = bench_report(
            &[],
            &[coarse(), coarse()],
            &["run 1: could not run".into()],
            &["run 2: verdicts failed: x".into()],
        )
        .expect("boot figures were measured");
        let v: Value = serde_json::from_str(&json).expect("JSON");
        assert_eq!(v["boot_to_agent_ready_s"]["n"], 2, "{v}");
        assert!(v["copy_bandwidth"]["not_measured"].as_str().is_some_and(|w| w.contains("1.502")), "{v}");
        assert_eq!(v["not_measured"][0], "run 1: could not run");
        assert_eq!(v["runs_whose_verdicts_failed"][0], "run 2: verdicts failed: x");
        assert!(bench_report(&[], &[], &[], &[]).is_none(), "nothing measured, nothing reported");
    }
}

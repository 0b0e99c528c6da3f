//! Argo Rollouts' analysis rules, exactly: how one measurement is judged from its conditions,
//! how a metric's measurements add up to its status (failureLimit, inconclusiveLimit,
//! consecutiveErrorLimit, consecutiveSuccessLimit, count), and how metrics add up to a run
//! (the worst wins; a Failed, Error or Inconclusive metric ends the run).

use serde::{Deserialize, Serialize};

use super::spec::Metric;

/// Ordered from best to worst, as Argo ranks them (`utils/analysis/helpers.go`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
pub enum Phase {
    Successful,
    Running,
    Pending,
    Inconclusive,
    Error,
    Failed,
}

impl Phase {
    pub fn is_terminal_bad(self) -> bool {
        matches!(self, Phase::Inconclusive | Phase::Error | Phase::Failed)
    }
}

/// One measurement as kept in the state and shown by `rollout get`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Measurement {
    pub phase: Phase,
    /// The result as JSON text, or the error.
    pub value: String,
    /// The condition(s) it was judged by.
    pub condition: String,
    /// Requests in the window (built-in provider).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub samples: Option<u64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub window: Option<String>,
    /// Unix milliseconds.
    pub at: u64,
}

/// What a provider gave for one measurement.
pub enum Outcome {
    Value(serde_json::Value),
    /// Not enough data to judge (built-in provider under `minRequests`).
    Inconclusive(String),
    Error(String),
}

/// Judges one result (`utils/evaluate/evaluate.go`, `EvaluateResult`).
pub fn judge(metric: &Metric, result: &serde_json::Value) -> Result<Phase, String> {
    let holds = |c: &Option<(String, super::expr::Expr)>| -> Result<Option<bool>, String> {
        c.as_ref()
            .map(|(text, e)| e.holds(result).map_err(|err| format!("{text}: {err}")))
            .transpose()
    };
    let failure = holds(&metric.failure)?;
    let success = holds(&metric.success)?;
    Ok(match (success, failure) {
        (None, None) => Phase::Successful,
        (None, Some(f)) => {
            if f {
                Phase::Failed
            } else {
                Phase::Successful
            }
        }
        (Some(s), None) => {
            if s {
                Phase::Successful
            } else {
                Phase::Failed
            }
        }
        (Some(s), Some(f)) => {
            if f {
                Phase::Failed
            } else if s {
                Phase::Successful
            } else {
                Phase::Inconclusive
            }
        }
    })
}

/// A metric's measurements so far, counted as Argo counts them.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct MetricRun {
    pub name: String,
    pub measurements: Vec<Measurement>,
    pub successful: u32,
    pub failed: u32,
    pub inconclusive: u32,
    pub error: u32,
    pub consecutive_error: u32,
    pub consecutive_success: u32,
}

/// Measurements kept per metric for display; counts cover all of them.
const KEPT: usize = 20;

impl MetricRun {
    pub fn record(&mut self, m: Measurement) {
        match m.phase {
            Phase::Successful => {
                self.successful += 1;
                self.consecutive_success += 1;
                self.consecutive_error = 0;
            }
            Phase::Failed => {
                self.failed += 1;
                self.consecutive_success = 0;
                self.consecutive_error = 0;
            }
            Phase::Inconclusive => {
                self.inconclusive += 1;
                self.consecutive_success = 0;
                self.consecutive_error = 0;
            }
            Phase::Error => {
                self.error += 1;
                self.consecutive_error += 1;
                self.consecutive_success = 0;
            }
            Phase::Running | Phase::Pending => {}
        }
        self.measurements.push(m);
        if self.measurements.len() > KEPT {
            self.measurements.remove(0);
        }
    }

    pub fn taken(&self) -> u32 {
        self.successful + self.failed + self.inconclusive + self.error
    }

    /// `assessMetricStatus`: limits first (a later hit overriding an earlier one), then
    /// consecutive successes, then whether the count is reached.
    pub fn status(&self, metric: &Metric) -> Phase {
        let over = |n: u32, limit: i64| limit >= 0 && i64::from(n) > limit;
        let mut hit = None;
        if over(self.failed, metric.failure_limit) {
            hit = Some(Phase::Failed);
        }
        if over(self.inconclusive, metric.inconclusive_limit) {
            hit = Some(Phase::Inconclusive);
        }
        if over(self.consecutive_error, metric.consecutive_error_limit) {
            hit = Some(Phase::Error);
        }
        if let Some(p) = hit {
            return p;
        }
        let csl = metric.consecutive_success_limit;
        if csl > 0 && i64::from(self.consecutive_success) >= csl {
            return Phase::Successful;
        }
        match metric.count {
            Some(c) if self.taken() >= c => {
                if csl > 0 {
                    Phase::Failed
                } else {
                    Phase::Successful
                }
            }
            _ if self.taken() == 0 => Phase::Pending,
            _ => Phase::Running,
        }
    }
}

/// The run's status: the worst of its metrics'.
pub fn run_status(statuses: &[Phase]) -> Phase {
    statuses.iter().copied().max().unwrap_or(Phase::Successful)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::rollout::spec::Provider;
    use std::time::Duration;

    fn metric(success: Option<&str>, failure: Option<&str>) -> Metric {
        let c = |s: Option<&str>| {
            s.map(|s| (s.to_string(), crate::rollout::expr::parse(s).expect("expr")))
        };
        Metric {
            name: "m".into(),
            interval: Some(Duration::from_secs(1)),
            count: Some(3),
            initial_delay: Duration::ZERO,
            success: c(success),
            failure: c(failure),
            failure_limit: 0,
            inconclusive_limit: 0,
            consecutive_error_limit: 4,
            consecutive_success_limit: 0,
            provider: Provider::Subsets {
                window: Duration::from_secs(10),
                min_requests: 1,
            },
        }
    }

    fn at(p: Phase) -> Measurement {
        Measurement {
            phase: p,
            value: String::new(),
            condition: String::new(),
            samples: None,
            window: None,
            at: 0,
        }
    }

    #[test]
    fn one_measurement_follows_evaluate_result() {
        let r = serde_json::json!([0.97]);
        assert_eq!(judge(&metric(None, None), &r), Ok(Phase::Successful));
        assert_eq!(
            judge(&metric(Some("result[0] > 0.99"), None), &r),
            Ok(Phase::Failed)
        );
        assert_eq!(
            judge(&metric(None, Some("result[0] < 0.5")), &r),
            Ok(Phase::Successful)
        );
        assert_eq!(
            judge(
                &metric(Some("result[0] > 0.99"), Some("result[0] < 0.5")),
                &r
            ),
            Ok(Phase::Inconclusive)
        );
        assert!(judge(&metric(Some("result[3] > 0"), None), &r).is_err());
    }

    #[test]
    fn limits_count_and_error_beats_failed() {
        let m = metric(Some("true"), None);
        let mut run = MetricRun::default();
        assert_eq!(run.status(&m), Phase::Pending);
        run.record(at(Phase::Successful));
        assert_eq!(run.status(&m), Phase::Running);
        run.record(at(Phase::Successful));
        run.record(at(Phase::Successful));
        assert_eq!(run.status(&m), Phase::Successful, "count reached");
        let mut run = MetricRun::default();
        run.record(at(Phase::Failed));
        assert_eq!(
            run.status(&m),
            Phase::Failed,
            "failureLimit 0: one failure fails"
        );
        let m = Metric { count: None, ..m };
        let mut run = MetricRun::default();
        for _ in 0..4 {
            run.record(at(Phase::Error));
        }
        assert_eq!(
            run.status(&m),
            Phase::Running,
            "4 errors: not over the default 4"
        );
        run.record(at(Phase::Failed));
        run.record(at(Phase::Error));
        assert_eq!(
            run.status(&m),
            Phase::Failed,
            "a failure broke the error streak"
        );
        for _ in 0..4 {
            run.record(at(Phase::Error));
        }
        assert_eq!(
            run.status(&m),
            Phase::Error,
            "error beats failed when both hit"
        );
        assert_eq!(
            run_status(&[Phase::Successful, Phase::Inconclusive, Phase::Running]),
            Phase::Inconclusive
        );
    }
}

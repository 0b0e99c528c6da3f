//! What `switchyard rollout get|list|status` print, from the state files alone (no network),
//! in the shape `kubectl argo rollouts get rollout` prints.

use std::fmt::Write as _;

use super::analysis::Phase;
use super::state::{RunState, State};

fn icon(phase: &str) -> &'static str {
    match phase {
        "Healthy" => "✔",
        "Progressing" => "◌",
        "Paused" => "॥",
        "Degraded" => "✖",
        _ => "?",
    }
}

fn run_lines(o: &mut String, kind: &str, run: &RunState) {
    let phase = run
        .phase
        .map_or("Pending".to_string(), |p| format!("{p:?}"));
    let _ = writeln!(
        o,
        "  α {kind} analysis ({})  {phase}",
        run.templates.join(", ")
    );
    if !run.message.is_empty() {
        let _ = writeln!(o, "    {}", run.message);
    }
    for m in &run.metrics {
        let _ = writeln!(
            o,
            "    {}: ✔ {} ✖ {} ? {} ⚠ {}",
            m.name, m.successful, m.failed, m.inconclusive, m.error
        );
        for x in m.measurements.iter().rev().take(3) {
            let mark = match x.phase {
                Phase::Successful => "✔",
                Phase::Failed => "✖",
                Phase::Inconclusive => "?",
                Phase::Error => "⚠",
                Phase::Running | Phase::Pending => "◌",
            };
            let mut extra = String::new();
            if let Some(n) = x.samples {
                let _ = write!(extra, ", {n} canary requests");
            }
            if let Some(w) = &x.window {
                let _ = write!(extra, " in {w}");
            }
            let _ = writeln!(o, "      {mark} {} against {}{extra}", x.value, x.condition);
        }
    }
}

/// Argo's header block, then the analysis runs with their latest measurements.
pub fn describe(st: &State) -> String {
    let mut o = String::new();
    let _ = writeln!(o, "Name:            {}", st.name);
    let _ = writeln!(o, "Namespace:       {}", st.namespace);
    let _ = writeln!(o, "Status:          {} {}", icon(&st.phase), st.phase);
    if !st.message.is_empty() {
        let _ = writeln!(o, "Message:         {}", st.message);
    }
    let _ = writeln!(o, "Strategy:        Canary");
    let _ = writeln!(o, "  Step:          {}/{}", st.step.min(st.steps), st.steps);
    let _ = writeln!(
        o,
        "  SetWeight:     {}",
        if st.aborted { 0 } else { st.set_weight }
    );
    let actual = st
        .actual_weight
        .map_or("unknown (no traffic observed)".to_string(), |w| {
            format!("{w:.1}")
        });
    let _ = writeln!(o, "  ActualWeight:  {actual}");
    let _ = writeln!(o, "Revision:        {}", st.revision);
    if let Some(v) = st.served_version {
        let _ = writeln!(o, "Served:          config version {v}");
    }
    if let Some(r) = &st.step_analysis {
        run_lines(&mut o, "Step", r);
    }
    if let Some(r) = &st.background {
        run_lines(&mut o, "Background", r);
    }
    o
}

/// One line per rollout for `rollout list`.
pub fn list_line(st: &State) -> String {
    format!(
        "{:<24} {:<12} {:<12} {:>5}/{:<5} {:>9}",
        st.name,
        st.namespace,
        st.phase,
        st.step.min(st.steps),
        st.steps,
        if st.aborted { 0 } else { st.set_weight }
    )
}

pub const LIST_HEADER: &str =
    "NAME                     NAMESPACE    STATUS        STEP        SETWEIGHT";

//! How findings are written: one diagnostic per problem, with the resource, field path and
//! code; shared checks of durations, percentages, ports, exportTo and gateway names.

use super::*;

impl Out {
    pub(super) fn push<S>(
        &mut self,
        r: &Resource<S>,
        severity: Severity,
        code: &'static str,
        path: impl Into<String>,
        message: impl Into<String>,
    ) {
        self.diags.push(r.diag(severity, code, path, message));
    }

    /// What the admission webhook would reject.
    pub(super) fn schema<S>(
        &mut self,
        r: &Resource<S>,
        path: impl Into<String>,
        message: impl Into<String>,
    ) {
        self.push(
            r,
            Severity::Error,
            codes::SCHEMA_VALIDATION_ERROR,
            path,
            message,
        );
    }

    /// What the admission webhook would accept with a warning.
    pub(super) fn schema_warning<S>(
        &mut self,
        r: &Resource<S>,
        path: impl Into<String>,
        message: impl Into<String>,
    ) {
        self.push(r, Severity::Warning, codes::SCHEMA_WARNING, path, message);
    }

    /// `new` lists the replacements, each quoted.
    pub(super) fn deprecated<S>(
        &mut self,
        r: &Resource<S>,
        path: impl Into<String>,
        old: &str,
        new: &str,
    ) {
        self.push(
            r,
            Severity::Warning,
            codes::DEPRECATED,
            path,
            format!("Deprecated: \"{old}\" is deprecated; use {new}"),
        );
    }

    pub(super) fn gap<S>(&mut self, r: &Resource<S>, key: &str, path: impl Into<String>) {
        if let Some(g) = NOT_IMPLEMENTED.iter().find(|g| g.key == key) {
            let message = if g.message.is_empty() {
                format!("{} is not implemented yet; ignored", g.key)
            } else {
                g.message.to_string()
            };
            self.push(r, g.severity, codes::NOT_IMPLEMENTED, path, message);
        }
    }

    pub(super) fn not_exported<S>(&mut self, r: &Resource<S>, export_to: &[String], ns: &str) {
        self.push(
            r,
            Severity::Info,
            codes::NOT_APPLICABLE,
            "spec.exportTo",
            format!(
                "not exported to namespace \"{ns}\" (exportTo: {}); ignored by this proxy",
                export_to.join(", ")
            ),
        );
    }

    pub(super) fn duration<S>(
        &mut self,
        r: &Resource<S>,
        path: String,
        value: &str,
        rule: DurationRule,
    ) {
        let d = match parse_go_duration(value) {
            Ok(d) => d,
            Err(e) => return self.schema(r, path, e.to_string()),
        };
        let problem = match rule {
            DurationRule::AtLeast1ms | DurationRule::Timeout => check_istio_duration(d).err(),
            DurationRule::ZeroOr1ms if d.is_zero() => None,
            DurationRule::ZeroOr1ms => check_istio_duration(d).err(),
            DurationRule::WholeSeconds => check_istio_duration(d).err().or_else(|| {
                (d.subsec_nanos() != 0)
                    .then(|| "max_age duration is accurate only to seconds precision".to_string())
            }),
            DurationRule::Any => None,
        };
        if let Some(p) = problem {
            let hint = if rule == DurationRule::Timeout && d.is_zero() {
                "; leave the field out for no timeout"
            } else {
                ""
            };
            self.schema(r, path, format!("invalid duration {value:?}: {p}{hint}"));
        }
    }

    pub(super) fn percentage<S>(&mut self, r: &Resource<S>, path: String, p: &Percent) {
        let v = p.value.0;
        if v.is_nan() || !(0.0..=100.0).contains(&v) || (v > 0.0 && v < 0.0001) {
            self.schema(
                r,
                path,
                format!("percentage {v} is neither 0.0, nor in range [0.0001, 100.0]"),
            );
        }
    }

    pub(super) fn non_negative<S>(
        &mut self,
        r: &Resource<S>,
        path: String,
        v: Option<Int>,
        what: &str,
    ) {
        if let Some(n) = v.map(|v| v.0).filter(|n| *n < 0) {
            self.schema(r, path, format!("{what} must be non-negative (got {n})"));
        }
    }

    pub(super) fn percent_0_100<S>(&mut self, r: &Resource<S>, path: String, v: Option<Int>) {
        if let Some(n) = v.map(|v| v.0).filter(|n| !(0..=100).contains(n)) {
            self.schema(r, path, format!("percentage {n} is not in range 0..100"));
        }
    }

    pub(super) fn port_number<S>(&mut self, r: &Resource<S>, path: String, n: i64) {
        if !(1..=65535).contains(&n) {
            self.schema(
                r,
                path,
                format!("port number {n} must be in the range 1..65535"),
            );
        }
    }

    pub(super) fn export_to<S>(&mut self, r: &Resource<S>, export_to: &[String]) {
        let mut seen = HashSet::new();
        for (i, e) in export_to.iter().enumerate() {
            if !matches!(e.as_str(), "." | "*" | "~") && !is_dns1123_label(e) {
                self.schema(
                    r,
                    format!("spec.exportTo[{i}]"),
                    format!("invalid exportTo entry {e:?}: only ., *, ~, or a valid DNS 1123 label is allowed"),
                );
            }
            if !seen.insert(e.as_str()) {
                self.schema(
                    r,
                    format!("spec.exportTo[{i}]"),
                    format!("duplicate entries in exportTo: {e}"),
                );
            }
        }
        if export_to.len() > 1 {
            if export_to.iter().any(|e| e == "*") {
                self.schema(
                    r,
                    "spec.exportTo",
                    "cannot have both public (*) and non-public exportTo values for a resource",
                );
            }
            if export_to.iter().any(|e| e == "~") {
                self.schema(
                    r,
                    "spec.exportTo",
                    "if you want to make the resource private, please use only ~ in exportTo",
                );
            }
        }
    }

    pub(super) fn gateway_names<S>(&mut self, r: &Resource<S>, names: &[String], path: &str) {
        for (i, g) in names.iter().enumerate() {
            let p = format!("{path}[{i}]");
            match g.split_once('/') {
                Some((ns, name)) => {
                    if ns.is_empty() || name.is_empty() {
                        self.schema(r, p, "config namespace and gateway name cannot be empty");
                    } else if !is_dns1123_label(ns) {
                        self.schema(r, p, format!("invalid value for namespace: {ns:?}"));
                    } else if !is_dns1123_label(name) {
                        self.schema(r, p, format!("invalid value for gateway name: {name:?}"));
                    }
                }
                None if g.contains('.') => {
                    let (name, rest) = g.split_once('.').unwrap_or((g, ""));
                    let ns = rest.split('.').next().unwrap_or("");
                    self.schema_warning(
                        r,
                        p,
                        format!("using legacy gatewayName format {g:?}; prefer the <namespace>/<name> format: \"{ns}/{name}\""),
                    );
                }
                None if !is_dns1123_label(g) => {
                    self.schema(r, p, format!("invalid gateway name {g:?}"));
                }
                None => {}
            }
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum DurationRule {
    /// Istio's `ValidateDuration`: at least 1ms, whole milliseconds.
    AtLeast1ms,
    /// As `AtLeast1ms`, with a hint for `0s`, which users write to mean "no timeout".
    Timeout,
    /// `connectionPool.tcp.idleTimeout`: `0s` means disabled.
    ZeroOr1ms,
    /// `corsPolicy.maxAge` is sent in whole seconds.
    WholeSeconds,
    /// Any non-negative duration (cookie `ttl`: `0s` makes a session cookie).
    Any,
}

// ---------------------------------------------------------------------------------------------
// VirtualService: webhook

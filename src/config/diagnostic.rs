//! One problem found in the configuration, printed the same way by `validate`, `run` and every
//! reload: `FILE:LINE: SEVERITY CODE Kind/namespace/name: field.path: message`.

use std::fmt;
use std::path::PathBuf;

#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, serde::Serialize)]
pub enum Severity {
    Info,
    Warning,
    Error,
}

impl Severity {
    pub fn as_str(self) -> &'static str {
        match self {
            Severity::Info => "Info",
            Severity::Warning => "Warning",
            Severity::Error => "Error",
        }
    }
}

impl fmt::Display for Severity {
    fn fmt(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Codes: Istio's `IST0xxx` where `istioctl analyze` has one; ours (`SY0xxx`) otherwise.
pub mod codes {
    /// Istio: a referenced host, subset or delegate does not exist.
    pub const REFERENCED_RESOURCE_NOT_FOUND: &str = "IST0101";
    /// Istio: the admission webhook would reject this (schema validation).
    pub const SCHEMA_VALIDATION_ERROR: &str = "IST0106";
    /// Istio: two mesh-bound VirtualServices claim one host.
    pub const CONFLICTING_MESH_GATEWAY_HOSTS: &str = "IST0109";
    /// Istio: the destination service has several ports and no `port` was given.
    pub const DESTINATION_PORT_SELECTOR_REQUIRED: &str = "IST0112";
    /// Istio: a rule can never match.
    pub const UNREACHABLE_RULE: &str = "IST0130";
    /// Istio: a match block duplicates or is covered by an earlier one.
    pub const INEFFECTIVE_MATCH: &str = "IST0131";
    /// Istio: a validation warning from the webhook.
    pub const SCHEMA_WARNING: &str = "IST0133";
    /// Istio: a DestinationRule subset selects no endpoints.
    pub const SUBSET_SELECTS_NOTHING: &str = "IST0173";
    /// Istio: a DestinationRule host matches no service.
    pub const UNKNOWN_DR_HOST: &str = "IST0174";
    /// Istio: a deprecated field.
    pub const DEPRECATED: &str = "IST0002";
    /// Ours: the file or document cannot be read or parsed.
    pub const PARSE_ERROR: &str = "SY0001";
    /// Ours: a field Istio defines that switchyard does not act on (yet).
    pub const NOT_IMPLEMENTED: &str = "SY0002";
    /// Ours: a resource kind we do not read (Deployment, Gateway, ...), skipped.
    pub const SKIPPED_KIND: &str = "SY0003";
    /// Ours: a resource that does not apply to this proxy (gateway-bound, not exported to us).
    pub const NOT_APPLICABLE: &str = "SY0004";
    /// Ours: the config holds no VirtualService and no ServiceEntry: nothing can be routed.
    pub const NOTHING_ROUTABLE: &str = "SY0005";
    /// Ours: a Rollout (or its AnalysisTemplates) the rollout controller cannot drive. It
    /// refuses that rollout, never the routing table.
    pub const ROLLOUT: &str = "SY0006";
}

#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct Diagnostic {
    pub severity: Severity,
    pub code: &'static str,
    pub file: PathBuf,
    /// 1-based; 0 when the problem is not in a file (e.g. the path does not exist).
    pub line: usize,
    /// `Kind/namespace/name`, empty when the problem is not inside a resource.
    pub resource: String,
    /// `spec.http[0].route[1].destination.subset`, empty for the whole resource.
    pub field_path: String,
    pub message: String,
}

impl Diagnostic {
    pub fn is_error(&self) -> bool {
        self.severity == Severity::Error
    }
}

impl fmt::Display for Diagnostic {
    fn fmt(&self, f: &mut fmt::Formatter) -> fmt::Result {
        write!(f, "{}", self.file.display())?;
        if self.line > 0 {
            write!(f, ":{}", self.line)?;
        }
        write!(f, ": {} {}", self.severity, self.code)?;
        if !self.resource.is_empty() {
            write!(f, " {}", self.resource)?;
        }
        if !self.field_path.is_empty() {
            write!(f, ": {}", self.field_path)?;
        }
        write!(f, ": {}", self.message)
    }
}

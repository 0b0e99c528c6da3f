//! Which resources apply to this proxy: its identity (namespace, labels) decides `exportTo`
//! visibility, `gateways` binding and the config-time match conditions, exactly as istiod
//! decides them when it builds one sidecar's configuration.

use super::istio::Labels;

/// Who this proxy is: what a Kubernetes sidecar would learn from its pod.
#[derive(Debug, Clone)]
pub struct ProxyIdentity {
    /// `--namespace`: the namespace we run in (short names and `exportTo: "."` use it).
    pub namespace: String,
    /// `--workload`: our workload name (metrics).
    pub workload: String,
    /// `--labels`: our own labels (`sourceLabels` matches against them).
    pub labels: Labels,
}

impl Default for ProxyIdentity {
    fn default() -> Self {
        ProxyIdentity {
            namespace: "default".to_string(),
            workload: "switchyard".to_string(),
            labels: Labels::new(),
        }
    }
}

/// Istio's root namespace: DestinationRules there apply mesh-wide (lookup order's last step).
pub const ROOT_NAMESPACE: &str = "istio-system";

/// `exportTo` of a resource in `resource_ns`, seen from a proxy in `proxy_ns`. Empty means
/// everywhere (Istio's default `*`); `.` is the resource's own namespace; `~` is nowhere.
pub fn visible_to(export_to: &[String], resource_ns: &str, proxy_ns: &str) -> bool {
    if export_to.is_empty() {
        return true;
    }
    export_to.iter().any(|e| match e.as_str() {
        "*" => true,
        "." => resource_ns == proxy_ns,
        "~" => false,
        ns => ns == proxy_ns,
    })
}

/// True when a gateway list includes the sidecars: empty means `[mesh]`.
pub fn binds_mesh(gateways: &[String]) -> bool {
    gateways.is_empty() || gateways.iter().any(|g| g == "mesh")
}

/// `sourceLabels` must be a subset of our own labels.
pub fn labels_subset(want: &Labels, have: &Labels) -> bool {
    want.iter().all(|(k, v)| have.get(k) == Some(v))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn v(items: &[&str]) -> Vec<String> {
        items.iter().map(|s| s.to_string()).collect()
    }

    #[test]
    fn export_to_rules() {
        assert!(visible_to(&[], "a", "b"));
        assert!(visible_to(&v(&["."]), "a", "a"));
        assert!(!visible_to(&v(&["."]), "a", "b"));
        assert!(visible_to(&v(&["*"]), "a", "b"));
        assert!(!visible_to(&v(&["~"]), "a", "a"));
        assert!(visible_to(&v(&["x", "b"]), "a", "b"));
    }

    #[test]
    fn gateway_binding() {
        assert!(binds_mesh(&[]));
        assert!(binds_mesh(&v(&["my-gateway", "mesh"])));
        assert!(!binds_mesh(&v(&["istio-ingressgateway"])));
    }
}

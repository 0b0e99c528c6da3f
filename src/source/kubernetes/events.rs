//! A refused object gets a Warning Event (core/v1), so `kubectl describe virtualservice web`
//! and `kubectl get events` show why a sidecar keeps serving its last good version, not only
//! the sidecar's log. One Event per refused version: the admission side reports a finding
//! once per process, and the Event's name is a hash of the object's version and the
//! findings, so every sidecar refusing the same version for the same reasons creates the same
//! Event and all but the first get 409 AlreadyExists. Creating Events needs `create` on
//! `events`; without it the refusal is only logged (and that said once).

use std::collections::HashMap;

use k8s_openapi::api::core::v1::Event;
use kube::Client;
use kube::api::{Api, PostParams};
use sha2::{Digest, Sha256};
use tokio::sync::mpsc;

use super::snapshot::Stores;
use crate::config::Diagnostic;

/// One refused version of one object and why.
#[derive(Debug, Clone, PartialEq)]
pub struct Refusal {
    pub kind: String,
    pub namespace: String,
    pub name: String,
    pub resource_version: String,
    pub message: String,
}

/// Event messages are meant for a terminal line or two; the log has the rest.
const MAX_MESSAGE: usize = 1024;

/// The refusals in `findings`, one per object: the object's identity comes from the
/// diagnostic's source (`Kind/namespace/name@resourceVersion`, see `snapshot::api_source`).
pub fn refusals(findings: &[Diagnostic]) -> Vec<Refusal> {
    let mut by_object: Vec<(String, Vec<String>)> = Vec::new();
    for d in findings.iter().filter(|d| d.is_error()) {
        let source = d.file.display().to_string();
        let text = if d.field_path.is_empty() {
            format!("{} {}", d.code, d.message)
        } else {
            format!("{} {}: {}", d.code, d.field_path, d.message)
        };
        match by_object.iter_mut().find(|(s, _)| *s == source) {
            Some((_, texts)) => texts.push(text),
            None => by_object.push((source, vec![text])),
        }
    }
    by_object
        .into_iter()
        .filter_map(|(source, texts)| {
            let (id, rv) = source.rsplit_once('@')?;
            let mut parts = id.splitn(3, '/');
            let (kind, namespace, name) = (parts.next()?, parts.next()?, parts.next()?);
            api_version(kind)?;
            let mut message = texts.join("; ");
            if message.len() > MAX_MESSAGE {
                let mut cut = MAX_MESSAGE - 3;
                while !message.is_char_boundary(cut) {
                    cut -= 1;
                }
                message.truncate(cut);
                message.push_str("...");
            }
            Some(Refusal {
                kind: kind.to_string(),
                namespace: namespace.to_string(),
                name: name.to_string(),
                resource_version: rv.to_string(),
                message,
            })
        })
        .collect()
}

fn api_version(kind: &str) -> Option<&'static str> {
    match kind {
        "VirtualService" | "DestinationRule" | "ServiceEntry" | "WorkloadEntry" => {
            Some("networking.istio.io/v1")
        }
        "Service" => Some("v1"),
        _ => None,
    }
}

/// The Event for `r`: its name is the same in every process that refuses that version for
/// those reasons.
pub fn event(r: &Refusal, uid: Option<String>, now: &str, instance: &str) -> Option<Event> {
    let digest = Sha256::digest(
        format!(
            "{}/{}/{}@{}\0{}",
            r.kind, r.namespace, r.name, r.resource_version, r.message
        )
        .as_bytes(),
    );
    let hash: String = digest.iter().take(8).map(|b| format!("{b:02x}")).collect();
    let value = serde_json::json!({
        "metadata": {"name": format!("{}.{hash}", r.name), "namespace": r.namespace},
        "involvedObject": {
            "apiVersion": api_version(&r.kind)?,
            "kind": r.kind,
            "namespace": r.namespace,
            "name": r.name,
            "uid": uid,
            "resourceVersion": r.resource_version,
        },
        "reason": "ConfigRefused",
        "message": format!("switchyard refused this version and serves the last good one: {}", r.message),
        "type": "Warning",
        "source": {"component": "switchyard"},
        "reportingComponent": "switchyard",
        "reportingInstance": instance,
        "firstTimestamp": now,
        "lastTimestamp": now,
        "count": 1,
    });
    serde_json::from_value(value).ok()
}

/// Creates the Events for what arrives on `rx` until the sender is dropped.
pub fn spawn(
    client: Client,
    stores: Stores,
    mut rx: mpsc::UnboundedReceiver<Refusal>,
) -> tokio::task::JoinHandle<()> {
    // The pod's name, as the kubelet sets it.
    let instance = std::env::var("HOSTNAME").unwrap_or_else(|_| "switchyard".to_string());
    tokio::spawn(async move {
        let mut failing: HashMap<String, String> = HashMap::new();
        while let Some(r) = rx.recv().await {
            let now = k8s_openapi::jiff::Timestamp::now().to_string();
            let uid = stores.uid(&r.kind, &r.namespace, &r.name);
            let Some(event) = event(&r, uid, &now, &instance) else {
                continue;
            };
            let api: Api<Event> = Api::namespaced(client.clone(), &r.namespace);
            match api.create(&PostParams::default(), &event).await {
                Ok(_) => {
                    failing.remove(&r.namespace);
                }
                // Another sidecar reported this version first.
                Err(kube::Error::Api(s)) if s.code == 409 => {}
                Err(e) => {
                    let text = e.to_string();
                    if failing.get(&r.namespace) != Some(&text) {
                        tracing::warn!(namespace = %r.namespace, error = %text, "cannot create Kubernetes Events for refused objects (RBAC: create on events); they are only logged");
                        failing.insert(r.namespace.clone(), text);
                    }
                }
            }
        }
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::{Severity, codes};

    fn finding(file: &str, field: &str, message: &str) -> Diagnostic {
        Diagnostic {
            severity: Severity::Error,
            code: codes::SCHEMA_VALIDATION_ERROR,
            file: file.into(),
            line: 0,
            resource: String::new(),
            field_path: field.to_string(),
            message: message.to_string(),
        }
    }

    #[test]
    fn one_refusal_per_object_version_with_every_finding() {
        let r = refusals(&[
            finding(
                "VirtualService/default/web@7",
                "spec.http[0].rout",
                "unknown field",
            ),
            finding(
                "VirtualService/default/web@7",
                "spec.http[0]",
                "route is required",
            ),
            finding("DestinationRule/istio-system/all@9", "", "bad"),
            // Not from the API server: no Event.
            finding("/etc/switchyard/vs.yaml", "spec", "bad"),
        ]);
        assert_eq!(r.len(), 2, "{r:?}");
        assert_eq!(
            (
                r[0].kind.as_str(),
                r[0].namespace.as_str(),
                r[0].name.as_str()
            ),
            ("VirtualService", "default", "web")
        );
        assert_eq!(r[0].resource_version, "7");
        assert!(r[0].message.contains("spec.http[0].rout: unknown field; "));
        assert_eq!(r[1].namespace, "istio-system");
    }

    #[test]
    fn the_same_refusal_names_the_same_event_and_a_long_message_is_cut() {
        let long = "é".repeat(2000);
        let r = refusals(&[finding("VirtualService/default/web@7", "spec", &long)]);
        assert!(r[0].message.len() <= MAX_MESSAGE && r[0].message.ends_with("..."));
        let a = event(&r[0], None, "2026-12-07T16:00:00Z", "a").expect("event");
        let b = event(&r[0], None, "2026-12-07T16:00:05Z", "b").expect("event");
        assert_eq!(a.metadata.name, b.metadata.name);
        assert_eq!(a.type_.as_deref(), Some("Warning"));
    }
}

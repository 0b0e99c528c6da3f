//! Which version of `networking.istio.io` each Istio kind is read at. Istio 1.22 on serves
//! `v1`; older control planes serve only `v1beta1` and `v1alpha3`, with the same spec fields.
//! API discovery (`GET /apis/networking.istio.io`, then each served version's resource list)
//! tells which versions the server serves for each kind; the best one is watched.

use std::time::Duration;

use k8s_openapi::apimachinery::pkg::apis::meta::v1::{APIGroup, APIResourceList};
use kube::Client;
use tokio::time::Instant;

use super::{ISTIO_GROUP, ISTIO_VERSION, KubeError};

/// Best first. An object is readable at every served version of its CRD whichever one it was
/// written with, so one version per kind sees every object.
pub(crate) const PREFERENCE: [&str; 3] = ["v1", "v1beta1", "v1alpha3"];

/// One discovery attempt's failure.
enum Failed {
    /// 404 on the group: no Istio CRD installed (yet).
    GroupNotServed,
    Other(kube::Error),
}

/// The version to watch for each of `plurals`, in order. Retries until `deadline` (the API
/// server may be coming up, or the CRDs being installed). A kind served at no version gets
/// [`ISTIO_VERSION`]: its list then fails like any uninstalled kind's, and the sync timeout
/// names it.
pub(crate) async fn istio_versions(
    client: &Client,
    plurals: &[&str],
    deadline: Instant,
    timeout: Duration,
) -> Result<Vec<String>, KubeError> {
    let mut backoff = Duration::from_millis(100);
    loop {
        let err = match attempt(client, plurals).await {
            Ok(versions) => return Ok(versions),
            Err(e) => e,
        };
        if Instant::now() + backoff >= deadline {
            return Err(match err {
                Failed::GroupNotServed => KubeError::GroupNotServed {
                    group: ISTIO_GROUP,
                    timeout,
                },
                Failed::Other(e) => KubeError::SyncTimeout(
                    timeout,
                    vec![format!("discovery of {ISTIO_GROUP}: {e}")],
                ),
            });
        }
        if let Failed::Other(e) = &err {
            tracing::debug!(error = %e, "Kubernetes API discovery failed; retrying");
        }
        tokio::time::sleep(backoff).await;
        backoff = (backoff * 2).min(Duration::from_secs(2));
    }
}

async fn attempt(client: &Client, plurals: &[&str]) -> Result<Vec<String>, Failed> {
    let req = http::Request::get(format!("/apis/{ISTIO_GROUP}"))
        .body(Vec::new())
        .map_err(|e| Failed::Other(kube::Error::HttpError(e)))?;
    let group: APIGroup = client.request(req).await.map_err(|e| match &e {
        kube::Error::Api(s) if s.code == 404 => Failed::GroupNotServed,
        _ => Failed::Other(e),
    })?;
    let served: Vec<&str> = group.versions.iter().map(|v| v.version.as_str()).collect();
    let mut lists: Vec<(&str, APIResourceList)> = Vec::new();
    for v in PREFERENCE.into_iter().filter(|v| served.contains(v)) {
        let list = client
            .list_api_group_resources(&format!("{ISTIO_GROUP}/{v}"))
            .await
            .map_err(Failed::Other)?;
        lists.push((v, list));
    }
    Ok(choose(plurals, &lists))
}

/// For each plural, the first version (in preference order) whose resource list has it.
fn choose(plurals: &[&str], lists: &[(&str, APIResourceList)]) -> Vec<String> {
    plurals
        .iter()
        .map(|p| {
            lists
                .iter()
                .find(|(_, l)| l.resources.iter().any(|r| r.name == *p))
                .map_or(ISTIO_VERSION, |(v, _)| v)
                .to_string()
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn list(v: &str, plurals: &[&str]) -> APIResourceList {
        serde_json::from_value(serde_json::json!({
            "groupVersion": format!("{ISTIO_GROUP}/{v}"),
            "resources": plurals.iter().map(|p| serde_json::json!({
                "name": p, "singularName": "", "namespaced": true, "kind": "X",
                "verbs": ["get", "list", "watch"]})).collect::<Vec<_>>()}))
        .expect("APIResourceList")
    }

    #[test]
    fn the_best_version_serving_each_kind_is_chosen() {
        let lists = [
            (
                "v1beta1",
                list("v1beta1", &["virtualservices", "workloadentries"]),
            ),
            (
                "v1alpha3",
                list("v1alpha3", &["virtualservices", "serviceentries"]),
            ),
        ];
        assert_eq!(
            choose(
                &[
                    "virtualservices",
                    "serviceentries",
                    "workloadentries",
                    "destinationrules"
                ],
                &lists
            ),
            ["v1beta1", "v1alpha3", "v1beta1", "v1"]
        );
    }
}

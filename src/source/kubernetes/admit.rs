//! Per-object admission for the API server's objects. A folder is one config a person edits
//! and refuses as a whole; a cluster is many objects changed by many hands (kubectl, Argo,
//! Flagger), and one bad VirtualService must not freeze every other change. So an object
//! whose current version has an error is replaced by the last version of it that was served
//! (or left out if none was), its findings are logged once, and the rest goes ahead.
//! Whatever is still wrong after that refuses the config as a whole, as for files.

use std::collections::{HashMap, HashSet};

use crate::config::ProxyIdentity;
use crate::config::validate::{Mode, ValidateOptions, validate};
use crate::config::{
    DestinationRule, Diagnostic, Resource, Resources, ServiceEntry, VirtualService, WorkloadEntry,
};
use crate::reload::log_diagnostics;

/// What an object is judged by: the serving proxy's view, as the reloader judges the whole.
#[derive(Clone)]
pub struct Screen {
    pub identity: ProxyIdentity,
    pub istio_mutual_as_plaintext: bool,
}

/// The last served version of every Istio object, by `Kind/namespace/name`.
#[derive(Default)]
pub struct Admitted {
    virtual_services: HashMap<String, VirtualService>,
    destination_rules: HashMap<String, DestinationRule>,
    service_entries: HashMap<String, ServiceEntry>,
    workload_entries: HashMap<String, WorkloadEntry>,
    /// The findings already logged for the objects refused now (a finding names the
    /// object's resourceVersion, so a new version of it is reported anew).
    reported: HashSet<String>,
    /// Where a newly refused version goes to become a Kubernetes Event.
    pub events: Option<tokio::sync::mpsc::UnboundedSender<super::events::Refusal>>,
}

impl Admitted {
    /// Swaps each object with an error for its last served version; returns how many were.
    pub fn screen(&mut self, screen: &Screen, res: &mut Resources) -> usize {
        let mut diags = res.diagnostics.clone();
        diags.extend(validate(
            res,
            &ValidateOptions {
                identity: &screen.identity,
                mode: Mode::Serve,
                istio_mutual_as_plaintext: screen.istio_mutual_as_plaintext,
            },
        ));
        let bad: HashSet<String> = diags
            .iter()
            .filter(|d| d.is_error() && !d.resource.is_empty())
            .map(|d| d.resource.clone())
            .collect();
        let current: Vec<Diagnostic> = diags
            .into_iter()
            .filter(|d| bad.contains(&d.resource))
            .collect();
        let keys: HashSet<String> = current.iter().map(|d| d.to_string()).collect();
        let findings: Vec<Diagnostic> = current
            .into_iter()
            .filter(|d| !self.reported.contains(&d.to_string()))
            .collect();
        // Only what is refused now is remembered, so the set cannot grow without bound.
        self.reported = keys;
        if bad.is_empty() {
            return 0;
        }
        if !findings.is_empty() {
            log_diagnostics(&findings);
            if let Some(tx) = &self.events {
                for r in super::events::refusals(&findings) {
                    let _ = tx.send(r);
                }
            }
            tracing::error!(
                objects = ?bad,
                "Kubernetes objects refused; each keeps its last served version, the rest is applied"
            );
        }
        res.diagnostics.retain(|d| !bad.contains(&d.resource));
        // An object that did not even decode has no resource to swap; its last served
        // version goes back in.
        restore(&mut res.virtual_services, &self.virtual_services, &bad);
        restore(&mut res.destination_rules, &self.destination_rules, &bad);
        restore(&mut res.service_entries, &self.service_entries, &bad);
        restore(&mut res.workload_entries, &self.workload_entries, &bad);
        bad.len()
    }

    /// Remembers what was just served.
    pub fn served(&mut self, res: &Resources) {
        remember(&mut self.virtual_services, &res.virtual_services);
        remember(&mut self.destination_rules, &res.destination_rules);
        remember(&mut self.service_entries, &res.service_entries);
        remember(&mut self.workload_entries, &res.workload_entries);
    }
}

fn restore<S: Clone>(
    list: &mut Vec<Resource<S>>,
    last: &HashMap<String, Resource<S>>,
    bad: &HashSet<String>,
) {
    list.retain(|r| !bad.contains(&r.id()));
    for id in bad {
        if let Some(r) = last.get(id)
            && !list.iter().any(|l| l.id() == *id)
        {
            list.push(r.clone());
        }
    }
    list.sort_by_key(|r| r.order);
}

fn remember<S: Clone>(map: &mut HashMap<String, Resource<S>>, list: &[Resource<S>]) {
    map.clear();
    map.extend(list.iter().map(|r| (r.id(), r.clone())));
}

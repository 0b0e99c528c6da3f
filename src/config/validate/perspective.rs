//! From where a resource's references are judged. One proxy sees the hosts exported to its
//! namespace (`run`, `validate --namespace N`); `istioctl analyze` judges each resource from its
//! own namespace, or from the namespaces its `exportTo` names (`validate`, `--all-namespaces`).

use std::borrow::Cow;
use std::collections::HashMap;

use super::super::registry::{Registry, Service};
use super::super::scope::ProxyIdentity;
use super::super::{Resources, ServiceEntry};
use super::Mode;

pub(super) struct Hosts<'a> {
    proxy: Registry<'a>,
    /// `Mode::AnalyzeAll`: the hosts visible from each namespace a resource is judged from.
    each: Option<HashMap<String, Registry<'a>>>,
    me: &'a ProxyIdentity,
}

/// Istio's `GetDestinationHost` scopes: the resource's namespace when it has no `exportTo`,
/// else each namespace it exports to (`.` being its own).
fn scopes(ns: &str, export_to: &[String]) -> Vec<String> {
    if export_to.is_empty() {
        return vec![ns.to_string()];
    }
    export_to
        .iter()
        .map(|e| if e == "." { ns.to_string() } else { e.clone() })
        .collect()
}

impl<'a> Hosts<'a> {
    pub(super) fn new(res: &'a Resources, me: &'a ProxyIdentity, mode: Mode) -> Hosts<'a> {
        let each = (mode == Mode::AnalyzeAll).then(|| {
            let mut views = HashMap::new();
            let judged = res
                .virtual_services
                .iter()
                .map(|r| (&r.namespace, &r.spec.export_to))
                .chain(
                    res.destination_rules
                        .iter()
                        .map(|r| (&r.namespace, &r.spec.export_to)),
                )
                .chain(
                    res.service_entries
                        .iter()
                        .map(|r| (&r.namespace, &r.spec.export_to)),
                );
            for (ns, export_to) in judged {
                // The resource's own namespace too: its ServiceEntry checks use it.
                for scope in scopes(ns, export_to).into_iter().chain([ns.clone()]) {
                    views.entry(scope.clone()).or_insert_with(|| {
                        Registry::build_for_analysis(res, &Self::identity_in(me, &scope))
                    });
                }
            }
            views
        });
        let proxy = match mode {
            Mode::Serve => Registry::build(res, me),
            Mode::Analyze | Mode::AnalyzeAll => Registry::build_for_analysis(res, me),
        };
        Hosts { proxy, each, me }
    }

    fn identity_in(me: &ProxyIdentity, ns: &str) -> ProxyIdentity {
        ProxyIdentity {
            namespace: ns.to_string(),
            ..me.clone()
        }
    }

    /// Whether every resource is judged from its own namespace.
    pub(super) fn each_own(&self) -> bool {
        self.each.is_some()
    }

    /// The registries a resource in `ns` with `export_to` looks hosts up in, in order.
    pub(super) fn views(&self, ns: &str, export_to: &[String]) -> Vec<&Registry<'a>> {
        match &self.each {
            None => vec![&self.proxy],
            Some(views) => scopes(ns, export_to)
                .iter()
                .filter_map(|s| views.get(s))
                .collect(),
        }
    }

    pub(super) fn service(
        &self,
        ns: &str,
        export_to: &[String],
        fqdn: &str,
    ) -> Option<&Service<'a>> {
        self.views(ns, export_to)
            .into_iter()
            .find_map(|r| r.service(fqdn))
    }

    /// The proxy whose DestinationRule lookup applies to a resource in `ns`.
    pub(super) fn identity(&self, ns: &str) -> Cow<'a, ProxyIdentity> {
        if self.each.is_some() {
            Cow::Owned(Self::identity_in(self.me, ns))
        } else {
            Cow::Borrowed(self.me)
        }
    }

    /// ServiceEntry hosts an earlier one already defined, with the `namespace/name` of the
    /// one that won: for a proxy, those it ignores; for every namespace, those the proxies of
    /// the second entry's own namespace ignore.
    pub(super) fn shadowed(&self) -> Vec<(&'a ServiceEntry, String, String)> {
        let pick = |reg: &Registry<'a>, own: Option<&str>| {
            reg.shadowed
                .iter()
                .filter(move |(se, _)| own.is_none_or(|ns| se.namespace == ns))
                .map(|(se, host)| {
                    let first = reg
                        .service(host)
                        .map(|s| format!("{}/{}", s.entry.namespace, s.entry.meta.name))
                        .unwrap_or_default();
                    (*se, host.clone(), first)
                })
                .collect::<Vec<_>>()
        };
        let mut found = match &self.each {
            None => pick(&self.proxy, None),
            Some(views) => views
                .iter()
                .flat_map(|(ns, reg)| pick(reg, Some(ns)))
                .collect(),
        };
        found.sort_by_key(|(se, host, _)| (se.order, host.clone()));
        found.dedup_by(|a, b| std::ptr::eq(a.0, b.0) && a.1 == b.1);
        found
    }
}

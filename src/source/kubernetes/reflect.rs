//! One reflector per watched (kind, namespace scope): kube-runtime's watcher lists (paging
//! with `continue`), watches from the list's resourceVersion with bookmarks, relists on
//! 410 Gone and backs off on errors; the reflector keeps the store. This task only says when
//! something changed and when the first list is complete, and logs a lost watch once.

use std::collections::BTreeSet;
use std::fmt::Debug;
use std::hash::Hash;
use std::sync::Arc;

use futures_util::StreamExt;
use kube::Resource;
use kube::api::Api;
use kube::runtime::WatchStreamExt;
use kube::runtime::reflector::{self, Store};
use kube::runtime::watcher::{self, Event};
use serde::de::DeserializeOwned;
use tokio::sync::{Notify, watch};

/// Shared by every reflector of one source.
#[derive(Clone)]
pub struct Signals {
    /// Notified on every change to any store.
    pub changed: Arc<Notify>,
    /// The reflectors (by `what`) that have completed their first list.
    pub synced: watch::Sender<BTreeSet<String>>,
}

/// Starts watching `api` into a new store; `what` names it in logs (`VirtualService in all
/// namespaces`). `trim` cuts each object down to what the source reads before it is stored.
pub fn spawn<K>(
    api: Api<K>,
    dyntype: K::DynamicType,
    what: String,
    signals: Signals,
    trim: fn(&mut K),
) -> (Store<K>, tokio::task::JoinHandle<()>)
where
    K: Resource + Clone + DeserializeOwned + Debug + Send + Sync + 'static,
    K::DynamicType: Eq + Hash + Clone + Send + Sync,
{
    let writer = reflector::store::Writer::new(dyntype);
    let store = writer.as_reader();
    let task = tokio::spawn(async move {
        let stream = watcher::watcher(api, watcher::Config::default())
            .default_backoff()
            .modify(trim)
            .reflect(writer);
        let mut stream = std::pin::pin!(stream);
        let mut synced = false;
        let mut failing = false;
        while let Some(event) = stream.next().await {
            match event {
                Ok(event) => {
                    if failing {
                        tracing::info!(watch = %what, "Kubernetes API watch restored");
                        failing = false;
                    }
                    match event {
                        Event::InitDone => {
                            if !synced {
                                synced = true;
                                signals.synced.send_modify(|s| {
                                    s.insert(what.clone());
                                });
                            }
                            signals.changed.notify_one();
                        }
                        Event::Apply(_) | Event::Delete(_) => signals.changed.notify_one(),
                        // The store swaps in a relist whole, at InitDone.
                        Event::Init | Event::InitApply(_) => {}
                    }
                }
                Err(e) => {
                    // The watcher retries with back-off; one line per outage, not per retry.
                    if !failing {
                        tracing::warn!(watch = %what, error = %e, "Kubernetes API watch failed; retrying with back-off, the last good config keeps serving");
                        failing = true;
                    } else {
                        tracing::debug!(watch = %what, error = %e, "Kubernetes API watch still failing");
                    }
                }
            }
        }
    });
    (store, task)
}

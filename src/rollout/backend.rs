//! Where the controller reads its documents and writes its results. The step logic, analysis
//! and weight arithmetic live in `controller`; a backend only moves documents: a config
//! folder (files, a dot-named state file, dot-named action files) or the Kubernetes API
//! (`super::kube`: watched objects, a JSON patch on the VirtualService, the Rollout's status).

use std::future::Future;
use std::path::PathBuf;

use super::spec::Rollout;
use super::state::{self, Action, State};
use super::vsedit::{self, WeightEdit};
use crate::config::{ArgoDoc, LoadOptions, Resources, VirtualService};

pub trait Backend: Send + 'static {
    /// The Rollouts, (Cluster)AnalysisTemplates and VirtualServices as they stand now.
    fn load(&mut self) -> Resources;

    /// The rollout's last recorded progress.
    fn state(&mut self, namespace: &str, name: &str) -> Option<State>;

    /// Records progress (the caller only calls it when something changed).
    fn write_state(&mut self, st: &State) -> impl Future<Output = Result<(), String>> + Send;

    /// A request from a person (the CLI, kubectl), if one is pending for this rollout.
    fn take_request(&mut self, doc: &ArgoDoc, st: &State) -> Option<Action>;

    /// Writes `edits` (computed from `vs` as loaded) so that the managed `routes` carry
    /// `canary` / `100 - canary`; true if anything was written.
    fn write_weights(
        &mut self,
        vs: &VirtualService,
        r: &Rollout,
        edits: Vec<WeightEdit>,
        canary: u32,
    ) -> impl Future<Output = Result<bool, String>> + Send;

    /// Called once at the end of every tick: a backend that could not write something may
    /// try again here.
    fn flush(&mut self) -> impl Future<Output = ()> + Send {
        async {}
    }

    /// Where the documents come from, for messages (`/etc/switchyard`, `the API server`).
    fn place(&self) -> String;

    /// True when the proxy in this process reads the weights the moment they are written
    /// (the folder), so the controller reloads it; false when the proxies follow a watch.
    fn reload_after_write(&self) -> bool;
}

/// The config folder: the VirtualService file is edited in place, progress goes to a
/// dot-named state file, requests come from dot-named action files.
pub struct Folder {
    pub dir: PathBuf,
    pub namespace: String,
}

impl Backend for Folder {
    fn load(&mut self) -> Resources {
        crate::config::load(
            &self.dir,
            &LoadOptions {
                default_namespace: self.namespace.clone(),
            },
        )
    }

    fn state(&mut self, namespace: &str, name: &str) -> Option<State> {
        state::read(&self.dir, namespace, name)
    }

    async fn write_state(&mut self, st: &State) -> Result<(), String> {
        state::write(&self.dir, st).map_err(|e| {
            format!(
                "cannot write the rollout state in {}: {e}",
                self.dir.display()
            )
        })
    }

    fn take_request(&mut self, doc: &ArgoDoc, _st: &State) -> Option<Action> {
        state::take_request(&self.dir, &doc.namespace, &doc.name)
    }

    async fn write_weights(
        &mut self,
        vs: &VirtualService,
        _r: &Rollout,
        edits: Vec<WeightEdit>,
        _canary: u32,
    ) -> Result<bool, String> {
        let path = vs.source.file.to_path_buf();
        let text = std::fs::read_to_string(&path)
            .map_err(|e| format!("cannot read {}: {e}", path.display()))?;
        let new = vsedit::apply(&text, vs.source.line, &vs.source.text, &edits)
            .map_err(|e| format!("{}: {e}", path.display()))?;
        verify(&path, &new, vs, &edits)?;
        vsedit::write_atomically(&path, &new).map_err(|e| e.to_string())?;
        Ok(true)
    }

    fn place(&self) -> String {
        self.dir.display().to_string()
    }

    fn reload_after_write(&self) -> bool {
        true
    }
}

/// The edited file, parsed again, says exactly what was meant.
fn verify(
    path: &std::path::Path,
    text: &str,
    vs: &VirtualService,
    edits: &[WeightEdit],
) -> Result<(), String> {
    let res = crate::config::load_str(
        path,
        text,
        &LoadOptions {
            default_namespace: vs.namespace.clone(),
        },
    );
    let again = res
        .virtual_services
        .iter()
        .find(|v| v.meta.name == vs.meta.name && v.namespace == vs.namespace)
        .ok_or_else(|| {
            format!(
                "{}: the edit lost the VirtualService; not written",
                path.display()
            )
        })?;
    for e in edits {
        let w = again
            .spec
            .http
            .get(e.route)
            .and_then(|h| h.route.get(e.dest))
            .and_then(|d| d.weight)
            .map(|w| w.0);
        if w != Some(i64::from(e.weight)) {
            return Err(format!(
                "{}: the edit did not give spec.http[{}].route[{}] the weight {}; not written",
                path.display(),
                e.route,
                e.dest,
                e.weight
            ));
        }
    }
    Ok(())
}

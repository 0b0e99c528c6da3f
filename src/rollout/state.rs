//! A rollout's progress and the requests the CLI leaves for the controller, as dot-named
//! files in the config folder (the loader skips dot-entries, so a git-tracked Rollout file is
//! never rewritten), plus the lock that makes one controller the folder's only writer.

use std::fs::File;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use super::analysis::{MetricRun, Phase};

/// An analysis run's progress: inline for the current step, or in the background.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct RunState {
    pub templates: Vec<String>,
    pub started_ms: u64,
    pub phase: Option<Phase>,
    pub metrics: Vec<MetricRun>,
    pub message: String,
}

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct State {
    pub name: String,
    pub namespace: String,
    pub revision: u64,
    pub spec_hash: String,
    /// Index of the step being executed; `steps.len()` when all are done.
    pub step: usize,
    pub steps: usize,
    /// Healthy, Progressing, Paused, Degraded (Argo's phases).
    pub phase: String,
    pub message: String,
    /// The canary weight the steps ask for.
    pub set_weight: u32,
    /// Paused by the CLI (`pause`); `promote` clears it.
    pub paused: bool,
    pub pause_started_ms: Option<u64>,
    pub aborted: bool,
    pub step_analysis: Option<RunState>,
    pub background: Option<RunState>,
    /// The canary's observed share of the managed route's requests over the last 10 s, in
    /// percent (in-proxy), for `rollout get`'s ActualWeight.
    pub actual_weight: Option<f64>,
    /// The config version serving `set_weight` (in-proxy), for `rollout get`.
    pub served_version: Option<u64>,
    pub updated_ms: u64,
}

/// What the CLI asks of the controller.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Action {
    Promote,
    PromoteFull,
    Abort,
    Retry,
    Pause,
}

pub fn state_path(dir: &Path, namespace: &str, name: &str) -> PathBuf {
    dir.join(format!(".switchyard-rollout.{namespace}.{name}.json"))
}

pub fn action_path(dir: &Path, namespace: &str, name: &str) -> PathBuf {
    dir.join(format!(".switchyard-rollout.{namespace}.{name}.action"))
}

pub fn read(dir: &Path, namespace: &str, name: &str) -> Option<State> {
    let bytes = std::fs::read(state_path(dir, namespace, name)).ok()?;
    serde_json::from_slice(&bytes).ok()
}

pub fn write(dir: &Path, state: &State) -> std::io::Result<()> {
    let path = state_path(dir, &state.namespace, &state.name);
    let text = serde_json::to_string_pretty(state).map_err(std::io::Error::other)?;
    let tmp = path.with_extension("json.tmp");
    std::fs::write(&tmp, text)?;
    std::fs::rename(&tmp, &path)
}

/// Leaves a request for the controller (the CLI side).
pub fn request(dir: &Path, namespace: &str, name: &str, action: Action) -> std::io::Result<()> {
    let path = action_path(dir, namespace, name);
    let text = serde_json::to_string(&action).map_err(std::io::Error::other)?;
    let tmp = path.with_extension("action.tmp");
    std::fs::write(&tmp, text)?;
    std::fs::rename(&tmp, &path)
}

/// Takes the pending request, if any (the controller side).
pub fn take_request(dir: &Path, namespace: &str, name: &str) -> Option<Action> {
    let path = action_path(dir, namespace, name);
    let bytes = std::fs::read(&path).ok()?;
    let _ = std::fs::remove_file(&path);
    serde_json::from_slice(&bytes).ok()
}

/// Every rollout with a state file in `dir`: (namespace, name).
pub fn list(dir: &Path) -> Vec<State> {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return Vec::new();
    };
    let mut out: Vec<State> = entries
        .flatten()
        .filter_map(|e| {
            let name = e.file_name().to_string_lossy().into_owned();
            (name.starts_with(".switchyard-rollout.") && name.ends_with(".json"))
                .then(|| std::fs::read(e.path()).ok())
                .flatten()
                .and_then(|b| serde_json::from_slice(&b).ok())
        })
        .collect();
    out.sort_by(|a: &State, b: &State| (&a.namespace, &a.name).cmp(&(&b.namespace, &b.name)));
    out
}

#[derive(Debug, thiserror::Error)]
pub enum LockError {
    #[error(
        "{dir} is not writable ({source}): a rollout controller writes the VirtualService and its state there. In Kubernetes (a ConfigMap mount), let Argo Rollouts drive the VirtualService; switchyard follows it"
    )]
    ReadOnly { dir: String, source: std::io::Error },
    #[error(
        "another rollout controller (pid {holder}) already drives {dir}; only one may write a folder"
    )]
    Held { dir: String, holder: String },
}

/// The folder's writer lock, held for as long as this value lives.
pub struct FolderLock {
    _file: File,
}

pub fn lock(dir: &Path) -> Result<FolderLock, LockError> {
    let path = dir.join(".switchyard-rollouts.lock");
    let shown = dir.display().to_string();
    let file = std::fs::OpenOptions::new()
        .create(true)
        .truncate(false)
        .read(true)
        .write(true)
        .open(&path)
        .map_err(|source| LockError::ReadOnly {
            dir: shown.clone(),
            source,
        })?;
    match file.try_lock() {
        Ok(()) => {
            let _ = file.set_len(0);
            let _ =
                std::io::Write::write_all(&mut &file, std::process::id().to_string().as_bytes());
            Ok(FolderLock { _file: file })
        }
        Err(_) => Err(LockError::Held {
            dir: shown,
            holder: std::fs::read_to_string(&path)
                .unwrap_or_default()
                .trim()
                .to_string(),
        }),
    }
}

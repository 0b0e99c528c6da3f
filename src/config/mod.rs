//! Reads a YAML file or directory into typed Istio resources. Reading never fails as a whole:
//! every problem (unreadable file, bad YAML, unknown key) becomes a [`Diagnostic`], so a user
//! sees all of them at once and `run` can decide to refuse.

pub mod diagnostic;
pub mod duration;
pub mod istio;
pub mod kube;
pub mod locate;
pub mod registry;
pub mod scope;
pub mod validate;

use std::path::{Path, PathBuf};
use std::sync::Arc;

use serde::de::DeserializeOwned;
use sha2::{Digest, Sha256};

pub use diagnostic::{Diagnostic, Severity, codes};
use istio::{
    DestinationRuleSpec, ObjectMeta, ServiceEntrySpec, VirtualServiceSpec, WorkloadEntrySpec,
};
pub use scope::ProxyIdentity;

/// Where a resource came from, kept so diagnostics can name `file:line`.
#[derive(Debug, Clone)]
pub struct Source {
    pub file: Arc<Path>,
    /// 0-based index of the document in its file.
    pub doc: usize,
    /// 1-based line where the document starts.
    pub line: usize,
    /// The document's own text, for locating fields inside it.
    pub text: Arc<str>,
}

impl Source {
    /// The line of `field_path` in this document (or the nearest line found).
    pub fn line_of(&self, field_path: &str) -> usize {
        locate::locate(&self.text, self.line, field_path)
    }
}

/// A document kept as written, for a module that reads it its own way.
fn raw_doc(kind: String, value: yaml_serde::Value, source: Source, opts: &LoadOptions) -> ArgoDoc {
    let meta = |k: &str| {
        value
            .get("metadata")
            .and_then(|m| m.get(k))
            .and_then(|n| n.as_str())
            .map(str::to_string)
    };
    ArgoDoc {
        name: meta("name").unwrap_or_default(),
        namespace: meta("namespace").unwrap_or_else(|| opts.default_namespace.clone()),
        kind,
        value,
        source,
    }
}

/// One Argo Rollouts (or Istio EnvoyFilter) document as written, for `crate::rollout` (or
/// `crate::ratelimit`) to parse.
#[derive(Debug, Clone)]
pub struct ArgoDoc {
    pub kind: String,
    pub name: String,
    /// `metadata.namespace`, else the proxy's `--namespace`.
    pub namespace: String,
    pub value: yaml_serde::Value,
    pub source: Source,
}

#[derive(Debug, Clone)]
pub struct Resource<S> {
    pub kind: &'static str,
    pub api_version: String,
    pub meta: ObjectMeta,
    /// `metadata.namespace`, else the proxy's `--namespace`.
    pub namespace: String,
    pub spec: S,
    pub source: Source,
    /// Position in load order across all kinds ("first loaded wins" compares these).
    pub order: usize,
}

impl<S> Resource<S> {
    /// `Kind/namespace/name`, as diagnostics print it.
    pub fn id(&self) -> String {
        format!("{}/{}/{}", self.kind, self.namespace, self.meta.name)
    }

    pub fn diag(
        &self,
        severity: Severity,
        code: &'static str,
        field_path: impl Into<String>,
        message: impl Into<String>,
    ) -> Diagnostic {
        let field_path = field_path.into();
        Diagnostic {
            severity,
            code,
            file: self.source.file.to_path_buf(),
            line: self.source.line_of(&field_path),
            resource: self.id(),
            field_path,
            message: message.into(),
        }
    }
}

pub type VirtualService = Resource<VirtualServiceSpec>;
pub type DestinationRule = Resource<DestinationRuleSpec>;
pub type ServiceEntry = Resource<ServiceEntrySpec>;
pub type WorkloadEntry = Resource<WorkloadEntrySpec>;

/// Everything read from a config path, in load order (sorted file path, then document order).
#[derive(Debug, Clone, Default)]
pub struct Resources {
    pub virtual_services: Vec<VirtualService>,
    pub destination_rules: Vec<DestinationRule>,
    pub service_entries: Vec<ServiceEntry>,
    pub workload_entries: Vec<WorkloadEntry>,
    /// Kubernetes `Service`s, as the ServiceEntries istiod derives from them (kind `Service`).
    /// Only `validate` looks hosts up among them; see [`kube`].
    pub kube_services: Vec<ServiceEntry>,
    /// Pod labels of the Pods and workload templates in the files.
    pub workloads: Vec<kube::KubeWorkload>,
    /// Argo Rollouts documents (`Rollout`, `AnalysisTemplate`, `ClusterAnalysisTemplate`),
    /// read by the rollout controller (`crate::rollout`); the routing table never looks at them.
    pub argo: Vec<ArgoDoc>,
    /// `EnvoyFilter`s as written; `crate::ratelimit` acts on the local rate-limit patches.
    pub envoy_filters: Vec<ArgoDoc>,
    /// Problems found while reading (the validator adds its own).
    pub diagnostics: Vec<Diagnostic>,
    /// The files read, in order.
    pub files: Vec<PathBuf>,
    /// SHA-256 over every file's path and bytes: equal hashes mean nothing changed.
    pub content_hash: String,
}

impl Resources {
    /// Position in load order of the next resource read, across all kinds.
    pub fn order_of_next(&self) -> usize {
        self.virtual_services.len()
            + self.destination_rules.len()
            + self.service_entries.len()
            + self.workload_entries.len()
            + self.kube_services.len()
            + self.workloads.len()
    }
}

#[derive(Debug, Clone)]
pub struct LoadOptions {
    /// Namespace for resources that do not name one (`--namespace`).
    pub default_namespace: String,
}

impl Default for LoadOptions {
    fn default() -> Self {
        LoadOptions {
            default_namespace: "default".to_string(),
        }
    }
}

/// Istio's API group; the three served versions share one schema.
const ISTIO_API_VERSIONS: [&str; 3] = [
    "networking.istio.io/v1",
    "networking.istio.io/v1beta1",
    "networking.istio.io/v1alpha3",
];

/// The bytes of a config path's files, read but not yet parsed, and their hash.
#[derive(Debug)]
pub struct Sources {
    /// The path given (`--config`).
    root: PathBuf,
    files: Vec<(PathBuf, std::io::Result<Vec<u8>>)>,
    diagnostics: Vec<Diagnostic>,
    /// SHA-256 over every file's path and bytes, as [`Resources::content_hash`].
    pub content_hash: String,
}

/// Reads `path` (a file, or a directory read recursively).
pub fn load(path: &Path, opts: &LoadOptions) -> Resources {
    parse_sources(read_sources(path), opts)
}

/// Reads the files of `path` (a file, or a directory read recursively) and hashes them,
/// without parsing: enough to tell whether anything changed.
pub fn read_sources(path: &Path) -> Sources {
    let mut diagnostics = Vec::new();
    let mut paths = Vec::new();
    match std::fs::metadata(path) {
        Ok(meta) if meta.is_dir() => collect_dir(path, true, &mut paths, &mut diagnostics),
        Ok(_) => paths.push(path.to_path_buf()),
        Err(e) => diagnostics.push(file_diag(path, 0, format!("cannot read: {e}"))),
    }
    paths.sort();
    let mut hasher = Sha256::new();
    let files = paths
        .into_iter()
        .map(|file| {
            let bytes = std::fs::read(&file);
            if let Ok(bytes) = &bytes {
                hasher.update(file.as_os_str().as_encoded_bytes());
                hasher.update([0]);
                hasher.update((bytes.len() as u64).to_le_bytes());
                hasher.update(bytes);
            }
            (file, bytes)
        })
        .collect();
    Sources {
        root: path.to_path_buf(),
        files,
        diagnostics,
        content_hash: hex(&hasher.finalize()),
    }
}

/// Parses what [`read_sources`] read.
pub fn parse_sources(src: Sources, opts: &LoadOptions) -> Resources {
    let mut res = Resources {
        diagnostics: src.diagnostics,
        content_hash: src.content_hash,
        ..Resources::default()
    };
    for (file, bytes) in src.files {
        match bytes.map(String::from_utf8) {
            Ok(Ok(text)) => load_file(&file, &text, opts, &mut res),
            Ok(Err(e)) => res.diagnostics.push(file_diag(
                &file,
                0,
                format!("not valid UTF-8 (byte {})", e.utf8_error().valid_up_to()),
            )),
            Err(e) => res
                .diagnostics
                .push(file_diag(&file, 0, format!("cannot read: {e}"))),
        }
        res.files.push(file);
    }
    if let Some(d) = nothing_routable(&src.root, &res) {
        res.diagnostics.push(d);
    }
    res
}

/// `SY0005`: a config with no VirtualService and no ServiceEntry routes nothing: every
/// request would be answered 502 (BlackHole) or 404. Said at start and on every reload, with
/// what was read, since the usual cause is a wrong path or a file extension we skip.
fn nothing_routable(root: &Path, res: &Resources) -> Option<Diagnostic> {
    // A file that did not parse already says why nothing is routable.
    if !res.virtual_services.is_empty()
        || !res.service_entries.is_empty()
        || res.diagnostics.iter().any(Diagnostic::is_error)
    {
        return None;
    }
    let read = res.files.len();
    let skipped = res
        .diagnostics
        .iter()
        .filter(|d| d.code == codes::SKIPPED_KIND)
        .count();
    Some(Diagnostic {
        severity: Severity::Warning,
        code: codes::NOTHING_ROUTABLE,
        file: root.to_path_buf(),
        line: 0,
        resource: String::new(),
        field_path: String::new(),
        message: format!(
            "nothing routable: no VirtualService or ServiceEntry in {read} file(s) read \
             ({skipped} resource(s) of other kinds skipped{}); only *.yaml and *.yml files are \
             read, so every request will be refused (502 for an unknown host)",
            match res.kube_services.len() {
                0 => String::new(),
                n => format!(
                    ", {n} Kubernetes Service(s) read, whose endpoints `run` needs as \
                     ServiceEntries"
                ),
            }
        ),
    })
}

/// Reads YAML text as if it were the file `name` (tests, and the `validate -` case).
pub fn load_str(name: &Path, text: &str, opts: &LoadOptions) -> Resources {
    let mut res = Resources::default();
    load_file(name, text, opts, &mut res);
    res.files.push(name.to_path_buf());
    let mut hasher = Sha256::new();
    hasher.update(text.as_bytes());
    res.content_hash = hex(&hasher.finalize());
    res
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

fn file_diag(file: &Path, line: usize, message: String) -> Diagnostic {
    Diagnostic {
        severity: Severity::Error,
        code: codes::PARSE_ERROR,
        file: file.to_path_buf(),
        line,
        resource: String::new(),
        field_path: String::new(),
        message,
    }
}

/// Dot-entries are skipped everywhere: a ConfigMap mount keeps its real files in `..2026_…`
/// folders reached through `..data`, and the top-level symlinks are the names that count.
/// Directory symlinks are followed only at the top level, so a link loop cannot trap us.
fn collect_dir(dir: &Path, top: bool, files: &mut Vec<PathBuf>, diags: &mut Vec<Diagnostic>) {
    let entries = match std::fs::read_dir(dir) {
        Ok(e) => e,
        Err(e) => {
            diags.push(file_diag(dir, 0, format!("cannot read directory: {e}")));
            return;
        }
    };
    for entry in entries.flatten() {
        let name = entry.file_name();
        if name.to_string_lossy().starts_with('.') {
            continue;
        }
        let path = entry.path();
        let is_link = entry.file_type().map(|t| t.is_symlink()).unwrap_or(false);
        let meta = match std::fs::metadata(&path) {
            Ok(m) => m,
            Err(e) => {
                if has_yaml_ext(&path) {
                    diags.push(file_diag(&path, 0, format!("cannot read: {e}")));
                }
                continue;
            }
        };
        if meta.is_dir() {
            if !is_link || top {
                collect_dir(&path, false, files, diags);
            }
        } else if has_yaml_ext(&path) {
            files.push(path);
        }
    }
}

fn has_yaml_ext(path: &Path) -> bool {
    matches!(
        path.extension().and_then(|e| e.to_str()),
        Some("yaml" | "yml")
    )
}

/// Splits a file into documents at `---` lines, remembering where each starts. The YAML
/// library can iterate documents too, but it does not say on which line each begins.
fn split_documents(text: &str) -> Vec<(usize, &str)> {
    let mut docs = Vec::new();
    let mut start_byte = 0;
    let mut start_line = 1;
    let mut offset = 0;
    for (i, line) in text.split_inclusive('\n').enumerate() {
        let bare = line.trim_end_matches(['\n', '\r']);
        let is_marker = bare == "---"
            || bare.starts_with("--- ")
            || bare.starts_with("---\t")
            || bare == "..."
            || bare.starts_with("... ");
        if is_marker {
            docs.push((start_line, &text[start_byte..offset]));
            // Content after `--- ` on the marker line belongs to the next document.
            let after = 3.min(line.len());
            start_byte = offset + after;
            start_line = i + 1;
        }
        offset += line.len();
    }
    docs.push((start_line, &text[start_byte..]));
    docs.retain(|(_, d)| {
        d.lines()
            .any(|l| !l.trim().is_empty() && !l.trim_start().starts_with('#'))
    });
    docs
}

fn load_file(file: &Path, text: &str, opts: &LoadOptions, res: &mut Resources) {
    let file: Arc<Path> = Arc::from(file);
    for (doc_index, (line, doc_text)) in split_documents(text).into_iter().enumerate() {
        let value: yaml_serde::Value = match yaml_serde::from_str(doc_text) {
            Ok(v) => v,
            Err(e) => {
                let at = e
                    .location()
                    .map_or(line, |l| line + l.line().saturating_sub(1));
                res.diagnostics.push(file_diag(
                    &file,
                    at,
                    format!("invalid YAML: {}", strip_location(&e)),
                ));
                continue;
            }
        };
        let source = Source {
            file: file.clone(),
            doc: doc_index,
            line,
            text: Arc::from(doc_text),
        };
        load_document(value, source, opts, res);
    }
}

/// yaml_serde appends "at line X column Y" relative to the document; we print our own line.
fn strip_location(e: &yaml_serde::Error) -> String {
    let msg = e.to_string();
    match msg.find(" at line ") {
        Some(i) => msg[..i].to_string(),
        None => msg,
    }
}

/// Reads one object that did not come from a file (an API server's), exactly as a document of
/// a file is read; `source` names where it came from in diagnostics.
pub fn load_object(
    value: yaml_serde::Value,
    source: Source,
    opts: &LoadOptions,
    res: &mut Resources,
) {
    load_document(value, source, opts, res);
}

fn load_document(
    value: yaml_serde::Value,
    source: Source,
    opts: &LoadOptions,
    res: &mut Resources,
) {
    let (api_version, kind) = match &value {
        yaml_serde::Value::Mapping(m) => (
            m.get("apiVersion")
                .and_then(|v| v.as_str())
                .unwrap_or("")
                .to_string(),
            m.get("kind")
                .and_then(|v| v.as_str())
                .unwrap_or("")
                .to_string(),
        ),
        yaml_serde::Value::Null => return,
        _ => {
            res.diagnostics.push(file_diag(
                &source.file,
                source.line,
                "a document must be a mapping with apiVersion and kind".to_string(),
            ));
            return;
        }
    };
    if let Some(kind) = kube::kind_of(&api_version, &kind) {
        kube::read(
            kind,
            api_version,
            value,
            source,
            &opts.default_namespace,
            res,
        );
        return;
    }
    if api_version.starts_with("argoproj.io/")
        && matches!(
            kind.as_str(),
            "Rollout" | "AnalysisTemplate" | "ClusterAnalysisTemplate"
        )
    {
        res.argo.push(raw_doc(kind, value, source, opts));
        return;
    }
    let istio = ISTIO_API_VERSIONS.contains(&api_version.as_str());
    if istio && kind == "EnvoyFilter" {
        res.envoy_filters.push(raw_doc(kind, value, source, opts));
        return;
    }
    let kind: &'static str = match (istio, kind.as_str()) {
        (true, "VirtualService") => "VirtualService",
        (true, "DestinationRule") => "DestinationRule",
        (true, "ServiceEntry") => "ServiceEntry",
        (true, "WorkloadEntry") => "WorkloadEntry",
        _ => {
            let shown = if kind.is_empty() {
                "(no kind)"
            } else {
                kind.as_str()
            };
            let name = value
                .get("metadata")
                .and_then(|m| m.get("name"))
                .and_then(|n| n.as_str())
                .unwrap_or("");
            res.diagnostics.push(Diagnostic {
                severity: Severity::Info,
                code: codes::SKIPPED_KIND,
                file: source.file.to_path_buf(),
                line: source.line_of("kind"),
                resource: format!("{shown}/{name}"),
                field_path: String::new(),
                message: format!(
                    "skipped: {shown} ({}) is not one of the resources switchyard reads",
                    if api_version.is_empty() {
                        "no apiVersion"
                    } else {
                        &api_version
                    }
                ),
            });
            return;
        }
    };
    let order = res.order_of_next();
    let ctx = DocCtx {
        kind,
        api_version,
        source,
        opts,
        order,
    };
    match kind {
        "VirtualService" => {
            if let Some(r) = ctx.parse(value, &mut res.diagnostics) {
                res.virtual_services.push(r);
            }
        }
        "DestinationRule" => {
            if let Some(r) = ctx.parse(value, &mut res.diagnostics) {
                res.destination_rules.push(r);
            }
        }
        "ServiceEntry" => {
            if let Some(r) = ctx.parse(value, &mut res.diagnostics) {
                res.service_entries.push(r);
            }
        }
        _ => {
            if let Some(r) = ctx.parse(value, &mut res.diagnostics) {
                res.workload_entries.push(r);
            }
        }
    }
}

struct DocCtx<'a> {
    kind: &'static str,
    api_version: String,
    source: Source,
    opts: &'a LoadOptions,
    order: usize,
}

#[derive(serde::Deserialize)]
struct Envelope<S> {
    #[serde(rename = "apiVersion")]
    _api_version: String,
    #[serde(rename = "kind")]
    _kind: String,
    #[serde(default)]
    metadata: ObjectMeta,
    #[serde(default)]
    spec: Option<S>,
    /// `kubectl get -o yaml` output carries a status; it is not configuration.
    #[serde(default, rename = "status")]
    _status: Option<yaml_serde::Value>,
}

impl DocCtx<'_> {
    fn parse<S: DeserializeOwned + Default>(
        self,
        value: yaml_serde::Value,
        diags: &mut Vec<Diagnostic>,
    ) -> Option<Resource<S>> {
        let name = value
            .get("metadata")
            .and_then(|m| m.get("name"))
            .and_then(|n| n.as_str())
            .unwrap_or("")
            .to_string();
        let ns = value
            .get("metadata")
            .and_then(|m| m.get("namespace"))
            .and_then(|n| n.as_str())
            .map(str::to_string)
            .unwrap_or_else(|| self.opts.default_namespace.clone());
        let resource_id = format!("{}/{}/{}", self.kind, ns, name);
        let mut unknown = Vec::new();
        let parsed: Result<Envelope<S>, _> =
            serde_ignored::deserialize(value, |path| unknown.push(render_path(&path)));
        let env = match parsed {
            Ok(env) => env,
            Err(e) => {
                diags.push(Diagnostic {
                    severity: Severity::Error,
                    code: codes::SCHEMA_VALIDATION_ERROR,
                    file: self.source.file.to_path_buf(),
                    line: self.source.line_of(""),
                    resource: resource_id,
                    field_path: String::new(),
                    message: format!("cannot decode: {e}"),
                });
                return None;
            }
        };
        let resource = Resource {
            kind: self.kind,
            api_version: self.api_version,
            namespace: env.metadata.namespace.clone().unwrap_or(ns),
            meta: env.metadata,
            spec: env.spec.unwrap_or_default(),
            source: self.source,
            order: self.order,
        };
        for path in unknown {
            // Istio's CRD schema would reject an unknown key; ignoring one could silently widen a
            // match (a misspelt `headers` matches everything), so it is an error, not a warning.
            let msg = format!(
                "unknown field \"{}\"",
                path.rsplit('.').next().unwrap_or(&path)
            );
            diags.push(resource.diag(Severity::Error, codes::SCHEMA_VALIDATION_ERROR, path, msg));
        }
        if resource.meta.name.is_empty() {
            diags.push(resource.diag(
                Severity::Error,
                codes::SCHEMA_VALIDATION_ERROR,
                "metadata.name",
                "metadata.name is required",
            ));
        }
        Some(resource)
    }
}

/// `spec.http[0].match[1].headers.x-user` from serde_ignored's path.
fn render_path(path: &serde_ignored::Path) -> String {
    use serde_ignored::Path as P;
    match path {
        P::Root => String::new(),
        P::Seq { parent, index } => format!("{}[{index}]", render_path(parent)),
        P::Map { parent, key } => {
            let p = render_path(parent);
            if p.is_empty() {
                key.clone()
            } else {
                format!("{p}.{key}")
            }
        }
        P::Some { parent } | P::NewtypeStruct { parent } | P::NewtypeVariant { parent } => {
            render_path(parent)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The watcher compares the hash of files it read without parsing them against the hash
    /// of the config it last parsed: the two must agree on the same bytes, and differ on any
    /// changed byte, unreadable or not (the poll parses only when they differ).
    #[test]
    fn unparsed_sources_hash_as_the_parsed_config_does() {
        let dir = tempfile::tempdir().expect("tempdir");
        let good = "apiVersion: networking.istio.io/v1\nkind: VirtualService\nmetadata: {name: a}\nspec: {hosts: [a]}\n";
        std::fs::write(dir.path().join("a.yaml"), good).expect("write");
        std::fs::write(dir.path().join("b.yaml"), b"kind: [\xff\n").expect("write");
        let opts = LoadOptions::default();
        let parsed = load(dir.path(), &opts);
        let read = read_sources(dir.path());
        assert_eq!(read.content_hash, parsed.content_hash);
        assert_eq!(parse_sources(read, &opts).content_hash, parsed.content_hash);
        assert_eq!(parsed.virtual_services.len(), 1);
        assert!(
            parsed
                .diagnostics
                .iter()
                .any(|d| d.message.contains("UTF-8"))
        );

        std::fs::write(dir.path().join("b.yaml"), b"kind: [\xfe\n").expect("write");
        let edited = read_sources(dir.path());
        assert_ne!(edited.content_hash, parsed.content_hash);
        assert_eq!(edited.content_hash, load(dir.path(), &opts).content_hash);
    }

    #[test]
    fn splits_documents_with_start_lines() {
        let text = "a: 1\n---\nb: 2\n---\n# only a comment\n---\nc: 3\n";
        let docs = split_documents(text);
        assert_eq!(docs.len(), 3);
        assert_eq!(docs[0], (1, "a: 1\n"));
        // A document starts on its marker line: what follows `---` there belongs to it.
        assert_eq!(docs[1].0, 2);
        assert_eq!(docs[2], (6, "\nc: 3\n"));
    }

    #[test]
    fn reports_unknown_fields_with_lines() {
        let yaml = "apiVersion: networking.istio.io/v1\nkind: VirtualService\nmetadata:\n  name: a\nspec:\n  hosts: [a]\n  http:\n  - match:\n    - hedaers:\n        x: {exact: y}\n    route:\n    - destination: {host: a}\n";
        let res = load_str(Path::new("t.yaml"), yaml, &LoadOptions::default());
        assert_eq!(res.virtual_services.len(), 1);
        let d = &res.diagnostics[0];
        assert_eq!(d.field_path, "spec.http[0].match[0].hedaers");
        assert_eq!(d.line, 9);
        assert_eq!(
            d.to_string(),
            "t.yaml:9: Error IST0106 VirtualService/default/a: spec.http[0].match[0].hedaers: unknown field \"hedaers\""
        );
    }

    #[test]
    fn skips_other_kinds_with_a_notice_and_reports_bad_yaml() {
        let yaml = "apiVersion: v1\nkind: ConfigMap\nmetadata: {name: web}\n---\nkey: [unclosed\n";
        let res = load_str(Path::new("m.yaml"), yaml, &LoadOptions::default());
        assert_eq!(res.diagnostics.len(), 2, "{:?}", res.diagnostics);
        assert_eq!(res.diagnostics[0].severity, Severity::Info);
        assert!(res.diagnostics[0].message.contains("ConfigMap"));
        assert_eq!(res.diagnostics[1].severity, Severity::Error);
        assert!(res.diagnostics[1].line >= 5, "{}", res.diagnostics[1]);
    }
}

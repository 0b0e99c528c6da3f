//! YAML text to a served route table, the way `run` and every reload do it: load, validate in
//! serve mode, compile. Shared by the fuzz targets and the corpus replay test.

use std::path::Path;
use std::sync::Arc;

use switchyard::config::validate::{Mode, ValidateOptions, validate};
use switchyard::config::{Diagnostic, LoadOptions, ProxyIdentity, Resources, load_str};
use switchyard::metrics::Registry as Metrics;
use switchyard::route::RouteTable;
use switchyard::route::compile::{CompileOptions, OutboundPolicy, compile};
use switchyard::upstream::PoolRegistry;

/// The loader's findings followed by the validator's.
pub fn load_and_validate(name: &str, text: &str) -> (Resources, Vec<Diagnostic>) {
    let res = load_str(Path::new(name), text, &LoadOptions::default());
    let mut diags = res.diagnostics.clone();
    diags.extend(validate(
        &res,
        &ValidateOptions {
            identity: &ProxyIdentity::default(),
            mode: Mode::Serve,
            istio_mutual_as_plaintext: false,
        },
    ));
    (res, diags)
}

/// Compiles resources the validator served. Validation promises `compile` never meets an error
/// it let through, so a failure here is a bug (and panics, for the fuzzer to report).
pub fn compile_served(
    res: &Resources,
    pools: &Arc<PoolRegistry>,
    metrics: &Arc<Metrics>,
) -> RouteTable {
    let compiled = compile(
        res,
        &CompileOptions {
            identity: &ProxyIdentity::default(),
            outbound_policy: OutboundPolicy::RegistryOnly,
            pools,
            metrics,
            version: 1,
        },
    );
    compiled.unwrap_or_else(|e| panic!("validation served a config that does not compile: {e}"))
}

/// The table for `yaml`, or the errors that make the validator refuse it.
pub fn served(
    yaml: &str,
    pools: &Arc<PoolRegistry>,
    metrics: &Arc<Metrics>,
) -> Result<RouteTable, Vec<Diagnostic>> {
    let (res, diags) = load_and_validate("fuzz.yaml", yaml);
    let errors: Vec<Diagnostic> = diags.into_iter().filter(|d| d.is_error()).collect();
    if errors.is_empty() {
        Ok(compile_served(&res, pools, metrics))
    } else {
        Err(errors)
    }
}

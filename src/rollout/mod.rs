//! Automated canary rollouts from Argo Rollouts' own documents: a `Rollout` and its
//! `AnalysisTemplate`s sit in the config folder beside the VirtualService they manage, and a
//! controller moves that VirtualService's weights step by step, gated by analysis, with
//! instant abort. The folder is the API server: weights are written into the VirtualService
//! file (every proxy watching the folder follows), progress into a dot-named state file, and
//! the CLI's requests into dot-named action files. The proxy's routing never learns about
//! rollouts: it just reloads.

pub mod analysis;
pub mod backend;
pub mod cli;
pub mod controller;
pub mod expr;
pub mod kubernetes;
pub mod provider;
pub mod spec;
pub mod state;
pub mod vsedit;

pub use controller::Controller;

//! Build metadata for `switchyard --version`: the git commit and the cargo profile.
//! `SWITCHYARD_BUILD_COMMIT` overrides the commit where there is no git checkout (an image
//! build from a copied source tree).

use std::process::Command;

fn git(args: &[&str]) -> Option<String> {
    let out = Command::new("git").args(args).output().ok()?;
    out.status
        .success()
        .then(|| String::from_utf8_lossy(&out.stdout).trim().to_string())
        .filter(|s| !s.is_empty())
}

fn main() {
    println!("cargo:rerun-if-env-changed=SWITCHYARD_BUILD_COMMIT");
    let commit = std::env::var("SWITCHYARD_BUILD_COMMIT")
        .ok()
        .filter(|c| !c.is_empty())
        .or_else(|| git(&["rev-parse", "--short=12", "HEAD"]))
        .unwrap_or_else(|| "unknown".to_string());
    // A new commit moves HEAD or the branch it names (loose or packed).
    // Only paths that exist: a missing one would rerun this script on every build.
    let mut watched = vec!["HEAD".to_string(), "packed-refs".to_string()];
    watched.extend(git(&["symbolic-ref", "-q", "HEAD"]));
    for path in watched {
        if let Some(p) = git(&["rev-parse", "--git-path", &path])
            && std::path::Path::new(&p).exists()
        {
            println!("cargo:rerun-if-changed={p}");
        }
    }
    let profile = std::env::var("PROFILE").unwrap_or_else(|_| "unknown".to_string());
    println!("cargo:rustc-env=SWITCHYARD_COMMIT={commit}");
    println!("cargo:rustc-env=SWITCHYARD_PROFILE={profile}");
}

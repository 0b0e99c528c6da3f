//! Config sources other than the folder `crate::watch` follows. Each produces the same
//! `Resources` the file loader does and hands them to the one validate → compile → swap path
//! in `crate::reload`.

pub mod kubernetes;

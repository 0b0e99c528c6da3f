//! Fuzz logic for switchyard, kept out of the target files so the committed corpora and
//! crashers can be replayed by plain integration tests (`tests/fuzz_regressions.rs` includes
//! `config_load.rs` and `front_door.rs` by path).

pub mod config_load;
pub mod front_door;
pub mod route;
pub mod table;
